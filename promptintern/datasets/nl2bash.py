"""NL2Bash (Lin et al., LREC 2018): English description -> one-line bash command.

Files read from ``<data_dir>/nl2bash/split/{train,dev,test}.jsonl``, one object a line with
``id`` (0-based line index within the split), ``nl`` and ``cmd``: the standard 8,090 / 609 / 606
split of the official filter + split scripts (see ../shared/data/MANIFEST.txt).

The paper gives no NL2Bash template, so this one is ours: an instruction block plus a short
reference of the utilities the dataset uses most, long enough (~600 tokens) that compressing it
is meaningful. Metric: corpus BLEU (see ``promptintern.evaluate``).
"""

from __future__ import annotations

from pathlib import Path

from promptintern.datasets.base import Example, Task, read_jsonl
from promptintern.prompts import PromptFormat, Template, TemplateSection

INSTRUCTION = """\
You are an expert Linux system administrator who translates requests written in plain English \
into bash. Read the request after "Task:" and answer after "Command:" with exactly one line of \
bash that does what the request asks, and nothing else: no explanation, no comments, no prompt \
sign, no surrounding quotes or code fences. Prefer the standard GNU coreutils, findutils and \
grep/sed/awk over scripting languages. When the request names a file, directory, pattern, user \
or size, use exactly that value; when it does not, use a sensible placeholder such as "." for \
the current directory. Chain commands with pipes, command substitution or xargs rather than \
temporary files, and quote patterns so that the shell does not expand them."""

DOCUMENT = """\
Reference of the utilities used most often:
- find PATH [tests] [actions]: walk a directory tree. Tests: -name PATTERN, -iname PATTERN, \
-type f|d|l, -size +N[kMG], -mtime -N (modified less than N days ago), -mmin N, -user NAME, \
-perm MODE, -maxdepth N, -mindepth N, -empty, -newer FILE. Actions: -print, -print0, -delete, \
-exec CMD {} \\; (once per file), -exec CMD {} + (batched), -ls.
- xargs [-0] [-n N] [-I {}] CMD: build command lines from standard input; use -0 with find -print0.
- grep [-r] [-i] [-l] [-v] [-c] [-n] [-o] [-E] PATTERN [FILE...]: search lines; -r recursive, \
-l names of matching files, -v invert, -c count, -o only the match, -E extended regex.
- sed -i 's/OLD/NEW/g' FILE: edit in place; sed -n 'Np' prints line N; sed '/RE/d' deletes lines.
- awk '{print $N}' FILE: print field N; -F SEP sets the separator; awk 'NR==N' selects line N.
- sort [-n] [-r] [-u] [-k N] [-t SEP]; uniq [-c] [-d]; head -n N; tail -n N; wc -l|-w|-c; \
cut -d SEP -f N; tr 'a-z' 'A-Z'; tee FILE; nl; rev; column -t.
- ls [-l] [-a] [-h] [-t] [-S] [-r]; du [-s] [-h] [--max-depth=N]; df -h; stat FILE; file FILE.
- cp [-r] [-p] SRC DST; mv SRC DST; rm [-r] [-f]; mkdir -p DIR; ln -s TARGET LINK; touch FILE.
- chmod [-R] MODE FILE; chown [-R] USER[:GROUP] FILE; chgrp GROUP FILE.
- tar -czf OUT.tar.gz DIR (create), tar -xzf IN.tar.gz (extract), tar -tf (list); gzip, gunzip, \
zip -r OUT.zip DIR, unzip FILE.
- ps aux; pgrep NAME; kill [-9] PID; pkill NAME; top -b -n 1; uptime; whoami; hostname; date; \
ssh USER@HOST CMD; scp SRC USER@HOST:DST; rsync -avz SRC DST; curl -O URL; wget URL.
- Shell: $(CMD) substitutes output, | pipes, > redirects, >> appends, 2>&1 merges stderr, \
&& runs on success, ; sequences, "$VAR" expands a variable, ~ is the home directory."""

TEMPLATE = Template(
    sections=(
        TemplateSection(kind="instruction", text=INSTRUCTION),
        TemplateSection(kind="document", text=DOCUMENT),
    )
)

FORMAT = PromptFormat(query_prefix="Task: ", answer_cue="\nCommand:", target_prefix=" ")

SPLITS = ("train", "dev", "test")


def load_split(data_dir: Path, split: str) -> list[Example]:
    path = data_dir / "nl2bash" / "split" / f"{split}.jsonl"
    return [
        Example(id=f"{split}-{obj['id']}", query=obj["nl"].strip(), target=obj["cmd"].strip())
        for obj in read_jsonl(path, required=("id", "nl", "cmd"))
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
)
