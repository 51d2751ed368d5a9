"""Context distillation: the query-only form learns the answer distribution the full prompt gives.

Snell, Klein and Zhong (2022), "Learning by Distilling Context": a teacher sees the full prompt
(template + shots + query), the student only the query; on the answer tokens the student matches
the teacher's next-token distribution at a temperature, besides the usual cross-entropy on the
reference answer (``train.distill``):

    loss = CE(student, reference) + weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The teacher (``train.distill.teacher``) is the untuned model with the full prompt (``base``), the
adapter after stage 1 (``stage1``), or a model fine-tuned on the full prompt for the run's budget
(``full-prompt-ft``, the ``direct-template-kshot`` model). Its logits do not change while the student
trains, so they are computed once per (teacher, rows, T) as an artifact (the ``teacher-logits`` box,
``promptintern.teacher``): for every training row, at every answer token (EOS included), the
teacher's top ``top_k`` logits with their token ids, and the log of its softmax normalizer at T.
The KL is taken over the teacher's top k tokens plus one bucket holding the rest of the vocabulary
(exact probabilities on both sides): a top-k-only KL would drop too much, since the untuned
SmolLM2-135M leaves 5.7% of its mass outside its top 64 tokens at T = 1 and 69% at T = 2 (16
NL2Bash rows with the full prompt, 280 answer positions).

Rows are matched by id and answer tokens position by position: prompt and answer are tokenized
separately (``promptintern.train.encode_row``), so a row's answer tokens are the same in every
prompt form.

    teacher.npz   offsets int64 [rows + 1], indices int32 [tokens, k], logits float32 [tokens, k],
                  logz float32 [tokens] (logsumexp of all logits / T), temperature float32 []
    ids.json      the row ids, in the order of ``offsets``
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def distill_loss(student_logits: torch.Tensor, teacher_indices: torch.Tensor, teacher_logits: torch.Tensor,
                 teacher_logz: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over positions of T^2 * KL(p_T || q_T) over the teacher's top k tokens and one bucket for
    the rest of the vocabulary.

    ``student_logits`` [n, vocab]; ``teacher_indices`` / ``teacher_logits`` [n, k]; ``teacher_logz``
    [n]: logsumexp of all the teacher's logits / T, so p_T(i) = exp(z_i / T - logz) exactly and the
    rest bucket holds 1 - sum(p_T(top k)); q_T is the student's softmax at T read the same way."""
    t = float(temperature)
    p_log = teacher_logits.float() / t - teacher_logz.float().unsqueeze(-1)
    q_log = torch.log_softmax(student_logits.float() / t, dim=-1).gather(-1, teacher_indices.long())
    p_rest = _log_rest(p_log)
    q_rest = _log_rest(q_log)
    kl = (p_log.exp() * (p_log - q_log)).sum(-1) + p_rest.exp() * (p_rest - q_rest)
    return kl.mean() * t * t


def _log_rest(top_log: torch.Tensor) -> torch.Tensor:
    """log(1 - sum of the top-k probabilities), kept finite when they hold (nearly) all the mass."""
    covered = torch.logsumexp(top_log, dim=-1).clamp(max=-1e-7)
    return torch.log(-torch.expm1(covered))


class TeacherLogits:
    """The teacher-logits artifact, read: ``get(row_id)`` for one row's answer tokens."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        data = np.load(folder / "teacher.npz")
        self.offsets, self.indices, self.logits = data["offsets"], data["indices"], data["logits"]
        self.logz, self.temperature = data["logz"], float(data["temperature"])
        self.ids = {row_id: i for i, row_id in enumerate(json.loads((folder / "ids.json").read_text()))}

    def get(self, row_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(indices [n, k], logits [n, k], logz [n]) of the row's n answer tokens; None if unknown."""
        i = self.ids.get(row_id)
        if i is None:
            return None
        a, b = self.offsets[i], self.offsets[i + 1]
        return (torch.from_numpy(self.indices[a:b]), torch.from_numpy(self.logits[a:b]),
                torch.from_numpy(self.logz[a:b]))
