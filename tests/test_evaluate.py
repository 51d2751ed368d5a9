import sacrebleu

from promptintern.datasets import postprocess
from promptintern.evaluate import score
from promptintern.evaluate.common import exact_match


def test_nl2bash_bleu_matches_sacrebleu_and_records_signature():
    preds = ["ls -la", "find . -name '*.py'", "du -sh ~"]
    refs = ["ls -a", "find . -name '*.py'", "df -h"]
    result = score("nl2bash", preds, refs)
    assert abs(result["bleu"] - round(sacrebleu.corpus_bleu(preds, [refs], tokenize="13a").score, 4)) < 1e-9
    assert "tok:13a" in result["sacrebleu_signature"]
    assert abs(result["exact_match"] - 100 / 3) < 1e-3


def test_exact_match_normalizes_whitespace():
    assert exact_match(["ls   -la ", "pwd"], ["ls -la", "cd"]) == 50.0


def test_postprocess_takes_first_line_and_fenced_code():
    assert postprocess("nl2bash", "\n  ls -la \nrm -rf /") == "ls -la"
    assert postprocess("mbpp", "```python\ndef f():\n    return 1\n```\ntrailing") == "def f():\n    return 1"
    assert postprocess("mbpp", "def g(): pass") == "def g(): pass"
    assert score("mbpp", ["def f():\n    return 1"], ["```python\ndef f():\n    return 1\n```"])["exact_match"] == 100.0
