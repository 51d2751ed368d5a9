import json

import pytest

from promptintern.artifacts import ArtifactStore, is_complete, stable_hash
from promptintern.config import RunConfig


def test_stable_hash_is_canonical_and_sensitive():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash(RunConfig()) == stable_hash(RunConfig())
    assert stable_hash(RunConfig()) != stable_hash(RunConfig(seed=1))


def test_build_is_atomic_and_manifest_checks_contents(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.build("kind", "key1", {"x": 1}) as work:
        (work / "a.txt").write_text("hello")
        assert not store.path("kind", "key1").exists()  # nothing at the final path until done
    folder = store.complete("kind", "key1")
    assert folder is not None and (folder / "a.txt").read_text() == "hello"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["inputs"] == {"x": 1} and "torch" in manifest["versions"]
    (folder / "a.txt").write_text("hellO")  # edited: same size, different hash
    assert not is_complete(folder)
    (folder / "a.txt").write_text("hel")  # truncated
    assert not is_complete(folder)


def test_failed_build_leaves_no_final_folder(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError):
        with store.build("kind", "key2", {}) as work:
            (work / "partial.txt").write_text("half")
            raise RuntimeError("boom")
    assert not store.path("kind", "key2").exists()
    assert store.complete("kind", "key2") is None
