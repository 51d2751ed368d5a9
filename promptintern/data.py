"""The ``data`` command: fill a data directory with the benchmark files, checked by sha256.

    python -m promptintern.data fetch                       # from ../shared/data, else download
    python -m promptintern.data fetch --mirror /path/to/mirror --dest data
    python -m promptintern.data verify --dest data

Each file is copied from a local mirror (a folder with the same layout, e.g. ../shared/data) or,
when no mirror has it and a canonical URL exists, downloaded; either way it lands only after its
sha256 matches. The NL2Bash split files were produced by the official 2017 filter + split scripts
(see the mirror's MANIFEST.txt): no canonical URL serves them, so they need a mirror.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from promptintern.artifacts import sha256_file

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO_ROOT / "data"
DEFAULT_MIRROR = REPO_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data directory
    sha256: str
    size: int
    url: str | None = None
    dataset: str = ""


_GR = "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/"
FILES: tuple[DataFile, ...] = (
    DataFile("mbpp/mbpp.jsonl", "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f",
             563743, _GR + "mbpp.jsonl", "mbpp"),
    DataFile("mbpp/sanitized-mbpp.json", "ca95deaa9a01ef0a6f439f88bcf0dd3db3563d22f22aad6cae04ebb9a8d8c8e9",
             255053, _GR + "sanitized-mbpp.json", "mbpp"),
    DataFile("nl2bash/LICENSE", "4ac5c8b7fb1d1fccfa52916749674d67b2024c76616fed89db7f67a976056750",
             1075, None, "nl2bash"),
    DataFile("nl2bash/split/train.jsonl", "c90f2d0c386c5c74e538de0e6e352e8286128cc5c8eb5c42d339d730123f1a36",
             1244857, None, "nl2bash"),
    DataFile("nl2bash/split/dev.jsonl", "92b6eff6f520612cb7c63de138f5e862c6e8f0337f763b8fcf47bfcbf2bf1852",
             94346, None, "nl2bash"),
    DataFile("nl2bash/split/test.jsonl", "3c3a81e58f8ea3127b4c6cc27f4c58d69668c91e578a9614cd89b90f2235e250",
             95186, None, "nl2bash"),
)


def _install(src_fetch, spec: DataFile, dest: Path) -> None:
    """Write to a temp file beside the target, check the digest, then rename into place."""
    target = dest / spec.path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            src_fetch(out)
        got = sha256_file(Path(tmp))
        if got != spec.sha256:
            raise RuntimeError(f"{spec.path}: sha256 {got} does not match the expected {spec.sha256}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch(dest: Path = DEFAULT_DEST, mirror: Path | None = DEFAULT_MIRROR,
          datasets: tuple[str, ...] = ()) -> list[str]:
    """Make every wanted file present and verified in ``dest``; return what was done per file."""
    report = []
    for spec in FILES:
        if datasets and spec.dataset not in datasets:
            continue
        target = dest / spec.path
        if target.is_file() and target.stat().st_size == spec.size and sha256_file(target) == spec.sha256:
            report.append(f"ok       {spec.path}")
            continue
        source = mirror / spec.path if mirror else None
        if source is not None and source.is_file():
            _install(lambda out, s=source: shutil.copyfileobj(s.open("rb"), out), spec, dest)
            report.append(f"copied   {spec.path}  (from {source})")
        elif spec.url:
            def download(out, url=spec.url):
                with urllib.request.urlopen(url, timeout=60) as resp:
                    shutil.copyfileobj(resp, out)
            _install(download, spec, dest)
            report.append(f"fetched  {spec.path}  (from {spec.url})")
        else:
            raise FileNotFoundError(
                f"{spec.path}: not in the mirror {mirror} and it has no download URL; point "
                "--mirror (or PROMPTINTERN_DATA_MIRROR) at a folder with the official split files"
            )
    return report


def verify(dest: Path = DEFAULT_DEST) -> list[str]:
    bad = []
    for spec in FILES:
        target = dest / spec.path
        if not target.is_file():
            bad.append(f"missing  {spec.path}")
        elif sha256_file(target) != spec.sha256:
            bad.append(f"corrupt  {spec.path}")
    return bad


def dataset_digest(data_dir: str | Path, dataset: str) -> str:
    """sha256 over what a task's rows are made from (what a cache key needs): its task file and
    every file it names (template files, data, shot pool), plus a built-in benchmark's files as
    they are in ``data_dir``. A named file that is missing is an error here, before anything runs
    (``promptintern.taskfile.check_files``: every missing file, with its key and line)."""
    from promptintern.taskfile import check_files, files_digest

    check_files(dataset, data_dir)
    digest = hashlib.sha256()
    for spec in FILES:
        path = Path(data_dir) / spec.path
        if spec.dataset == dataset and path.is_file():
            digest.update(spec.path.encode())
            digest.update(sha256_file(path).encode())
    for name, sha in sorted(files_digest(dataset, data_dir).items()):
        digest.update(f"{name}={sha}".encode())
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m promptintern.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("fetch", "verify"))
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="data directory to fill")
    parser.add_argument("--mirror", type=Path,
                        default=Path(os.environ.get("PROMPTINTERN_DATA_MIRROR", DEFAULT_MIRROR)),
                        help="local folder with the same layout (default: ../shared/data)")
    parser.add_argument("--dataset", action="append", default=[], help="only this dataset (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        for line in fetch(args.dest, args.mirror, tuple(args.dataset)):
            print(line)
        return 0
    bad = verify(args.dest)
    for line in bad:
        print(line)
    print("all files verified" if not bad else f"{len(bad)} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

