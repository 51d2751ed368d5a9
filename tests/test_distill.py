"""Context distillation: the loss, the teacher-logits box and the wiring into stage training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from promptintern.config import LoraSettings, TrainSettings
from promptintern.datasets import Example, get_task
from promptintern.distill import TeacherLogits, distill_loss
from promptintern.models import load_tokenizer
from promptintern.schedule import StageSpec
from promptintern.shards import write_shard

LORA = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))
FORMAT = get_task("nl2bash").format


def test_the_distillation_loss_is_the_kl_computed_by_hand():
    """Two positions, a vocabulary of 4, the teacher's top 2 tokens and a bucket for the other 2, T = 2."""
    student = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, 0.5, 3.0, 0.0]])
    teacher_full = torch.tensor([[1.0, 3.0, 0.5, -2.0], [-1.0, 0.2, 2.0, 0.0]])
    t = 2.0
    top = teacher_full.topk(2, dim=-1)
    logz = torch.logsumexp(teacher_full / t, dim=-1)
    expected = 0.0
    for pos in range(2):
        p_all = [math.exp(v / t) for v in teacher_full[pos].tolist()]
        q_all = [math.exp(v / t) for v in student[pos].tolist()]
        p_all, q_all = [v / sum(p_all) for v in p_all], [v / sum(q_all) for v in q_all]
        kept = top.indices[pos].tolist()
        rest = [j for j in range(4) if j not in kept]
        p = [p_all[j] for j in kept] + [sum(p_all[j] for j in rest)]
        q = [q_all[j] for j in kept] + [sum(q_all[j] for j in rest)]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = expected / 2 * t * t
    got = distill_loss(student, top.indices, top.values, logz, t).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # with every token kept it is torch's KL divergence of the softened distributions (the bucket is empty)
    full = torch.arange(4).expand(2, 4)
    kl = torch.nn.functional.kl_div(torch.log_softmax(student / t, -1), torch.log_softmax(teacher_full / t, -1),
                                    reduction="batchmean", log_target=True) * t * t
    assert distill_loss(student, full, teacher_full, logz, t).item() == pytest.approx(kl.item(), rel=1e-4)
    assert distill_loss(teacher_full, top.indices, top.values, logz, t).item() == pytest.approx(0.0, abs=1e-6)


def _shards(tmp_path, tok):
    rows = [Example(id=f"r{i}", query=f"list files in dir {i}", target=f"ls -la d{i}") for i in range(6)]
    full, query = tmp_path / "full.parquet", tmp_path / "query.parquet"
    write_shard(full, rows, rows, None, StageSpec(stage=1, tau=1.0, k=0), "Translate to bash.", FORMAT, tok)
    write_shard(query, rows, rows, None, StageSpec(stage=2, tau=0.0, k=0), "", FORMAT, tok)
    return rows, full, query


def test_teacher_logits_cover_every_answer_token_of_every_row(tiny_model_dir, tmp_path):
    from promptintern.models import load_model
    from promptintern.teacher import write_teacher_logits
    from promptintern.train import collate, encode_row

    tok = load_tokenizer(tiny_model_dir)
    rows, full, _ = _shards(tmp_path, tok)
    out = tmp_path / "teacher"
    out.mkdir()
    stats = write_teacher_logits(tiny_model_dir, None, full, out, top_k=5, max_seq_len=256, temperature=2.0)
    teacher = TeacherLogits(out)
    import pyarrow.parquet as pq

    table = pq.read_table(full).to_pylist()
    model = load_model(tiny_model_dir).eval()
    for row in table:
        idx, val, logz = teacher.get(row["id"])
        assert idx.shape == val.shape == (row["target_tokens"] + 1, 5)  # every answer token and EOS
        ids, labels = encode_row(tok, row["prompt"], row["target"], 256)
        logits = model(**{k: v for k, v in collate([(ids, labels)], tok.pad_token_id).items()
                          if k != "labels"}).logits[0, :-1]
        answer = logits[torch.tensor(labels[1:]) != -100]
        assert torch.equal(idx[:, 0].long(), answer.argmax(-1))  # the teacher's top-1 is its argmax
        torch.testing.assert_close(val[:, 0], answer.max(-1).values, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logz, torch.logsumexp(answer / 2.0, -1), rtol=1e-5, atol=1e-5)
    assert 0 < stats["mass_outside_top_k"]["mean"] < 1
    assert teacher.get("not-a-row") is None and stats["answer_tokens"] == sum(r["target_tokens"] + 1 for r in table)


