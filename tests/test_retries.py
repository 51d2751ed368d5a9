"""Retries where a retry can help (an I/O hiccup), one attempt where it cannot (bad config or data).

The library call under a real cached task is made to fail; Prefect's retry policy on the task
(``tasks.steps.retry_if_transient``) decides. Delays are set to 0 here; the tasks' own are 5 s, 30 s.
"""

from __future__ import annotations

import errno
from concurrent.futures.process import BrokenProcessPool

import pytest
from pydantic import ValidationError

from promptintern import pipeline
from promptintern.config import TrainSettings
from promptintern.datasets import DataError
from tasks.steps import RETRIES, is_transient


def _validation_error() -> ValidationError:
    try:
        TrainSettings(batch_size=0)
    except ValidationError as err:
        return err
    raise AssertionError("batch_size=0 validated")


@pytest.mark.parametrize("exc, transient", [
    (OSError(errno.EIO, "Input/output error"), True),
    (OSError(errno.ESTALE, "Stale file handle"), True),
    (TimeoutError("read timed out"), True),
    (ConnectionResetError(errno.ECONNRESET, "reset"), True),
    (BrokenProcessPool("a worker died"), True),
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), False),
    (FileNotFoundError(errno.ENOENT, "no such file", "data/nl2bash/split/train.jsonl"), False),
    (PermissionError(errno.EACCES, "denied"), False),
    (ValueError("train_subset=99 is larger than the split"), False),
    (DataError("bad.jsonl:2: not valid JSON"), False),
    (_validation_error(), False),
    (RuntimeError("CUDA out of memory"), False),
    (KeyError("cmd"), False),
])
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


def _run_load_dataset(root, data_dir, seed):
    """One load-dataset task in a flow, retry delays 0; returns its final state."""
    from prefect import flow

    from tasks.steps import load_dataset_task

    quick = load_dataset_task.with_options(retry_delay_seconds=0, result_storage=root)

    @flow
    def one_box():  # the state inside a dict: a failed task must not fail the flow's call
        return {"state": quick(str(root), "nl2bash", str(data_dir), f"digest-{seed}", 8, "test", 2, seed,
                               return_state=True)}

    return one_box()["state"]


@pytest.fixture
def failing_prepare(monkeypatch):
    """Make ``pipeline.prepare_dataset`` raise ``errors`` in turn, then do the real work."""
    calls = []
    real = pipeline.prepare_dataset

    def install(*errors):
        def flaky(*args, **kwargs):
            calls.append(len(calls) + 1)
            if len(calls) <= len(errors):
                raise errors[len(calls) - 1]
            return real(*args, **kwargs)

        monkeypatch.setattr(pipeline, "prepare_dataset", flaky)
        return calls

    return install


def test_an_io_error_is_retried_and_the_task_completes(prefect_harness, failing_prepare, tiny_data_dir, tmp_path):
    calls = failing_prepare(OSError(errno.EIO, "Input/output error"))
    state = _run_load_dataset(tmp_path, tiny_data_dir, seed=11)
    assert state.is_completed() and state.name == "Completed"
    assert calls == [1, 2]
    rel = state.result()
    assert (tmp_path / rel / "train.jsonl").is_file()
    assert not list((tmp_path / "datasets").glob(".partial-*/"))  # the failed attempt left nothing


def test_retries_stop_after_the_configured_number(prefect_harness, failing_prepare, tiny_data_dir, tmp_path):
    calls = failing_prepare(*[OSError(errno.EIO, "Input/output error")] * (RETRIES + 1))
    state = _run_load_dataset(tmp_path, tiny_data_dir, seed=12)
    assert state.is_failed()
    assert len(calls) == RETRIES + 1


@pytest.mark.parametrize("error", [
    ValueError("train_subset=99 is larger than the 'train' split"),
    DataError("train.jsonl:3: missing field(s) ['cmd']"),
    OSError(errno.ENOSPC, "No space left on device"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "train.jsonl"),
], ids=["ValueError", "DataError", "ENOSPC", "FileNotFoundError"])
def test_a_lasting_error_gets_exactly_one_attempt(prefect_harness, failing_prepare, tiny_data_dir, tmp_path, error):
    calls = failing_prepare(error, error, error)
    state = _run_load_dataset(tmp_path, tiny_data_dir, seed=13)
    assert state.is_failed()
    assert calls == [1]
    assert not (tmp_path / "datasets").exists() or not [
        p for p in (tmp_path / "datasets").iterdir() if not p.name.startswith(".")]


def test_progress_is_reported_at_a_rate_a_person_can_read():
    """First and last step always; between them at most every 10 s and after 5% more of the work."""
    from tasks.steps import ProgressRate

    clock = [0.0]
    rate = ProgressRate(clock=lambda: clock[0])
    fast = []
    for step in range(1, 13):  # a 12-step stage, half a second a step
        clock[0] += 0.5
        fast.append(rate.due(step, 12))
    assert [i + 1 for i, due in enumerate(fast) if due] == [1, 12]

    clock[0], rate = 0.0, ProgressRate(clock=lambda: clock[0])
    due = []
    for step in range(1, 769):  # a 768-step stage, 5 s a step: every 5% (39 steps, > 10 s)
        clock[0] += 5.0
        due.append(rate.due(step, 768))
    steps = [i + 1 for i, d in enumerate(due) if d]
    assert steps[0] == 1 and steps[-1] == 768 and 19 <= len(steps) <= 22
    assert all(b - a >= 0.05 * 768 for a, b in zip(steps, steps[1:-1]))
