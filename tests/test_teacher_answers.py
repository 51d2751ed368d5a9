"""Sequence-level distillation on unlabeled queries (``train.distill.unlabeled_queries``): which
queries the teacher answers, what it keeps, and the flow that trains the student on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from promptintern.config import preset
from promptintern.curriculum import steps_for_epochs
from promptintern.datasets import DataError, get_task
from promptintern.pipeline import (prepare_dataset, read_examples, training_order, unlabeled_rows,
                                   unlabeled_source)
from promptintern.variants import variant_config


def test_unlabeled_queries_follow_the_training_subset_and_carry_no_reference(tiny_data_dir, tmp_path):
    prepare_dataset("nl2bash", str(tiny_data_dir), 8, "test", 2, 0, tmp_path)
    labeled = {r.id for r in read_examples(tmp_path / "train.jsonl")}
    asked = unlabeled_rows("nl2bash", str(tiny_data_dir), 8, 0, 6)
    assert len(asked) == 6 and not labeled & {r.id for r in asked}
    assert all(r.target == "" for r in asked)
    # the next six of the same seeded shuffle that chose the labeled rows: a larger train_subset
    # later labels exactly these rows first
    order = training_order(32, 0)
    assert labeled == {f"train-{i}" for i in order[:8]}
    assert [r.id for r in asked] == [f"train-{i}" for i in order[8:14]]
    assert [r.id for r in unlabeled_rows("nl2bash", str(tiny_data_dir), 8, 0, 6)] == [r.id for r in asked]
    with pytest.raises(DataError, match=r"unlabeled_queries=25: .* 32 rows and train_subset=8 .* at most 24"):
        unlabeled_rows("nl2bash", str(tiny_data_dir), 8, 0, 25)


def _logged_task(tmp_path: Path) -> tuple[Path, Path]:
    """A task of 4 training rows and 2 test rows, as a task file without a request log and one
    with a log of 4 queries (no answers)."""
    rows = [{"q": f"request {i}", "a": f"answer {i}"} for i in range(10)]
    for split, part in (("train", rows[:4]), ("test", rows[4:6])):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (tmp_path / "log.jsonl").write_text("".join(json.dumps({"q": r["q"]}) + "\n" for r in rows[6:]))
    base = ("name: logged\ntemplate:\n  text: Answer.\ndata:\n  train: train.jsonl\n  test: test.jsonl\n"
            "  query: q\n  output: a\nmetric:\n  name: exact_match\n")
    plain, logged = tmp_path / "plain.yaml", tmp_path / "logged.yaml"
    plain.write_text(base)
    logged.write_text(base.replace("  query: q", "  unlabeled: log.jsonl\n  query: q"))
    return plain, logged


def test_a_request_log_is_where_unlabeled_queries_come_from(tmp_path):
    """A task file's ``data.unlabeled`` (queries nobody has answered: no output column needed) is
    the teacher's source; without one, every training row labeled leaves nothing to answer."""
    plain, logged = _logged_task(tmp_path)
    with pytest.raises(DataError, match=r"unlabeled_queries=1: .* 4 rows and train_subset=None .* at most 0 "
                                        r".*data.unlabeled"):
        unlabeled_rows(str(plain), str(tmp_path), None, 0, 1)
    assert get_task(str(logged)).splits == ("train", "test", "unlabeled")
    asked = unlabeled_rows(str(logged), str(tmp_path), None, 0, 3, references=True)
    order = training_order(4, 0)  # the log's own seeded shuffle; every training row stays labeled
    assert [r.query for r in asked] == [f"request {6 + i}" for i in order[:3]] and {r.target for r in asked} == {""}
    assert unlabeled_source(str(logged)) == "unlabeled" and unlabeled_source(str(plain)) == "train"
    with pytest.raises(DataError, match=r"unlabeled_queries=5: the 'unlabeled' split of .* has 4 queries"):
        unlabeled_rows(str(logged), str(tmp_path), None, 0, 5)
    with pytest.raises(DataError, match=r"eval.test_split='unlabeled': .* request log \(no answers to score against\); allowed: \['train', 'test'\]"):
        prepare_dataset(str(logged), str(tmp_path), None, "unlabeled", None, 0, tmp_path / "frozen")


