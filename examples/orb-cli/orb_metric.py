"""The orb-cli example's metric (``metric: {name: python, callable: orb_metric:score}``).

Exact match (after collapsing whitespace) is the headline; beside it what a model gets right
before the whole line: the subcommand, and the options (flags with their values) as an F1 against
the reference's, so a model that learned the tool's names but not every option is told apart from
one that writes another tool's command. Rows marked ``unseen`` (unseen.yaml: a subcommand no
training row shows) are also scored apart: exact match and subcommand on them and on the others.
"""

from __future__ import annotations


def _parts(command: str) -> tuple[str, set[str]]:
    words = command.split()
    sub = words[1] if len(words) > 1 and words[0] == "orb" else ""
    options, i = set(), 0
    while i < len(words):
        if words[i].startswith("--"):
            has_value = i + 1 < len(words) and not words[i + 1].startswith("--")
            options.add(f"{words[i]} {words[i + 1]}" if has_value else words[i])
            i += 2 if has_value else 1
        else:
            i += 1
    return sub, options


def _row(prediction: str, reference: str) -> tuple[bool, bool, float]:
    """Exact match, right subcommand, options' F1 of one answer."""
    (p_sub, p_opts), (r_sub, r_opts) = _parts(prediction), _parts(reference)
    f1 = 1.0 if not p_opts and not r_opts else 2 * len(p_opts & r_opts) / (len(p_opts) + len(r_opts))
    return " ".join(prediction.split()) == " ".join(reference.split()), p_sub == r_sub and bool(r_sub), f1


def score(predictions: list[str], examples: list) -> dict:
    rows = [_row(p, e.target) for p, e in zip(predictions, examples)]
    n = max(1, len(rows))
    out = {"metric": "exact_match", "exact_match": 100.0 * sum(r[0] for r in rows) / n,
           "subcommand": 100.0 * sum(r[1] for r in rows) / n, "option_f1": 100.0 * sum(r[2] for r in rows) / n,
           "n": len(rows)}
    if any("unseen" in e.meta for e in examples):
        for name, wanted in (("unseen", True), ("seen", False)):
            part = [r for r, e in zip(rows, examples) if bool(e.meta.get("unseen")) == wanted]
            m = max(1, len(part))
            out |= {f"exact_match_{name}": 100.0 * sum(r[0] for r in part) / m,
                    f"subcommand_{name}": 100.0 * sum(r[1] for r in part) / m, f"n_{name}": len(part)}
    return out