def test_distillation_joins_the_loss_of_the_rows_in_the_inference_form(tiny_model_dir, tmp_path):
    """Weight 0 gives the adapter of plain training; weight 1 adds, at the first step, exactly the
    KL to the teacher computed by hand on the initial model (LoRA starts as the identity)."""
    from safetensors.torch import load_file

    from promptintern.config import DistillSettings
    from promptintern.models import load_model
    from promptintern.teacher import write_teacher_logits
    from promptintern.train import collate, encode_row, target_logits, train_stage

    tok = load_tokenizer(tiny_model_dir)
    rows, full, query = _shards(tmp_path, tok)
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    write_teacher_logits(tiny_model_dir, None, full, teacher_dir, top_k=8, max_seq_len=256, temperature=2.0)
    teacher = TeacherLogits(teacher_dir)
    base = TrainSettings(batch_size=6, lr=1e-2, epochs_per_stage=2, checkpoint_every=100)

    def run(name, weight, form=(0.0, 0)):
        cfg = base.model_copy(update={"distill": DistillSettings(weight=weight, temperature=2.0, top_k=8)})
        train_stage(tiny_model_dir, query, tmp_path / name, LORA, cfg, stage=1, teacher=teacher, distill_form=form)
        log = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        return load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors")), log

    plain, plain_log = run("plain", 0.0, form=None)
    zero, _ = run("zero", 0.0)
    for key in plain:
        assert torch.equal(plain[key], zero[key])
    _, kd_log = run("kd", 1.0)
    other_form, other_log = run("other-form", 1.0, form=(1.0, 0))  # no row is in that form: no distillation
    assert other_log[0]["loss"] == pytest.approx(plain_log[0]["loss"], abs=1e-6)

    import pyarrow.parquet as pq

    table = pq.read_table(query).to_pylist()
    model = load_model(tiny_model_dir).eval()
    batch = collate([encode_row(tok, r["prompt"], r["target"], 1024) for r in table], tok.pad_token_id)
    with torch.no_grad():
        logits, targets, _ = target_logits(model, batch, share_prefix=False)
    ce = torch.nn.functional.cross_entropy(logits, targets).item()
    idx, val, logz = (torch.cat(parts) for parts in zip(*(teacher.get(r["id"]) for r in table)))
    kd = distill_loss(logits, idx, val, logz, 2.0).item()
    assert plain_log[0]["loss"] == pytest.approx(ce, rel=1e-4)
    assert kd_log[0]["loss"] == pytest.approx(ce + kd, rel=1e-4) and kd > 0


def test_two_processes_distill_as_one_does(tiny_model_dir, tmp_path):
    """Data-parallel (2 gloo processes) with the distillation term: each process weighs its slice's KL
    by its share of the micro-batch's distilled tokens, so the adapter is one process's (to 1e-5)."""
    from safetensors.torch import load_file

    from promptintern.config import DistillSettings
    from promptintern.launch import train_stage_parallel
    from promptintern.teacher import write_teacher_logits
    from promptintern.train import train_stage

    tok = load_tokenizer(tiny_model_dir)
    _, full, query = _shards(tmp_path, tok)
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    write_teacher_logits(tiny_model_dir, None, full, teacher_dir, top_k=8, max_seq_len=256, temperature=2.0)
    cfg = TrainSettings(batch_size=5, lr=1e-2, epochs_per_stage=2, checkpoint_every=100,
                        distill=DistillSettings(weight=1.0, temperature=2.0, top_k=8))
    train_stage(tiny_model_dir, query, tmp_path / "one", LORA, cfg, stage=1, teacher=TeacherLogits(teacher_dir),
                distill_form=(0.0, 0))
    train_stage_parallel(tiny_model_dir, query, tmp_path / "two", LORA, cfg.model_copy(update={"processes": 2}),
                         stage=1, teacher=TeacherLogits(teacher_dir), distill_form=(0.0, 0))
    one, two = ([json.loads(line)["loss"] for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
                for name in ("one", "two"))
    assert two == pytest.approx(one, rel=1e-5)
    a, b = (load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors")) for name in ("one", "two"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-5)
