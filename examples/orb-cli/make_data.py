"""Write this example's rows: requests to `orb`, a command-line tool that does not exist, and the
one command line that carries each out.

    python examples/orb-cli/make_data.py      # rewrites data/*.jsonl and data/unseen/*.jsonl (deterministic)

Why a made-up tool: its subcommand and option names (`stash`, `thaw`, `--seal`, `--clobber`, ...)
are arbitrary, so no model can guess them from a request; they are written only in the template
(`orb_reference.md`). This is the case PromptIntern is for: a template that carries what the answers
need. Every answer follows the reference: subcommand, its arguments, then its options in the order
the reference lists them. 1,500 rows (1,000 train / 200 dev / 300 test), no request twice.

``unseen.yaml`` is the same tool where the template must teach what no labeled row shows: four of
the eleven subcommands (``UNSEEN``) never appear in a training row; a request log of 1,000 queries
without answers (``data/unseen/unlabeled.jsonl``; its ``command`` column is kept only for a
diagnostic) and the dev and test rows use all eleven, each row marked ``unseen`` when its
subcommand is one of the four (seed 1; the rows of task.yaml are unchanged by it).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 0

PATHS = ["/var/log/app", "~/photos/2023", "/srv/db", "./reports", "/etc/nginx", "~/notes", "/data/lake",
         "/home/ana/thesis", "./build", "/opt/models", "~/music", "/mnt/scans"]
DIRS = ["/tmp/restore", "~/recovered", "/srv/old", "./out", "/mnt/usb"]
TAGS = ["weekly", "nightly", "prod", "finance", "q3", "legacy"]
HOSTS = ["nas.local", "backup1.lan", "eu-west.store", "cold.vault.io"]
DATES = ["2024-01-01", "2024-06-30", "2025-03-15", "2023-11-20"]
NAMES = ["taxes-2024", "final-draft", "old-logs", "snapshot-a"]


def archive_id(rng: random.Random) -> str:
    return f"arc-{rng.randint(1000, 9999)}"


# subcommand -> (arguments: [(kind, phrase-slot)], base phrases, options in the reference's order)
# an option: (flag, value kind or None, phrases; "{v}" is its value)
COMMANDS = {
    "stash": (["path"], ["Archive {path}", "Put {path} into the archive", "Back up {path}", "Stash {path}"], [
        ("--keep", "n", ["keeping the last {v} versions", "retain {v} generations", "hold on to {v} copies"]),
        ("--seal", None, ["encrypted", "with encryption", "and encrypt it"]),
        ("--squash", None, ["compressed", "and compress it", "with compression"]),
        ("--tag", "tag", ["tagged {v}", "with the label {v}", "labelled {v}"]),
    ]),
    "thaw": (["id"], ["Restore {id}", "Bring back {id} from the archive", "Unarchive {id}", "Recover {id}"], [
        ("--into", "dir", ["into {v}", "to the folder {v}", "placing it in {v}"]),
        ("--clobber", None, ["overwriting whatever is there", "replacing existing files", "even if files exist"]),
        ("--dry", None, ["as a dry run", "just showing what would happen", "without actually doing it"]),
    ]),
    "sweep": ([], ["Delete old archives", "Clean up the archive", "Prune archived items", "Remove stale archives"], [
        ("--older", "days", ["older than {v} days", "that are more than {v} days old", "past {v} days"]),
        ("--tag", "tag", ["tagged {v}", "with the label {v}", "labelled {v}"]),
        ("--dry", None, ["as a dry run", "just showing what would happen", "without actually doing it"]),
    ]),
    "peek": (["id"], ["Show what is inside {id}", "List the contents of {id}", "Look into {id}"], [
        ("--depth", "n", ["{v} levels deep", "down to depth {v}", "going {v} folders down"]),
        ("--sizes", None, ["with sizes", "showing file sizes", "including how big each file is"]),
    ]),
    "ledger": ([], ["List the archives", "Show every archived item", "Print the archive index"], [
        ("--tag", "tag", ["tagged {v}", "with the label {v}", "labelled {v}"]),
        ("--since", "date", ["since {v}", "made after {v}", "from {v} on"]),
        ("--json", None, ["as JSON", "in JSON format", "machine-readable as JSON"]),
    ]),
    "mirror": (["path", "host"], ["Replicate {path} to {host}", "Copy the archive of {path} to {host}",
                                  "Mirror {path} onto {host}"], [
        ("--lanes", "n", ["using {v} parallel streams", "over {v} connections at once", "with {v} lanes"]),
        ("--seal", None, ["encrypted", "with encryption", "and encrypt it"]),
    ]),
    "audit": (["id"], ["Verify {id}", "Check the integrity of {id}", "Audit {id}"], [
        ("--deep", None, ["thoroughly", "with a deep check", "byte by byte"]),
        ("--repair", None, ["and fix what is broken", "repairing any damage", "and mend it if needed"]),
    ]),
    "quota": ([], ["How much archive space is left?", "Show the storage quota", "Report archive usage"], [
        ("--human", None, ["in human-readable units", "in KB/MB/GB", "readably"]),
    ]),
    "pin": (["id"], ["Protect {id} from cleanup", "Pin {id}", "Make sure {id} is never swept"], []),
    "unpin": (["id"], ["Allow {id} to be cleaned up again", "Unpin {id}", "Stop protecting {id}"], []),
    "rename": (["id", "name"], ["Rename {id} to {name}", "Call {id} {name} from now on", "Give {id} the name {name}"],
               []),
}


def value(kind: str, rng: random.Random) -> str:
    return {"n": lambda: str(rng.randint(2, 9)), "tag": lambda: rng.choice(TAGS), "dir": lambda: rng.choice(DIRS),
            "days": lambda: str(rng.choice([7, 14, 30, 90, 365])), "date": lambda: rng.choice(DATES)}[kind]()


def row(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(list(COMMANDS))
    args, phrases, options = COMMANDS[name]
    slots = {"path": rng.choice(PATHS), "id": archive_id(rng), "host": rng.choice(HOSTS), "name": rng.choice(NAMES)}
    chosen = [o for o in options if rng.random() < 0.45]
    values = {flag: value(kind, rng) if kind else None for flag, kind, _ in chosen}
    base = rng.choice(phrases).format(**slots)
    spoken = [rng.choice(texts).format(v=values[flag]) for flag, _, texts in chosen]
    rng.shuffle(spoken)  # the request names them in any order; the command in the reference's
    request = ", ".join([base.rstrip("?.")] + spoken) + ("?" if base.endswith("?") else ".")
    command = " ".join(["orb", name] + [slots[a] for a in args]
                       + [part for flag, _, _ in chosen for part in ([flag] if values[flag] is None else [flag, values[flag]])])
    return request, command


UNSEEN = ("mirror", "audit", "ledger", "rename")  # unseen.yaml: in no training row (each with many requests)


def distinct_rows(rng: random.Random, n: int, keep=lambda command: True, taken: set | None = None) -> list[dict]:
    """``n`` rows whose command ``keep`` accepts, no request twice (nor one already in ``taken``)."""
    taken = set() if taken is None else taken
    rows = []
    while len(rows) < n:
        request, command = row(rng)
        if request not in taken and keep(command):
            taken.add(request)
            rows.append({"request": request, "command": command})
    return rows


def write_splits(out: Path, splits: dict[str, list[dict]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split, part in splits.items():
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for i, r in enumerate(part):
                fh.write(json.dumps({"id": f"{split}-{i}", **r}) + "\n")
    print(f"wrote {sum(map(len, splits.values()))} rows to {out}")


def main() -> None:
    rows = distinct_rows(random.Random(SEED), 1500)
    write_splits(HERE / "data", {"train": rows[:1000], "dev": rows[1000:1200], "test": rows[1200:]})

    rng, taken = random.Random(SEED + 1), set()
    labeled = distinct_rows(rng, 1000, lambda command: command.split()[1] not in UNSEEN, taken)
    log, dev, test = (distinct_rows(rng, n, taken=taken) for n in (1000, 200, 300))
    for r in dev + test:
        r["unseen"] = r["command"].split()[1] in UNSEEN
    write_splits(HERE / "data" / "unseen", {"train": labeled, "unlabeled": log, "dev": dev, "test": test})


if __name__ == "__main__":
    main()
