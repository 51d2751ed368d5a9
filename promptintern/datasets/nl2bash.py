"""NL2Bash (Lin et al., LREC 2018): English description -> one-line bash command.

Files read from ``<data_dir>/nl2bash/split/{train,dev,test}.jsonl``, one object a line with
``id`` (0-based line index within the split), ``nl`` and ``cmd``: the standard 8,090 / 609 / 606
split of the official filter + split scripts (see ../shared/data/MANIFEST.txt).

The paper gives no NL2Bash template, so this one is ours: an instruction block plus a short
reference of the utilities the dataset uses most, long enough (~550 SmolLM2 tokens) that
compressing it is meaningful. Metric: corpus BLEU (see ``promptintern.evaluate``).
"""

from __future__ import annotations

from pathlib import Path

from promptintern.datasets.base import Example, Task, read_jsonl
from promptintern.prompts import PromptFormat, Template, TemplateSection

INSTRUCTION = """\
You are an expert Linux administrator who translates requests written in plain English into \
bash. Read the request after "Task:" and answer after "Command:" with exactly one line of bash \
that does what it asks, and nothing else: no explanation, no prompt sign, no quotes or code \
fences around it. Prefer standard GNU tools over scripting languages. Use the file names, \
patterns, users and sizes the request gives; otherwise use "." for the current directory. \
Chain commands with pipes, $(...) or xargs rather than temporary files, and quote patterns so \
that the shell does not expand them."""

DOCUMENT = """\
Reference of the utilities used most often:
- find PATH [tests] [actions]: walk a directory tree. Tests: -name PAT, -iname PAT, -type f|d, \
-size +N[kMG], -mtime -N (modified under N days ago), -user NAME, -perm MODE, -maxdepth N, -empty. \
Actions: -print0, -delete, -exec CMD {} \\; (once per file), -exec CMD {} + (batched).
- xargs [-0] [-n N] [-I {}] CMD: build command lines from standard input.
- grep [-r] [-i] [-l] [-v] [-c] [-o] [-E] PATTERN [FILE...]: search lines; -l lists matching \
files, -v inverts, -c counts.
- sed -i 's/OLD/NEW/g' FILE edits in place; awk '{print $N}' prints field N, -F sets the separator.
- sort [-n] [-r] [-u] [-k N]; uniq [-c]; head -n N; tail -n N; wc -l; cut -d SEP -f N; tr; tee.
- ls [-l] [-a] [-h] [-t] [-S]; du [-s] [-h]; df -h; cp [-r]; mv; rm [-rf]; mkdir -p; ln -s.
- chmod [-R] MODE FILE; chown [-R] USER[:GROUP] FILE; tar -czf OUT.tar.gz DIR; tar -xzf IN.tar.gz.
- ps aux; kill [-9] PID; ssh USER@HOST CMD; rsync -avz SRC DST.
- Shell: | pipes, > redirects, >> appends, 2>&1 merges stderr, && runs on success."""

TEMPLATE = Template(
    sections=(
        TemplateSection(kind="instruction", text=INSTRUCTION),
        TemplateSection(kind="document", text=DOCUMENT),
    )
)

FORMAT = PromptFormat(query_prefix="Task: ", answer_cue="\nCommand:", target_prefix=" ")

SPLITS = ("train", "dev", "test")


def split_path(data_dir: Path, split: str) -> Path:
    return data_dir / "nl2bash" / "split" / f"{split}.jsonl"


def load_split(data_dir: Path, split: str) -> list[Example]:
    return [
        Example(id=f"{split}-{obj['id']}", query=obj["nl"].strip(), target=obj["cmd"].strip())
        for obj in read_jsonl(split_path(data_dir, split), required=("id", "nl", "cmd"),
                              types={"id": (int, str), "nl": str, "cmd": str})
    ]


TASK = Task(
    name="nl2bash",
    template=TEMPLATE,
    format=FORMAT,
    splits=SPLITS,
    load_split=load_split,
    metric="bleu",
    default_k0=10,
    stop=("\n",),
    description="English -> one-line bash command (NL2Bash, standard split)",
    split_source=lambda data_dir, split: str(split_path(data_dir, split)),
)
