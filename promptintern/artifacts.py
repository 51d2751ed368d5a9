"""Content-addressed artifact folders: ``<root>/<kind>/<key>/`` with a ``manifest.json``.

The key of a folder is a hash of everything its contents depend on (the inputs, the upstream
folders' keys, the library code that makes it, the versions of the heavy dependencies), so equal
keys mean equal contents and a folder can be reused by any run that asks for the same thing.

A folder is built in ``<root>/<kind>/.partial-<key>/`` and renamed into place only once complete,
with its manifest (inputs, file sizes and sha256, versions, wall time) written last. A folder
whose manifest is missing, unreadable, names another key, or disagrees with the files (deleted,
truncated or edited: every file's sha256 is checked) is not complete: it is a cache miss.

A build that fails leaves nothing at the final path. Its partial folder is removed too, unless it
holds resumable state (a training ``checkpoint/``, see ``RESUMABLE_STATE``): bad input fails the
same way on every rerun and a half-written shard is worth nothing, but an interrupted or
out-of-memory training run resumes from its last checkpoint.

``resource_errors(what, path)`` turns "disk full" and "out of memory" into a ``ResourceExhausted``
whose message says what ran out, during what, where, and what to change; the build wraps every
box in it, and the pipeline's boxes add what they know (which stage, which batch size).
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import importlib.util
import importlib.metadata
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

MANIFEST = "manifest.json"
# Entries of a partial folder that a rerun can resume from (promptintern.train's CHECKPOINT and
# CHECKPOINT_PREV, each a whole checkpoint): a failed build that holds one keeps its partial
# folder, every other failed build removes it.
RESUMABLE_STATE = ("checkpoint", "checkpoint.old")
# Dependencies whose version can change what an artifact holds.
TRACKED_PACKAGES = ("torch", "transformers", "peft", "llmlingua", "sacrebleu", "pyarrow", "tokenizers")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short sha256 of the canonical JSON form of ``obj`` (pydantic models included)."""
    text = json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def code_version(*modules: str) -> str:
    """Hash of the source of the given modules: a change to them changes every key they feed.

    The source is read from the module's file without importing it: a run whose boxes are all
    cached computes every key and should not pay for importing torch (3.4 s) to do it."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise ModuleNotFoundError(f"code_version: no Python source for module {name!r}")
        digest.update(name.encode())
        digest.update(Path(spec.origin).read_text(encoding="utf-8").encode())
    return digest.hexdigest()[:16]


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_table(folder: Path) -> dict[str, dict[str, Any]]:
    table = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != MANIFEST and not rel.startswith(".prefect"):
            table[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return table


def is_complete(folder: Path) -> bool:
    """True when the folder's manifest is readable, names this folder's key, and every listed file
    has its recorded size and sha256 (``integrity_problem`` says which check failed otherwise)."""
    return integrity_problem(folder) is None


def integrity_problem(folder: Path) -> str | None:
    """None for a complete folder; else which file failed which check (no manifest, invalid JSON,
    a manifest of another key, a missing, truncated or edited file), never an exception."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{manifest}: missing"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        files = data["files"]
        if data.get("key") != folder.name:
            return f"{manifest}: made for key {data.get('key')!r}, not {folder.name!r}"
        if not isinstance(files, dict):
            return f"{manifest}: 'files' is not a mapping"
        for rel, meta in files.items():
            path = folder / rel
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                return f"{manifest}: lists {rel!r}, outside the folder"
            if not path.is_file():
                return f"{path}: listed in the manifest, missing"
            if path.stat().st_size != meta["size"]:
                return f"{path}: {path.stat().st_size} bytes, the manifest says {meta['size']} (truncated or grown)"
            if sha256_file(path) != meta["sha256"]:
                return f"{path}: sha256 differs from the manifest's (edited)"
    except (OSError, UnicodeDecodeError) as exc:
        return f"{manifest}: unreadable ({exc})"
    except (ValueError, KeyError, TypeError) as exc:
        return f"{manifest}: not a valid manifest ({type(exc).__name__}: {exc})"
    return None


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


# ---------------------------------------------------------------------------------------------
# disk full, out of memory
# ---------------------------------------------------------------------------------------------

_DISK_FULL = {errno.ENOSPC: "ENOSPC", errno.EDQUOT: "EDQUOT"}
# torch's CPU allocator and CUDA report exhaustion as RuntimeError subclasses with these words
_OOM_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory")


