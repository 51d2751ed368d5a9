"""MBPP scores. Here: exact match of the extracted code (Pass@1 by execution is its own module).

The reference is the dataset's ``code`` (CRLF -> LF), compared after whitespace normalization.
"""

from __future__ import annotations

import re
from typing import Sequence

from promptintern.evaluate.common import exact_match

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:\n```|$)", re.DOTALL)


def extract(text: str) -> str:
    """The code inside the first fenced block, or the whole completion when there is no fence."""
    match = _FENCE.search(text)
    return (match.group(1) if match else text).strip()


def score(predictions: Sequence[str], references: Sequence[str]) -> dict:
    refs = [extract(r) for r in references]
    return {"metric": "exact_match", "exact_match": round(exact_match(predictions, refs), 4),
            "n": len(references)}
