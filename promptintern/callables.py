"""``package.module:function`` strings, as task files name their loaders, metrics and postprocessors."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from promptintern.datasets.base import TaskFileError


def import_callable(dotted: str, what: str, base: Path | None = None) -> Callable:
    """``package.module:function``, imported as usual or, failing that, from ``base`` (the task
    file's folder: a metric module may sit next to its task file)."""
    import sys

    module_name, _, attr = dotted.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        if base is None or not (base / (module_name.replace(".", "/") + ".py")).is_file():
            raise TaskFileError(f"{what}: cannot import {module_name!r} ({err}); is its folder on PYTHONPATH?") from None
        sys.path.insert(0, str(base))
        try:
            module = importlib.import_module(module_name)
        finally:
            sys.path.remove(str(base))
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise TaskFileError(f"{what}: {module_name!r} has no callable {attr!r}")
    return fn
