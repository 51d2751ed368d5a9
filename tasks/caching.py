"""How every pipeline task caches: content-addressed folders that hold their own cache record.

A task's key hashes its parameters (upstream folders are named by their own keys, so the chain is
content-addressed), the source of the library modules it runs, and the tracked package versions.
The output folder is ``<root>/<kind>/<key>/`` and Prefect's cache record is written *inside* it
(``<kind>/<key>/.prefect-result`` under result storage = the artifact root): deleting a folder
deletes its record, so only that task recomputes. A folder that exists but fails its manifest
check (truncated, edited, half-written) is removed before Prefect looks, so the record inside can
never vouch for a broken artifact.

``materialize`` builds a folder under a lock of its own (``<kind>/.partial-<key>.lock``, beside the
folder, released by the OS if the builder dies): the Prefect lock in ``tasks.steps`` already makes a
second run wait and report ``Cached``, but only for runs that share its lock directory; this one
holds for every process that shares the artifact root, so two builders never write into the same
``.partial-<key>`` folder (a training run resumes from the checkpoints there).
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

from promptintern.artifacts import ArtifactStore, code_version, integrity_problem, package_versions, stable_hash
from tasks.locking import flocked

RECORD = ".prefect-result"
# Where the store lives does not change what it holds; data_dir always travels with a content
# digest of the files (data_digest), which is what the key needs.
NOT_IN_KEY = ("root", "data_dir")


def artifact_key(kind: str, modules: tuple[str, ...], parameters: dict[str, Any]) -> str:
    inputs = {k: v for k, v in parameters.items() if k not in NOT_IN_KEY}
    # the hardware a box ran on, by what changes its numbers: the device kind and dtype, never the
    # GPU index; nothing for the CPU in fp32 (``promptintern.device.Hardware.key_material``)
    hardware = inputs.pop("hardware", None)
    if hardware:
        from promptintern.device import Hardware

        material = Hardware(**hardware).key_material()
        if material:
            inputs["hardware"] = material
    return stable_hash({"kind": kind, "inputs": inputs, "code": code_version(*modules),
                        "versions": package_versions()})


def folder_cache_key(kind: str, modules: tuple[str, ...]) -> Callable[[Any, dict[str, Any]], str]:
    """A ``cache_key_fn`` that evicts a broken folder and points Prefect's record into it."""

    def cache_key(_context, parameters: dict[str, Any]) -> str:
        key = artifact_key(kind, modules, parameters)
        folder = Path(parameters["root"]) / kind / key
        problem = integrity_problem(folder) if folder.exists() else None
        if problem is not None:  # say why the box runs again, then clear the way for it
            _logger().warning("rejected cached %s/%s, rebuilding it: %s", kind, key, problem)
            shutil.rmtree(folder)
        return f"{kind}/{key}/{RECORD}"

    return cache_key


_IMPORTS = threading.Lock()


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The task run's logger (the UI shows it) when there is one, else this module's."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def import_model_libraries() -> None:
    """Resolve transformers' lazy names once, in one thread, before a box builds anything.

    transformers resolves its names on first access, and two task threads doing that at once race
    (seen in a fresh flow-run process: "ImportError: cannot import name 'AutoTokenizer' from
    'transformers'" while two stage shards were submitted together). Done here, on a cache miss
    only, not at import: a run whose every box is cached never imports torch (3.4 s here)."""
    with _IMPORTS:
        from transformers import (  # noqa: F401
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForTokenClassification,
            AutoTokenizer,
            DynamicCache,
            PreTrainedTokenizerFast,
        )


def materialize(kind: str, modules: tuple[str, ...], parameters: dict[str, Any],
                build: Callable[[Path], Any]) -> str:
    """Return ``kind/key`` relative to the root, building it with ``build(work_dir)`` if needed.

    One builder per key at a time: a second one waits, then finds the folder complete."""
    store = ArtifactStore(parameters["root"])
    key = artifact_key(kind, modules, parameters)
    with flocked(store.root / kind / f".partial-{key}.lock", remove=True):
        if store.complete(kind, key) is None:
            import_model_libraries()
            with store.build(kind, key, {k: v for k, v in parameters.items() if k not in NOT_IN_KEY}) as work:
                build(work)
    return f"{kind}/{key}"


FAILURE_RECORD = re.compile(r"[0-9a-f]{32}")


def clear_failure_records(root: str | Path, since: float) -> list[Path]:
    """Remove the exception pickles Prefect wrote at the top of the artifact root since ``since``.

    Why: a task that fails with result persistence on has its exception written to its result
    storage under a random 32-hex name (``prefect.states.exception_to_failed_state``, 3.9), and our
    result storage is the artifact root, because each box's cache record lives inside its own
    folder (delete the folder, and only that box runs again). Nothing reads those pickles: the
    failure reaches the caller in memory. A run calls this when it ends, so a failed run leaves
    the root as it found it, apart from resumable training state."""
    removed = []
    for path in Path(root).iterdir() if Path(root).is_dir() else ():
        if FAILURE_RECORD.fullmatch(path.name) and path.is_file() and path.stat().st_mtime >= since - 1:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
