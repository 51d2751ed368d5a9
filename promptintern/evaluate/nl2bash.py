"""NL2Bash scores: corpus BLEU and exact match.

BLEU convention (one, fixed): sacrebleu ``corpus_bleu`` with its default ``13a`` tokenizer, one
reference per command, default exponential smoothing; the signature is stored with every score
because the tokenizer alone moves NL2Bash BLEU by ~2x (DESIGN.md). Exact match compares after
whitespace normalization.
"""

from __future__ import annotations

from typing import Sequence

from promptintern.evaluate.common import exact_match

BLEU_TOKENIZE = "13a"


def extract(text: str) -> str:
    """A completion's first non-empty line is the command."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def score(predictions: Sequence[str], references: Sequence[str]) -> dict:
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize=BLEU_TOKENIZE)
    result = bleu.corpus_score(list(predictions), [list(references)])
    return {
        "metric": "bleu",
        "bleu": round(result.score, 4),
        "exact_match": round(exact_match(predictions, references), 4),
        "sacrebleu_signature": str(bleu.get_signature()),
        "n": len(references),
    }
