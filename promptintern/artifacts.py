"""Content-addressed artifact folders: ``<root>/<kind>/<key>/`` with a ``manifest.json``.

The key of a folder is a hash of everything its contents depend on (the inputs, the upstream
folders' keys, the library code that makes it, the versions of the heavy dependencies), so equal
keys mean equal contents and a folder can be reused by any run that asks for the same thing.

A folder is built in ``<root>/<kind>/.partial-<key>/`` and renamed into place only once complete,
with its manifest (inputs, file sizes and sha256, versions, wall time) written last. A folder
whose manifest is missing or disagrees with the files is not complete: it is a cache miss.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

MANIFEST = "manifest.json"
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
    """Hash of the source of the given modules: a change to them changes every key they feed."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        module = importlib.import_module(name)
        digest.update(name.encode())
        digest.update(inspect.getsource(module).encode())
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
    """True when the folder's manifest exists and every listed file has its recorded size and hash."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    for rel, meta in files.items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
            return False
    return True


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


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

        On an exception the partial folder stays for a resume (training checkpoints live there)
        and nothing appears at the final path.
        """
        final = self.path(kind, key)
        work = self.partial_dir(kind, key)
        work.mkdir(parents=True, exist_ok=True)
        start = time.time()
        yield work
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
        if final.exists():  # a stale or concurrent copy: the complete one wins, else replace it
            if is_complete(final):
                shutil.rmtree(work)
                return
            shutil.rmtree(final)
        os.replace(work, final)
