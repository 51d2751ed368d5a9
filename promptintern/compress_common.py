"""What every template compressor shares: the text segments it works on, one loaded model per
process, and llmlingua's ``PromptCompressor`` made to load offline.

``promptintern.compress`` dispatches to the backends (``compress_llmlingua2``,
``compress_selective_context``, ``compress_api``); they and it import these from here, never
from each other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Segment:
    """A piece of template text and whether a compressor may drop tokens from it."""

    text: str
    compress: bool


_COMPRESSORS: dict[object, tuple[object, threading.Lock]] = {}
_COMPRESSORS_LOCK = threading.Lock()


def cached_compressor(key: object, load: Callable[[], object]) -> tuple[object, threading.Lock]:
    """One loaded compressor per ``key`` per process (loading the model is the slow part), with a
    lock for its calls. Every method keeps its models here, so clearing ``_COMPRESSORS`` resets all."""
    with _COMPRESSORS_LOCK:
        if key not in _COMPRESSORS:
            _COMPRESSORS[key] = (load(), threading.Lock())
        return _COMPRESSORS[key]


class _TokenCounter:
    """Stands in for the tiktoken encoding llmlingua uses only to count tokens (fix 1 of
    ``promptintern.compress``'s docstring)."""

    def __init__(self) -> None:
        self.tokenizer = None  # set once PromptCompressor has loaded the model's tokenizer

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids


def offline_prompt_compressor(model_dir: str, hardware=None, **options):
    """llmlingua's ``PromptCompressor`` on a local folder, without its tiktoken download (fix 1 of
    ``promptintern.compress``'s docstring), on ``hardware`` (a ``promptintern.device.Hardware``; None:
    the CPU in fp32)."""
    from types import SimpleNamespace
    from unittest import mock

    import llmlingua.prompt_compressor as upstream

    counter = _TokenCounter()
    # llmlingua's own module-level reference to tiktoken is swapped for the duration of __init__ only
    offline_tiktoken = SimpleNamespace(encoding_for_model=lambda _model_name: counter)
    with mock.patch.object(upstream, "tiktoken", offline_tiktoken):
        if hardware is not None and hardware.kind != "cpu":
            options["model_config"] = {**options.get("model_config", {}), "dtype": hardware.torch_dtype}
        compressor = upstream.PromptCompressor(model_name=model_dir, device_map=hardware.device if hardware else "cpu",
                                               **options)
    counter.tokenizer = compressor.tokenizer
    compressor.model.eval()
    return compressor
