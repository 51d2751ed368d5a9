"""The run report's comparison with the equal-steps baseline: the sentence and the sweep column."""

from __future__ import annotations

from promptintern.evaluate.common import is_looping
from promptintern.report import comparison_rows, verdict, versus_direct


def _metrics(ours: float, direct: float) -> list[dict]:
    return [{"label": "promptintern", "metric": "bleu", "bleu": ours, "train_steps": 48},
            {"label": "direct-no-template", "metric": "bleu", "bleu": direct, "train_steps": 48}]


def _sig(p: float) -> dict:
    return {"rows": 300, "systems": {"promptintern": {"p_value": None, "ci": 2.0},
                                     "direct-no-template": {"p_value": p, "ci": 2.1}}}


def test_the_verdict_names_the_leader_and_whether_the_gap_is_noise():
    behind = verdict(_metrics(17.39, 20.61), _sig(0.002))
    assert behind.startswith("PromptIntern 17.39 vs fine-tuning on the query alone (48 optimizer steps")
    assert "fine-tuning on the query alone is ahead by 3.22, beyond the test noise (paired bootstrap p = 0.002 " \
           "over 300 test rows)" in behind
    ahead = verdict(_metrics(21.0, 20.5), _sig(0.4))
    assert "PromptIntern is ahead by 0.50, within the test noise" in ahead and "does not tell them apart" in ahead
    assert verdict(_metrics(20.0, 20.0), _sig(1.0)).endswith("a tie.")
    assert verdict(_metrics(20.0, 19.0)[:1], None) == ""  # no baseline in the run: no sentence
    assert "no significance test" in verdict(_metrics(20.0, 19.0), None)


def test_a_sweep_row_carries_its_runs_gap_to_the_direct_baseline():
    rows = [{"method": "promptintern", "prompt form": "query only", "metric": "bleu", "value": 17.39,
             "input tokens / query": 24.5, "s / instance": 0.5},
            {"method": "direct-no-template", "prompt form": "query only", "metric": "bleu", "value": 20.61,
             "input tokens / query": 24.5, "s / instance": 0.5, "p vs promptintern": 0.002}]
    assert versus_direct(rows) == "-3.22 (p 0.002)"
    table = comparison_rows([{"variant": "null-curriculum", "status": "completed", "rows": rows}])
    assert table[0]["group"] == "curriculum"
    assert table[0]["vs direct-no-template (equal steps)"] == "-3.22 (p 0.002)"
    assert versus_direct(rows[:1]) == ""


def test_looping_is_a_block_of_words_repeated_back_to_back():
    assert is_looping("find . -name '*.txt' -name '*.txt' -name '*.txt' -name")
    assert is_looping("ls ls ls")
    assert not is_looping("find . -name '*.txt' -exec grep -l foo {} \\;")
    assert not is_looping("cat a | sort | uniq -c | sort -n")  # 'sort' recurs, not back to back
    assert not is_looping("")