def test_the_teacher_answers_a_request_log(tiny_model_dir, tmp_path, monkeypatch):
    """From a log without answers: every labeled row kept, the log's queries answered, and no
    score against references that do not exist."""
    from promptintern import generate
    from promptintern.config import RetrievalConfig
    from promptintern.pipeline import teacher_answers

    _, logged = _logged_task(tmp_path)
    dataset, out = tmp_path / "dataset", tmp_path / "answers"
    dataset.mkdir(), out.mkdir()
    prepare_dataset(str(logged), str(tmp_path), None, "test", None, 0, dataset)
    monkeypatch.setattr(generate, "generate_with", _fixed_answers(["yes"], [1]))
    stats = teacher_answers(tiny_model_dir, dataset, str(tmp_path), None, 0, RetrievalConfig(), 4, out,
                            max_new_tokens=8, batch_size=4)
    assert stats["queries_from"] == "unlabeled" and stats["kept"] == 4 and stats["labeled_rows"] == 4
    assert "kept_answers_vs_set_aside_references" not in stats
    assert [r.target for r in read_examples(out / "train.jsonl")] == [f"answer {i}" for i in range(4)] + ["yes"] * 4


@pytest.mark.parametrize("variant, overrides, message", [
    ("promptintern-distill", {"train": {"distill": {"teacher": "stage1", "unlabeled_queries": 4}}},
     "exists only after stage 1"),
    ("promptintern-distill", {"train": {"distill": {"unlabeled_queries": 4}}},
     r"stages \[1, 2\] train with shots: set schedule.absorb_examples=false"),
])
def test_unlabeled_queries_refuse_what_they_cannot_do(variant, overrides, message):
    with pytest.raises(ValueError, match=message):
        variant_config(variant, "tiny", overrides)


def test_the_variant_answers_512_queries_in_one_query_only_stage():
    cfg = variant_config("context-distillation-unlabeled", "cpu-repro")
    assert cfg.train.distill.unlabeled_queries == 512 and cfg.train.distill.teacher == "full-prompt-ft"
    assert [(s.tau, s.k) for s in cfg.schedule.stages()] == [(0.0, 0)]
    assert preset("cpu-repro").train.distill is None


def _fixed_answers(texts: list[str], output_tokens: list[int]):
    """``generate_with`` as a teacher that answers ``texts`` (in prompt order) with those token
    counts: the tiny test model is random weights, and its every answer loops to the token limit."""
    from promptintern.generate import Generations

    def generate_with(model, tokenizer, prompts, max_new_tokens=64, batch_size=8, **_):
        n = len(prompts)
        return Generations((texts * n)[:n], [len(tokenizer(p)["input_ids"]) for p in prompts],
                           (output_tokens * n)[:n], 0.1, batch_size)

    return generate_with


def _labeled_dataset(tiny_data_dir, tmp_path) -> Path:
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    prepare_dataset("nl2bash", str(tiny_data_dir), 8, "test", 2, 0, dataset)
    return dataset


def test_the_teacher_keeps_the_answers_that_stopped(tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch):
    from promptintern import generate
    from promptintern.config import CompressionConfig, RetrievalConfig
    from promptintern.pipeline import compress, teacher_answers

    dataset = _labeled_dataset(tiny_data_dir, tmp_path)
    template = tmp_path / "template"
    template.mkdir()
    compress(dataset, 1.0, CompressionConfig(method="none"), tiny_model_dir, template)
    held = unlabeled_rows("nl2bash", str(tiny_data_dir), 8, 0, 6, references=True)
    right = held[0].target  # the first query's reference, set aside: wrong for the fourth query
    assert held[3].target != right
    monkeypatch.setattr(generate, "generate_with", _fixed_answers([right, "  ", "ls ls ls ls ls ls ls ls"],
                                                                 [3, 1, 8]))
    out = tmp_path / "answers"
    out.mkdir()
    stats = teacher_answers(tiny_model_dir, dataset, str(tiny_data_dir), template, 2, RetrievalConfig(), 6, out,
                            max_new_tokens=8, batch_size=3)
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["dropped"] for a in answers] == [None, "empty after postprocessing", "ran to eval.max_new_tokens"] * 2
    assert stats["kept"] == 2 and stats["dropped"] == {"empty after postprocessing": 2, "ran to eval.max_new_tokens": 2}
    rows = read_examples(out / "train.jsonl")
    assert rows[:8] == read_examples(dataset / "train.jsonl")
    assert [(r.id, r.target, r.meta["answered_by"]) for r in rows[8:]] == [(answers[0]["id"], right, "teacher"),
                                                                           (answers[3]["id"], right, "teacher")]
    assert json.loads((out / "info.json").read_text())["train_rows"] == 10
    # scored against the references nothing trained on: one of the two kept answers is right
    assert stats["kept_answers_vs_set_aside_references"]["exact_match"] == pytest.approx(50.0)
    # each query's prompt was the full one: the template and 2 shots from the labeled rows, none its own
    shots = np.load(out / "queries" / "bank" / "test_neighbors.npy")
    assert shots.shape == (6, 2) and shots.max() < 8


