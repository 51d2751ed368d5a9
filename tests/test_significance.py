"""Paired bootstrap: intervals and p-values that say whether two rows of a table really differ."""

from __future__ import annotations

import random

import pytest
from sacrebleu.metrics import BLEU

from promptintern.significance import paired_bootstrap, row_scores

REFS = [f"find . -name '*.{ext}' -size +{n}k -print" for n in range(150) for ext in ("txt", "log")]


def _rows(predictions, passed=None):
    return [{"prediction": p, "reference": r, **({"exec_status": "passed" if ok else "failed"}
                                                 if passed is not None else {})}
            for p, r, ok in zip(predictions, REFS, passed or [None] * len(REFS))]


def test_bleu_scores_are_sacrebleus_and_a_much_worse_system_is_significant():
    rng = random.Random(0)
    good = [r if rng.random() < 0.6 else "ls -la" for r in REFS]
    bad = [r if rng.random() < 0.1 else "ls -la" for r in REFS]
    near = list(good)
    near[0] = "ls"  # one answer changed
    out = paired_bootstrap("bleu", {"good": _rows(good), "bad": _rows(bad), "near": _rows(near),
                                    "same": _rows(list(good))}, baseline="good")
    systems = out["systems"]
    assert systems["good"]["score"] == pytest.approx(BLEU().corpus_score(good, [REFS]).score)
    assert systems["bad"]["score"] == pytest.approx(BLEU().corpus_score(bad, [REFS]).score)
    assert systems["good"]["p_value"] is None
    assert systems["bad"]["p_value"] < 0.01 and systems["near"]["p_value"] > 0.05  # one answer: not significant
    assert systems["same"]["p_value"] == 1.0
    assert all(0 < s["ci"] < 15 for s in systems.values())
    assert out["rows"] == 300 and out["n_samples"] == 1000 and out["seed"] == 12345
    # the same resamples every time
    again = paired_bootstrap("bleu", {"good": _rows(good), "bad": _rows(bad)}, baseline="good")
    assert again["systems"]["bad"] == systems["bad"]


def test_pass_at_1_interval_matches_the_binomial_one():
    half = [i % 2 == 0 for i in range(len(REFS))]  # 50% of 300
    better = [i % 10 != 0 for i in range(len(REFS))]  # 90%
    one_more = list(half)
    one_more[1] = True
    rows = {name: _rows(["x"] * len(REFS), passed) for name, passed in
            (("half", half), ("better", better), ("one-more", one_more))}
    rows["one-more"] = [{**r, "prediction": "y"} for r in rows["one-more"]]
    rows["better"] = [{**r, "prediction": "z"} for r in rows["better"]]
    out = paired_bootstrap("pass@1", rows, baseline="half")["systems"]
    assert out["half"]["score"] == 50.0 and out["better"]["score"] == 90.0
    binomial = 1.96 * (0.5 * 0.5 / 300) ** 0.5 * 100  # 5.66 points
    assert out["half"]["ci"] == pytest.approx(binomial, rel=0.15)
    assert out["better"]["p_value"] < 0.01 and out["one-more"]["p_value"] > 0.05


def test_exact_match_rows_and_bad_inputs():
    rows = _rows([REFS[0] + "  ", "nope"] + REFS[2:])
    assert list(row_scores("exact_match", rows)[:3]) == [100.0, 0.0, 100.0]  # whitespace-normalized
    with pytest.raises(ValueError, match="not a mean of per-row scores"):
        row_scores("bleu", rows)
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap("exact_match", {"a": rows, "b": rows[:10]}, baseline="a")
    with pytest.raises(ValueError, match="baseline 'c'"):
        paired_bootstrap("exact_match", {"a": rows}, baseline="c")


def test_published_answers_keep_what_rescoring_needs(tmp_path):
    import json

    from promptintern.results import export_predictions, read_predictions

    bash, code = tmp_path / "bash", tmp_path / "code"
    bash.mkdir(), code.mkdir()
    (bash / "predictions.jsonl").write_text(json.dumps(
        {"id": "t-0", "input_tokens": 21, "completion": " ls -la", "prediction": "ls -la", "reference": "ls -a"}) + "\n")
    (code / "predictions.jsonl").write_text(json.dumps(
        {"id": 11, "input_tokens": 90, "completion": "x", "prediction": "def f(): pass", "reference": "def f(): return 1",
         "exec_status": "failed", "exec_detail": "AssertionError", "exec_wall_s": 0.1}) + "\n")
    rows = read_predictions(export_predictions(bash, tmp_path / "out" / "bash.jsonl"))
    assert rows == [{"id": "t-0", "prediction": "ls -la", "reference": "ls -a"}]
    rows = read_predictions(export_predictions(code, tmp_path / "out" / "code.jsonl"))
    assert rows == [{"id": 11, "prediction": "def f(): pass", "exec_status": "failed", "exec_detail": "AssertionError"}]
    assert list(row_scores("pass@1", rows)) == [0.0]


def test_the_command_compares_any_two_published_answer_files(tmp_path, capsys):
    import json

    from promptintern.significance import main

    refs = [f"find dir{i} -name '*.py' -type f -print" for i in range(40)]
    good = [{"prediction": r, "reference": r} for r in refs]
    bad = [{"prediction": "echo" if i % 2 else r, "reference": r} for i, r in enumerate(refs)]
    for name, rows in (("a", good), ("b", bad), ("c", good)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = main([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), str(tmp_path / "c.jsonl"),
                   "--samples", "200"])
    assert result["baseline"] == "a" and result["systems"]["a"]["score"] == pytest.approx(100.0)
    assert result["systems"]["b"]["score"] < 90.0 and result["systems"]["b"]["p_value"] < 0.05
    assert result["systems"]["c"]["p_value"] == 1.0  # the same answers
    assert "p against a" in capsys.readouterr().out
