import hashlib

import pytest

from promptintern import data


def _mirror(tmp_path, content=b"hello\n"):
    mirror = tmp_path / "mirror"
    (mirror / "x").mkdir(parents=True)
    (mirror / "x" / "f.txt").write_bytes(content)
    return mirror


def test_fetch_copies_after_checking_sha256_and_is_idempotent(tmp_path, monkeypatch):
    spec = data.DataFile("x/f.txt", hashlib.sha256(b"hello\n").hexdigest(), 6, None, "x")
    monkeypatch.setattr(data, "FILES", (spec,))
    mirror, dest = _mirror(tmp_path), tmp_path / "dest"
    assert data.fetch(dest, mirror)[0].startswith("copied")
    assert (dest / "x" / "f.txt").read_bytes() == b"hello\n"
    assert data.fetch(dest, mirror)[0].startswith("ok")
    assert data.verify(dest) == []


def test_fetch_refuses_a_corrupt_mirror_and_leaves_nothing(tmp_path, monkeypatch):
    spec = data.DataFile("x/f.txt", hashlib.sha256(b"hello\n").hexdigest(), 6, None, "x")
    monkeypatch.setattr(data, "FILES", (spec,))
    mirror, dest = _mirror(tmp_path, b"tampered\n"), tmp_path / "dest"
    with pytest.raises(RuntimeError, match="does not match"):
        data.fetch(dest, mirror)
    assert list((dest / "x").iterdir()) == []  # no partial or temp file left behind


def test_missing_file_without_url_names_the_mirror(tmp_path, monkeypatch):
    spec = data.DataFile("x/g.txt", "0" * 64, 1, None, "x")
    monkeypatch.setattr(data, "FILES", (spec,))
    with pytest.raises(FileNotFoundError, match="--mirror"):
        data.fetch(tmp_path / "dest", tmp_path / "nowhere")
