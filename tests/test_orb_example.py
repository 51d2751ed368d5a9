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
    for split in ("train", "dev", "test"):
        assert (copy / "data" / f"{split}.jsonl").read_bytes() == (HERE / "data" / f"{split}.jsonl").read_bytes()


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
        def __init__(self, target):
            self.target = target

    refs = [Row("orb stash /srv/db --keep 5 --seal"), Row("orb quota"), Row("orb thaw arc-1234 --into ./out")]
    out = score(["orb stash /srv/db  --keep 5 --seal", "orb quota --human", "orb peek arc-1234 --into ./out"], refs)
    assert out["metric"] == "exact_match" and round(out["exact_match"], 2) == 33.33
    assert round(out["subcommand"], 2) == 66.67
    assert round(out["option_f1"], 2) == round(100 * (1 + 0 + 1) / 3, 2)  # quota: predicted a flag it did not ask for
    assert json.dumps(out)
