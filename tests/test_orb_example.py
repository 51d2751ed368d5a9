"""The orb-cli example: its rows regenerate byte for byte, its task file loads, its metric scores
the parts of a command apart, and every name an answer uses is written in the template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from promptintern.datasets import get_task

HERE = Path(__file__).resolve().parent.parent / "examples" / "orb-cli"


def test_the_rows_regenerate_byte_for_byte(tmp_path):
    copy = tmp_path / "orb-cli"
    copy.mkdir()
    (copy / "make_data.py").write_text((HERE / "make_data.py").read_text())
    subprocess.run([sys.executable, str(copy / "make_data.py")], check=True, capture_output=True)
    for split in ("train", "dev", "test", "unseen/train", "unseen/unlabeled", "unseen/dev", "unseen/test"):
        assert (copy / "data" / f"{split}.jsonl").read_bytes() == (HERE / "data" / f"{split}.jsonl").read_bytes()


def test_the_unseen_task_shows_four_subcommands_only_in_its_template_and_its_log():
    task = get_task(str(HERE / "unseen.yaml"))
    assert task.splits == ("train", "dev", "test", "unlabeled")
    subcommand = lambda r: r.target.split()[1]  # noqa: E731
    train, log = task.load(str(HERE), "train"), task.load(str(HERE), "unlabeled")
    dev, test = task.load(str(HERE), "dev"), task.load(str(HERE), "test")
    unseen = {"mirror", "audit", "ledger", "rename"}
    assert len(train) == len(log) == 1000 and not {subcommand(r) for r in train} & unseen
    assert unseen <= {subcommand(r) for r in log} and unseen <= {subcommand(r) for r in test}
    assert all(r.meta["unseen"] == (subcommand(r) in unseen) for r in dev + test)
    assert 50 < sum(r.meta["unseen"] for r in test) < 150
    assert all(f"orb {n}" in task.template.text for n in unseen)
    queries = [r.query for r in train + log + dev + test]
    assert len(set(queries)) == len(queries) == 2500


def test_every_subcommand_and_option_an_answer_uses_is_in_the_template():
    task = get_task(str(HERE / "task.yaml"))
    template = task.template.text
    rows = task.load(str(HERE), "train") + task.load(str(HERE), "test")
    assert len(rows) == 1300 and len({r.query for r in rows}) == 1300
    names = {w for r in rows for w in r.target.split()[1:2] + [w for w in r.target.split() if w.startswith("--")]}
    assert len(names) > 25
    assert all(f"orb {n}" in template or n in template for n in names), sorted(n for n in names if n not in template)


def test_the_metric_scores_the_subcommand_and_options_apart():
    sys.path.insert(0, str(HERE))
    try:
        from orb_metric import score
    finally:
        sys.path.remove(str(HERE))

    class Row:
        def __init__(self, target, **meta):
            self.target, self.meta = target, meta

    refs = [Row("orb stash /srv/db --keep 5 --seal"), Row("orb quota"), Row("orb thaw arc-1234 --into ./out")]
    out = score(["orb stash /srv/db  --keep 5 --seal", "orb quota --human", "orb peek arc-1234 --into ./out"], refs)
    assert out["metric"] == "exact_match" and round(out["exact_match"], 2) == 33.33
    assert round(out["subcommand"], 2) == 66.67
    assert round(out["option_f1"], 2) == round(100 * (1 + 0 + 1) / 3, 2)  # quota: predicted a flag it did not ask for
    assert json.dumps(out) and "exact_match_unseen" not in out
    # unseen.yaml's rows: the same scores on the rows of subcommands no training row shows, and the rest
    marked = [Row(r.target, unseen=u) for r, u in zip(refs, (False, True, False))]
    out = score(["orb stash /srv/db --keep 5 --seal", "orb quota", "orb peek arc-1234 --into ./out"], marked)
    assert (out["exact_match_unseen"], out["subcommand_unseen"], out["n_unseen"]) == (100.0, 100.0, 1)
    assert (out["exact_match_seen"], out["subcommand_seen"], out["n_seen"]) == (50.0, 50.0, 2)


def test_the_unseen_report_rederives_the_published_counts():
    """docs/results.md's counts on orb-cli-unseen's unseen rows, from the published test answers."""
    sys.path.insert(0, str(HERE))
    try:
        from unseen_report import report
    finally:
        sys.path.remove(str(HERE))
    out = report(HERE.parents[1] / "docs" / "results" / "predictions" / "orb-cli-unseen", "test")
    assert (out["rows"], out["spelled_out"]) == (127, 41)
    models = out["models"]
    assert models["context-distillation-unlabeled"] == {"right_subcommand": 31, "exact": 8, "right_and_spelled_out": 31}
    assert models["direct-template-kshot"] == {"right_subcommand": 28, "exact": 11, "right_and_spelled_out": 27}
    labeled_only = ("direct-no-template", "direct-no-template-27-passes", "promptintern", "context-distillation")
    assert all(models[m]["right_subcommand"] == 0 for m in labeled_only)
    assert (out["sign_test"]["wins"], out["sign_test"]["losses"]) == (31, 0) and out["sign_test"]["p_value"] < 1e-8