class ResourceExhausted(RuntimeError):
    """The disk or the memory ran out. ``resource`` is "disk" or "memory"; the message says what
    ran out, during what, where, and what to change; the original error is its ``__cause__``."""

    def __init__(self, message: str, resource: str):
        super().__init__(message)
        self.resource = resource


def _disk_full_code(err: BaseException) -> str | None:
    if not isinstance(err, OSError):
        return None
    if err.errno in _DISK_FULL:
        return _DISK_FULL[err.errno]
    text = str(err)  # pyarrow's IOError carries the errno only in its text
    if "No space left on device" in text:
        return "ENOSPC"
    return "EDQUOT" if "Disk quota exceeded" in text else None


def _out_of_memory(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    torch = sys.modules.get("torch")  # never import torch just to look
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(err, oom):
        return True
    return isinstance(err, RuntimeError) and any(w in str(err).lower() for w in _OOM_WORDS)


def _mount_point(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def _free_space(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**20:.0f} MiB"
    except OSError:
        return "unknown"


@contextmanager
def resource_errors(what: str, path: str | Path | None = None, memory_hint: str = "") -> Iterator[None]:
    """Re-raise disk-full and out-of-memory errors as ``ResourceExhausted`` with a message that
    says what ran out while doing ``what`` (a phrase: "writing the stage 2 shard"), where
    (``path``, else the error's file name) and what to do: free space on the file system / follow
    ``memory_hint`` ("lower train.batch_size or train.max_seq_len"). Other errors pass untouched."""
    try:
        yield
    except ResourceExhausted:
        raise
    except BaseException as err:
        code = _disk_full_code(err)
        if code is not None:
            where = Path(path or err.filename or ".")
            mount = _mount_point(where)
            raise ResourceExhausted(
                f"disk full ({code}) while {what} to {where}: free space on {mount} "
                f"({_free_space(mount)} free now) and rerun", "disk") from err
        if _out_of_memory(err):
            hint = f": {memory_hint}" if memory_hint else ": free memory or use a smaller configuration"
            raise ResourceExhausted(f"out of memory during {what} ({type(err).__name__}){hint}",
                                    "memory") from err
        raise


def holds_resumable_state(work: Path) -> bool:
    return any((work / name).exists() for name in RESUMABLE_STATE)


class ArtifactStore:
    """The artifact root. ``build(kind, key)`` yields a work folder that becomes ``kind/key``."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def rel(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def resolve(self, rel: str) -> Path:
        return self.root / rel

    def complete(self, kind: str, key: str) -> Path | None:
        folder = self.path(kind, key)
        return folder if is_complete(folder) else None

    def partial_dir(self, kind: str, key: str) -> Path:
        """Where ``kind/key`` is built; stable across attempts, so long work can resume in it."""
        return self.root / kind / f".partial-{key}"

    @contextmanager
    def build(self, kind: str, key: str, inputs: dict[str, Any]) -> Iterator[Path]:
        """Build ``kind/key`` atomically: write into the yielded folder; on success it is renamed.

        On an exception nothing appears at the final path, and the partial folder is removed
        unless it holds resumable state (training checkpoints live there). Disk-full and
        out-of-memory errors arrive as ``ResourceExhausted``, saying that nothing was published.
        """
        final = self.path(kind, key)
        work = self.partial_dir(kind, key)
        start = time.time()
        try:
            with resource_errors(f"building {kind}/{key}", work):
                work.mkdir(parents=True, exist_ok=True)
                yield work
            with resource_errors(f"writing the manifest of {kind}/{key}", work):
                manifest = {
                    "kind": kind,
                    "key": key,
                    "inputs": _jsonable(inputs),
                    "versions": package_versions(),
                    "wall_seconds": round(time.time() - start, 3),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "files": _file_table(work),
                }
                tmp_manifest = work / (MANIFEST + ".tmp")
                tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True))
                os.replace(tmp_manifest, work / MANIFEST)
        except BaseException as err:
            if not holds_resumable_state(work):
                shutil.rmtree(work, ignore_errors=True)
            if isinstance(err, ResourceExhausted):
                kept = f"; {self.rel(work)} is kept to resume from" if work.exists() else ""
                err.args = (f"{err.args[0]}; nothing was published at {kind}/{key}{kept}",)
            raise
        if final.exists():  # a stale or concurrent copy: the complete one wins, else replace it
            if is_complete(final):
                shutil.rmtree(work)
                return
            shutil.rmtree(final)
        os.replace(work, final)
