"""The orb-cli example's metric (``metric: {name: python, callable: orb_metric:score}``).

Exact match (after collapsing whitespace) is the headline; beside it what a model gets right
before the whole line: the subcommand, and the options (flags with their values) as an F1 against
the reference's, so a model that learned the tool's names but not every option is told apart from
one that writes another tool's command.
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


def score(predictions: list[str], examples: list) -> dict:
    exact = subcommand = f1_sum = 0.0
    for prediction, example in zip(predictions, examples):
        reference = example.target
        exact += " ".join(prediction.split()) == " ".join(reference.split())
        (p_sub, p_opts), (r_sub, r_opts) = _parts(prediction), _parts(reference)
        subcommand += p_sub == r_sub and bool(r_sub)
        if not p_opts and not r_opts:
            f1_sum += 1.0
        else:
            hit = len(p_opts & r_opts)
            f1_sum += 2 * hit / (len(p_opts) + len(r_opts))
    n = max(1, len(examples))
    return {"metric": "exact_match", "exact_match": 100.0 * exact / n, "subcommand": 100.0 * subcommand / n,
            "option_f1": 100.0 * f1_sum / n, "n": len(examples)}
