"""What the orb-cli-unseen tables do not show: on the rows whose subcommand no training row shows,
which subcommand each model writes, whether the request spells that subcommand out, and a sign test
between two models on those rows. Reads the published answers (and, optionally, the teacher's
answers to the request log from its teacher-answers box).

    python examples/orb-cli/unseen_report.py docs/results/predictions/orb-cli-unseen            # test split
    python examples/orb-cli/unseen_report.py docs/results/predictions/orb-cli-unseen-dev --split dev
    python examples/orb-cli/unseen_report.py docs/results/predictions/orb-cli-unseen \\
        --answers artifacts/teacher-answers/<key>/answers.jsonl                                  # + the teacher's
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from make_data import UNSEEN  # the four subcommands no training row shows (this folder is on the path)
from scipy.stats import binomtest

HERE = Path(__file__).resolve().parent


def subcommand(command: str) -> str:
    words = command.split()
    return words[1] if len(words) > 1 and words[0] == "orb" else ""


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _requests(split: str) -> dict[str, str]:
    """Row id as the benchmark writes it (split + the data's id) -> the request."""
    return {f"{split}-{r['id']}": r["request"] for r in _jsonl(HERE / "data" / "unseen" / f"{split}.jsonl")}


def unseen_rows(answers: list[dict], requests: dict[str, str]) -> dict[str, dict]:
    """Per unseen row id: whether the answer has the right subcommand, is exactly right, and whether
    the request spells the subcommand out."""
    out = {}
    for a in answers:
        sub = subcommand(a["reference"])
        if sub in UNSEEN:
            out[a["id"]] = {"right_subcommand": subcommand(a["prediction"]) == sub,
                            "exact": " ".join(a["prediction"].split()) == " ".join(a["reference"].split()),
                            "spelled_out": sub in requests[a["id"]].lower()}
    return out


def report(folder: Path, split: str, baseline: str = "direct-no-template-27-passes",
           student: str = "context-distillation-unlabeled") -> dict:
    requests = _requests(split)
    models = {p.stem: unseen_rows(_jsonl(p), requests) for p in sorted(folder.glob("*.jsonl")) if "." not in p.stem}
    first = next(iter(models.values()))
    summary = {"rows": len(first), "spelled_out": sum(r["spelled_out"] for r in first.values()), "models": {}}
    for name, rows in models.items():
        right = [r for r in rows.values() if r["right_subcommand"]]
        summary["models"][name] = {"right_subcommand": len(right), "exact": sum(r["exact"] for r in rows.values()),
                                   "right_and_spelled_out": sum(r["spelled_out"] for r in right)}
    if baseline in models and student in models:  # rows where exactly one of the two is right
        a, b = models[student], models[baseline]
        wins = sum(a[i]["right_subcommand"] and not b[i]["right_subcommand"] for i in a)
        losses = sum(b[i]["right_subcommand"] and not a[i]["right_subcommand"] for i in a)
        summary["sign_test"] = {"model": student, "against": baseline, "wins": wins, "losses": losses,
                                "p_value": binomtest(wins, wins + losses).pvalue if wins + losses else 1.0}
    return summary


def teacher_report(answers_path: Path) -> dict:
    """The teacher's kept answers to the request log, scored on the log's set-aside commands, unseen
    and seen subcommands apart."""
    log = {f"unlabeled-{r['id']}": r for r in _jsonl(HERE / "data" / "unseen" / "unlabeled.jsonl")}
    out = {}
    for name, wanted in (("unseen", True), ("seen", False)):
        kept = [a for a in _jsonl(answers_path) if a["dropped"] is None
                and (subcommand(log[a["id"]]["command"]) in UNSEEN) == wanted]
        refs = [log[a["id"]]["command"] for a in kept]
        out[name] = {"kept": len(kept),
                     "exact": 100.0 * sum(" ".join(a["answer"].split()) == " ".join(r.split())
                                          for a, r in zip(kept, refs)) / max(1, len(kept)),
                     "right_subcommand": 100.0 * sum(subcommand(a["answer"]) == subcommand(r)
                                                     for a, r in zip(kept, refs)) / max(1, len(kept))}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a part's published answers (docs/results/predictions/<part>)")
    parser.add_argument("--split", default="test", choices=("dev", "test"))
    parser.add_argument("--answers", type=Path, help="the teacher-answers box's answers.jsonl")
    args = parser.parse_args(argv)
    out = report(args.folder, args.split)
    if args.answers:
        out["teacher_answers_to_the_log"] = teacher_report(args.answers)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