def test_a_teacher_whose_every_answer_loops_fails_its_box(tiny_model_dir, tiny_data_dir, tmp_path):
    """The real tiny model (random weights) never stops: nothing to distil is an error, not a
    student that quietly trains on the labeled rows alone."""
    from promptintern.config import RetrievalConfig
    from promptintern.pipeline import teacher_answers

    dataset = _labeled_dataset(tiny_data_dir, tmp_path)
    out = tmp_path / "answers"
    out.mkdir()
    with pytest.raises(ValueError, match=r"none of the teacher's 4 answers is usable \(\{'ran to eval.max_new_tokens'"
                                         r": 4\}.*raise eval.max_new_tokens"):
        teacher_answers(tiny_model_dir, dataset, str(tiny_data_dir), None, 0, RetrievalConfig(), 4, out,
                        max_new_tokens=4, batch_size=2)


def test_the_student_trains_on_the_teachers_answers(prefect_harness, tiny_data_dir, tmp_path, monkeypatch):
    """The full-prompt teacher is trained once on the labeled rows, answers 6 more queries (every
    generation answers "ls -l": the tiny model cannot stop), and the student's one stage trains on
    the labeled rows plus those answers, for 3 passes over all 14; the equal-steps baseline takes
    as many steps on the 8 labeled rows. context-distillation, run after it, reads the same teacher
    from the cache."""
    from flows.dag import promptintern
    from promptintern import generate
    from tests.test_flow_e2e import _task_states

    monkeypatch.setattr(generate, "generate_with", _fixed_answers(["ls -l"], [3]))
    common = {"data_dir": str(tiny_data_dir), "train_subset": 8, "train": {"total_epochs": 3.0},
              "eval": {"test_subset": 2, "baseline_full_prompt": False, "baseline_query_only": False}}
    unlabeled = {**common, "train": {**common["train"], "distill": {"unlabeled_queries": 6}}}
    state = promptintern(preset="tiny", variant="context-distillation-unlabeled", overrides=unlabeled,
                         artifact_root=str(tmp_path), return_state=True)
    result = state.result()
    states = _task_states(state.state_details.flow_run_id)
    assert states["teacher-answers"] == ["Completed"]
    # the teacher, the student and the baseline: trained and merged
    assert len(states["train-stage"]) == 3 and len(states["merge-adapter"]) == 3

    folder = next(p for p in (tmp_path / "teacher-answers").iterdir() if not p.name.startswith("."))
    dataset = next(p for p in (tmp_path / "datasets").iterdir() if not p.name.startswith("."))
    labeled = read_examples(dataset / "train.jsonl")
    rows = read_examples(folder / "train.jsonl")
    assert rows[:8] == labeled and len(rows) == 14 and not {r.id for r in rows[8:]} & {r.id for r in labeled}
    shard = next(p for p in (tmp_path / "shards").glob("*/shard.parquet")
                 if pq.read_metadata(p).num_rows == 14)
    assert pq.read_table(shard, columns=["target"]).column("target").to_pylist()[8:] == [" ls -l"] * 6

    assert "trained on its answers to 6 unlabeled queries" in result["markdown"]
    steps = steps_for_epochs(14, 4, 1, 3.0)
    metrics = {m["label"]: m for m in result["metrics"]}
    assert metrics["promptintern"]["train_steps"] == metrics["direct-no-template"]["train_steps"] == steps == 12  # 4 batches a pass

    state = promptintern(preset="tiny", variant="context-distillation", overrides=common,
                         artifact_root=str(tmp_path), return_state=True)
    state.result()
    states = _task_states(state.state_details.flow_run_id)
    assert states["teacher-logits"] == ["Cached"] and "teacher-answers" not in states
    # the teacher from the cache; the student (other rows) and the baseline (fewer steps) anew
    assert sorted(states["train-stage"]) == ["Cached", "Completed", "Completed"]


def test_no_query_left_to_answer_fails_before_any_box(prefect_harness, tiny_data_dir, tmp_path):
    """Every training row labeled and no request log: the run stops before it converts a model or
    trains the teacher, with the numbers and what to give."""
    from flows.dag import promptintern

    overrides = {"data_dir": str(tiny_data_dir), "train_subset": None, "train": {"distill": {"unlabeled_queries": 4}}}
    with pytest.raises(DataError, match=r"32 rows and train_subset=None of them are labeled, so at most 0 .*data.unlabeled"):
        promptintern(preset="tiny", variant="context-distillation-unlabeled", overrides=overrides,
                     artifact_root=str(tmp_path))
    assert not [p for p in tmp_path.iterdir() if p.name != "runs"]  # no box began
