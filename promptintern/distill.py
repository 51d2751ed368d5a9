"""Context distillation: the query-only form learns the answer distribution the full prompt gives.

Snell, Klein and Zhong (2022), "Learning by Distilling Context": a teacher sees the full prompt
(template + shots + query), the student only the query; on the answer tokens the student matches
the teacher's next-token distribution at a temperature, besides the usual cross-entropy on the
reference answer (``train.distill``):

    loss = CE(student, reference) + weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The teacher (``train.distill.teacher``) is the untuned model with the full prompt (``base``), the
adapter after stage 1 (``stage1``), or a model fine-tuned on the full prompt for the run's budget
(``full-prompt-ft``, the ``direct-template-kshot`` model). Its logits do not change while the student
trains, so they are computed once per (teacher, rows) as an artifact (the ``teacher-logits`` box,
``promptintern.teacher``):
for every training row, at every answer token (EOS included), the teacher's top ``top_k`` logits and
their token ids. The KL runs over those k tokens (the teacher's distribution renormalized over its
top k, the student's full-vocabulary log-probabilities read at them): the mass outside the top k,
under 1e-3 for k = 64 on SmolLM2's NL2Bash answers, is left out.

Rows are matched by id and answer tokens position by position: prompt and answer are tokenized
separately (``promptintern.train.encode_row``), so a row's answer tokens are the same in every
prompt form.

    teacher.npz   offsets int64 [rows + 1], indices int32 [tokens, k], logits float32 [tokens, k]
    ids.json      the row ids, in the order of ``offsets``
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def distill_loss(student_logits: torch.Tensor, teacher_indices: torch.Tensor, teacher_logits: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """Mean over positions of T^2 * KL(p_T || q_T) on the teacher's top k tokens.

    ``student_logits`` [n, vocab]; ``teacher_indices`` / ``teacher_logits`` [n, k]. p_T is the
    softmax of the teacher's k logits / T, q_T the student's log-softmax over the whole vocabulary
    at T, read at the same k tokens."""
    t = float(temperature)
    p_log = torch.log_softmax(teacher_logits.float() / t, dim=-1)
    q_log = torch.log_softmax(student_logits.float() / t, dim=-1).gather(-1, teacher_indices.long())
    kl = (p_log.exp() * (p_log - q_log)).sum(-1)
    return kl.mean() * t * t


class TeacherLogits:
    """The teacher-logits artifact, read: ``get(row_id)`` -> (indices [n, k], logits [n, k])."""

    def __init__(self, folder: Path):
        data = np.load(folder / "teacher.npz")
        self.offsets, self.indices, self.logits = data["offsets"], data["indices"], data["logits"]
        self.ids = {row_id: i for i, row_id in enumerate(json.loads((folder / "ids.json").read_text()))}

    def get(self, row_id: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        i = self.ids.get(row_id)
        if i is None:
            return None
        a, b = self.offsets[i], self.offsets[i + 1]
        return torch.from_numpy(self.indices[a:b]), torch.from_numpy(self.logits[a:b])
