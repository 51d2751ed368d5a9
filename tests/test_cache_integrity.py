"""Cache integrity: an artifact that was edited in place (same size, other bytes) or whose manifest
is itself broken is recomputed, never trusted and never crashed on.

(Deleted and truncated folders: tests/test_flow_e2e.py.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from promptintern.artifacts import MANIFEST, ArtifactStore, is_complete, sha256_file
from promptintern.config import preset
from test_flow_e2e import _task_states

# ---------------------------------------------------------------------------------------------
# the manifest check itself
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path) -> Path:
    store = ArtifactStore(tmp_path)
    with store.build("kind", "0123456789abcdef", {"x": 1}) as work:
        (work / "a.txt").write_text("hello")
        (work / "sub").mkdir()
        (work / "sub" / "b.bin").write_bytes(bytes(range(256)))
    assert store.complete("kind", "0123456789abcdef") is not None
    return store.path("kind", "0123456789abcdef")


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


BROKEN_MANIFESTS = {
    "invalid JSON": lambda f: (f / MANIFEST).write_text((f / MANIFEST).read_text()[:-20]),
    "empty file": lambda f: (f / MANIFEST).write_text(""),
    "not UTF-8": lambda f: (f / MANIFEST).write_bytes(b"\xff\xfe" + (f / MANIFEST).read_bytes()),
    "a JSON list": lambda f: (f / MANIFEST).write_text("[]"),
    "no files table": lambda f: (f / MANIFEST).write_text(json.dumps({**_manifest(f), "files": None})),
    "entry without sha256": lambda f: (f / MANIFEST).write_text(json.dumps(
        {**_manifest(f), "files": {"a.txt": {"size": 5}}})),
    "entry not an object": lambda f: (f / MANIFEST).write_text(json.dumps(
        {**_manifest(f), "files": {"a.txt": "hello"}})),
    "a path outside the folder": lambda f: (f / MANIFEST).write_text(json.dumps(
        {**_manifest(f), "files": {"../outside.txt": _manifest(f)["files"]["a.txt"]}})),
    "another key's manifest": lambda f: (f / MANIFEST).write_text(json.dumps({**_manifest(f), "key": "f" * 16})),
    "a directory": lambda f: ((f / MANIFEST).unlink(), (f / MANIFEST).mkdir()),
}


@pytest.mark.parametrize("case", sorted(BROKEN_MANIFESTS))
def test_a_broken_manifest_means_incomplete_never_an_exception(case, folder):
    from promptintern.artifacts import integrity_problem

    (folder.parent / "outside.txt").write_text("hello")  # what the escaping entry points at
    BROKEN_MANIFESTS[case](folder)
    assert is_complete(folder) is False
    assert str(folder / MANIFEST) in integrity_problem(folder)  # names the manifest and what is wrong


@pytest.mark.parametrize("edit", ["flip a byte", "same-size rewrite", "truncate", "delete"])
def test_an_edited_file_anywhere_in_the_folder_makes_it_incomplete(edit, folder):
    from promptintern.artifacts import integrity_problem

    path = folder / "sub" / "b.bin"
    data = bytearray(path.read_bytes())
    if edit == "flip a byte":
        data[100] ^= 0x01
        path.write_bytes(bytes(data))
    elif edit == "same-size rewrite":
        path.write_bytes(bytes(reversed(data)))
    elif edit == "truncate":
        path.write_bytes(bytes(data[:-1]))
    else:
        path.unlink()
    assert path.exists() is (edit != "delete")
    assert is_complete(folder) is False
    # and says which file failed which check
    said = {"flip a byte": "sha256 differs from the manifest's (edited)",
            "same-size rewrite": "sha256 differs from the manifest's (edited)",
            "truncate": "bytes, the manifest says", "delete": "listed in the manifest, missing"}[edit]
    assert integrity_problem(folder).startswith(f"{path}: ") and said in integrity_problem(folder)


def test_a_folder_moved_to_another_key_is_not_trusted(folder):
    moved = folder.parent / ("f" * 16)
    shutil.copytree(folder, moved)
    assert is_complete(folder) and not is_complete(moved)


# ---------------------------------------------------------------------------------------------
# the flow: edited artifacts are rebuilt, downstream reuses what is still valid
# ---------------------------------------------------------------------------------------------


def _run(cfg, root: Path) -> dict[str, list[str]]:
    from flows.dag import promptintern

    state = promptintern(config=cfg, artifact_root=str(root), return_state=True)
    state.result()
    return _task_states(state.state_details.flow_run_id)


def _only(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def built(prefect_harness, tiny_data_dir, tmp_path_factory):
    """A small complete run: two stages (tau 1 then 0: no compressor needed), k 1-0."""
    root = tmp_path_factory.mktemp("integrity")
    cfg = preset("tiny", {"data_dir": str(tiny_data_dir), "train_subset": 8,
                          "schedule": {"num_stages": 2, "k0": 1},
                          "eval": {"test_subset": 2, "baseline_full_prompt": False, "baseline_direct": False, "baseline_query_only": False}})
    states = _run(cfg, root)
    assert all(s == "Completed" for names in states.values() for s in names)
    return cfg, root


def _recomputed(states: dict[str, list[str]]) -> set[str]:
    return {name for name, names in states.items() if "Completed" in names and name != "report"}


def test_an_edited_adapter_weight_is_retrained_not_trusted(built, caplog):
    cfg, root = built
    weights = sorted(root.glob("adapters/*/adapter/adapter_model.safetensors"))
    assert len(weights) == 2
    target = weights[0]
    folder = target.parents[1]
    recorded = json.loads((folder / MANIFEST).read_text())["files"]["adapter/adapter_model.safetensors"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x40  # a weight's bit, past the header: the file still loads fine
    target.write_bytes(bytes(data))
    assert target.stat().st_size == recorded["size"] and sha256_file(target) != recorded["sha256"]

    with caplog.at_level("WARNING"):
        states = _run(cfg, root)
    assert _recomputed(states) == {"train-stage"}
    assert states["train-stage"].count("Completed") == 1  # only the edited stage
    # the run says why the box ran again: which file failed which check
    assert f"rejected cached adapters/{folder.name}, rebuilding it: {target}: sha256 differs" in caplog.text
    assert is_complete(folder)
    # retrained to the same bytes it had (training is deterministic), not the edited ones
    assert sha256_file(target) == recorded["sha256"]


def test_an_edited_template_is_recompressed_not_trusted(built):
    cfg, root = built
    template = _only(root, "templates/*/template.txt")
    original = template.read_text(encoding="utf-8")
    template.write_text(original.replace("expert", "EXPERT", 1), encoding="utf-8")
    assert len(template.read_bytes()) == len(original.encode())

    states = _run(cfg, root)
    assert _recomputed(states) == {"compress-template"}
    assert template.read_text(encoding="utf-8") == original
    assert is_complete(template.parent)


@pytest.mark.parametrize("kind, task", [("banks", "build-retrieval-bank"), ("datasets", "load-dataset")])
def test_a_corrupt_manifest_is_a_cache_miss(built, kind, task):
    cfg, root = built
    # two of each: the training side's (no test rows) and the scored side's; break either one
    folders = sorted(p.parent for p in root.glob(f"{kind}/*/{MANIFEST}"))
    assert len(folders) == 2, folders
    folder = folders[0]
    (folder / MANIFEST).write_text('{"kind": "' + kind + '", "files": {')  # invalid JSON
    states = _run(cfg, root)
    assert _recomputed(states) == {task}
    assert is_complete(folder)
    assert json.loads((folder / MANIFEST).read_text())["key"] == folder.name


def test_a_corrupt_prefect_record_is_not_a_crash(built):
    """The record beside the artifact is Prefect's; garbage there must not fail the run."""
    cfg, root = built
    folder = _only(root, "merged/*/.prefect-result").parent
    (folder / ".prefect-result").write_text("{not json")
    states = _run(cfg, root)
    assert states["merge-adapter"] in (["Completed"], ["Cached"])
    assert is_complete(folder)
