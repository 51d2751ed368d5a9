"""Task files: any recurring prompt declared in one small YAML or TOML file, no code.

A task file says what the DAG needs to know about a task: the template (the part every prompt
repeats), how a prompt looks, where the rows are, where few-shot examples come from and how an
answer is scored. The three built-in benchmarks are task files of this same form
(``promptintern/taskfiles/*.yaml``); ``promptintern.datasets.get_task`` reads them all.

.. code-block:: yaml

    name: unit-conversion                  # lowercase letters, digits, dashes
    description: English request -> converted value with its unit
    template:                              # text, file, or sections
      sections:
        - kind: instruction                # instruction | document: each kind can get its own
          file: instructions.md            #   compressor (compression.sections in the run config)
        - kind: document
          file: conversion_table.md
          compress: true                   # false: kept verbatim at every rate
    prompt:
      query_prefix: "Request: "
      answer_cue: "\\nAnswer:"
      target_prefix: " "
      stop: ["\\n"]
      chat: auto                           # the model's chat template when it has one (on | off)
    data:                                  # JSONL, CSV or Parquet (by extension, or data.format)
      train: data/train.jsonl              # paths relative to this file; "{data_dir}" is the
      dev: data/dev.jsonl                  #   run's data_dir (the built-in benchmarks use it)
      test: data/test.jsonl
      unlabeled: data/requests.jsonl       # optional: queries nobody has answered (a request log)
      query: request                       # column names (or query_template: "{a} in {b}")
      output: answer
      id: id                               # optional; else the row number
    shots:
      pool: data/shots.jsonl               # optional fixed pool; else retrieval from train rows
      select: fixed                        # fixed: the pool's first k for every row; retrieve: BLEU
    metric:
      name: exact_match                    # exact_match | bleu | chrf | execution | python
      postprocess: first-line              # strip | first-line | code-block | module:function

``name: execution`` runs ``<answer>`` then the row's ``tests`` column (a list of statements or
one string) after its optional ``setup`` column in ``promptintern.sandbox``: Pass@1.
``name: python`` calls ``callable`` (``package.module:function``) with ``(predictions,
examples)``; it returns a dict with ``"metric"`` naming its headline key and that key's value.
A format the columns cannot describe takes ``data.loader`` (``module:function``, called with
``(data_dir, split)``, returning ``Example`` rows) and ``data.splits`` instead of files.

Every error names the file, the line (YAML) and the key: ``task.yaml:12: data.query: ...``.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from promptintern.artifacts import sha256_file
from promptintern.callables import import_callable
from promptintern.datasets.base import UNLABELED, DataError, Example, Task, TaskFileError, read_jsonl
from promptintern.prompts import PromptFormat, SectionKind, Template, TemplateSection

BUILTIN_DIR = Path(__file__).resolve().parent / "taskfiles"
SUFFIXES = (".yaml", ".yml", ".toml")
POSTPROCESSORS = ("strip", "first-line", "code-block")
METRICS = ("exact_match", "bleu", "chrf", "execution", "python")
_DOTTED = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
FILE_SPLITS = ("train", "dev", "test", UNLABELED)  # the splits a task file names files for (data.<split>)
_COLUMN = re.compile(r"\{([A-Za-z_][\w ]*)\}")  # a column named in query_template / output_template


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_of(obj: BaseModel, names: tuple[str, ...], where: str) -> None:
    given = [n for n in names if getattr(obj, n) is not None]
    if len(given) != 1:
        raise ValueError(f"{where} needs exactly one of {', '.join(names)}"
                         + (f" (got {', '.join(given)})" if given else ""))


def _dotted(value: str | None) -> str | None:
    if value is not None and not _DOTTED.fullmatch(value):
        raise ValueError(f"{value!r}: give a Python callable as package.module:function")
    return value


class SectionSpec(_Strict):
    kind: SectionKind = Field("instruction", description="instruction | document")
    text: str | None = None
    file: str | None = Field(None, description="a text file, relative to the task file")
    compress: bool = Field(True, description="false: the section stays verbatim at every rate")

    @model_validator(mode="after")
    def _text_or_file(self) -> SectionSpec:
        _one_of(self, ("text", "file"), "a template section")
        return self


class TemplateSpec(_Strict):
    text: str | None = None
    file: str | None = None
    sections: tuple[SectionSpec, ...] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> TemplateSpec:
        _one_of(self, ("text", "file", "sections"), "template")
        if self.sections is not None and not self.sections:
            raise ValueError("template.sections is empty: give at least one section")
        return self


class PromptSpec(_Strict):
    query_prefix: str = ""
    answer_cue: str = Field("\nAnswer:", description="ends every prompt; the target follows it")
    target_prefix: str = Field(" ", description="glued before every target, e.g. the space after 'Answer:'")
    examples_header: str = "Examples:"
    separator: str = "\n\n"
    stop: tuple[str, ...] = Field((), description="generation stops at the first of these strings")
    chat: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: through the model's chat template when it has one (system = template, "
                            "user = examples + query); off: plain text; on: require a chat template")


class DataSpec(_Strict):
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    unlabeled: str | None = Field(
        None, description="queries nobody has answered yet (a request log; the output column may be absent): "
                          "train.distill.unlabeled_queries takes its queries from here when given, else from "
                          "the training rows past train_subset")
    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    query: str | None = Field(None, description="the query column")
    query_template: str | None = Field(None, description="the query built from columns: '{a} ({b})'")
    output: str | None = Field(None, description="the output column: what the model must produce")
    output_template: str | None = None
    id: str | None = Field(None, description="an id column; default: the row number")
    strip: bool = Field(True, description="strip surrounding whitespace from query and output")
    loader: str | None = Field(None, description="package.module:function(data_dir, split) -> rows")
    splits: tuple[str, ...] | None = Field(None, description="with loader: the split names it knows")

    _validate_loader = field_validator("loader")(classmethod(lambda cls, v: _dotted(v)))

    @model_validator(mode="after")
    def _files_or_loader(self) -> DataSpec:
        files = [s for s in FILE_SPLITS if getattr(self, s) is not None]
        if self.loader is not None:
            if files:
                raise ValueError(f"data: give files ({', '.join(files)}) or a loader, not both")
            if not self.splits:
                raise ValueError("data.splits: a loader needs the names of the splits it loads, e.g. [train, test]")
            return self
        for split in ("train", "test"):
            if getattr(self, split) is None:
                raise ValueError(f"data.{split} is missing: give the {split} rows (a .jsonl, .csv or .parquet file)")
        _one_of(self, ("query", "query_template"), "data")
        _one_of(self, ("output", "output_template"), "data")
        return self

    @property
    def split_names(self) -> tuple[str, ...]:
        if self.loader is not None:
            return tuple(self.splits or ())
        return tuple(s for s in FILE_SPLITS if getattr(self, s) is not None)


class ShotsSpec(_Strict):
    pool: str | None = Field(None, description="a fixed pool of examples (same columns as the data)")
    select: Literal["fixed", "retrieve"] = Field(
        "fixed", description="with a pool: fixed = its first k rows for every query; retrieve = the k most similar")
    k0: int = Field(5, ge=0, description="the task's number of shots at stage 1: wins over the preset's "
                                         "schedule.k0 (a run's --set schedule.k0 wins over both)")


class MetricSpec(_Strict):
    name: Literal["exact_match", "bleu", "chrf", "execution", "python"]
    postprocess: str = Field("strip", description=f"one of {POSTPROCESSORS} or package.module:function")
    callable: str | None = Field(None, description="name=python: package.module:function(predictions, examples)")
    tests: str | None = Field(None, description="name=execution: the column holding each row's tests")
    setup: str | None = Field(None, description="name=execution: a column of code run before the tests")

    _validate_callable = field_validator("callable")(classmethod(lambda cls, v: _dotted(v)))

    @field_validator("postprocess")
    @classmethod
    def _known_postprocess(cls, value: str) -> str:
        if value not in POSTPROCESSORS and not _DOTTED.fullmatch(value):
            raise ValueError(f"{value!r}: allowed: {', '.join(POSTPROCESSORS)}, or package.module:function")
        return value

    @model_validator(mode="after")
    def _what_the_metric_needs(self) -> MetricSpec:
        if self.name == "python" and self.callable is None:
            raise ValueError("metric.callable is missing: name=python scores with package.module:function")
        if self.name == "execution" and self.tests is None:
            raise ValueError("metric.tests is missing: name=execution runs each row's tests column")
        if self.name not in ("python",) and self.callable is not None:
            raise ValueError(f"metric.callable is only read with name=python (name is {self.name!r})")
        return self


class TaskFile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="lowercase letters, digits and dashes")
    description: str = ""
    template: TemplateSpec
    prompt: PromptSpec = PromptSpec()
    data: DataSpec
    shots: ShotsSpec = ShotsSpec()
    metric: MetricSpec


# ---------------------------------------------------------------------------------------------
# reading a task file, with the line of every key for error messages
# ---------------------------------------------------------------------------------------------


def _yaml_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Key path -> 1-based line, for every key and list item of a composed YAML document."""
    lines: dict[tuple, int] = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = prefix + (key.value,)
            lines[path] = key.start_mark.line + 1
            lines.update({p: n for p, n in _yaml_lines(value, path).items() if p != path})
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_yaml_lines(item, prefix + (i,)))
    return lines


def _parse(path: Path) -> tuple[Any, dict[tuple, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskFileError(f"{path}: task file not found") from None
    except UnicodeDecodeError as err:
        raise TaskFileError(f"{path}: not UTF-8 ({err.reason})") from None
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text), {}
        except tomllib.TOMLDecodeError as err:
            raise TaskFileError(f"{path}: not valid TOML ({err})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TaskFileError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    return data, (_yaml_lines(node) if node is not None else {})


def _error_lines(path: Path, err: ValidationError, lines: dict[tuple, int]) -> str:
    out = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        key = ".".join(str(x) for x in loc) or "(top level)"
        # the key's own line; for an absent key its parent's (the top level has none worth naming)
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            msg = f"unknown key{'; allowed: ' + ', '.join(allowed) if allowed else ''}"
        out.append(f"{path}{':' + str(line) if line else ''}: {key}: {msg}")
    return "\n".join(out)


def _allowed_keys(parent: tuple) -> list[str]:
    model: type[BaseModel] | None = TaskFile
    for part in parent:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        model = next((a for a in (annotation, *getattr(annotation, "__args__", ()))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None and annotation is not None:  # tuple[SectionSpec, ...] | None
            for arg in getattr(annotation, "__args__", ()):
                inner = next((a for a in getattr(arg, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)), None)
                model = model or inner
    return sorted(model.model_fields) if model else []


def read_task_file(path: str | Path) -> TaskFile:
    """Parse and validate a task file; every problem is reported with file:line: key."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise TaskFileError(f"{path}: a task file ends in {', '.join(SUFFIXES)}")
    data, lines = _parse(path)
    if not isinstance(data, dict):
        raise TaskFileError(f"{path}: expected a mapping of keys (name, template, data, metric, ...), "
                            f"got {type(data).__name__}")
    try:
        return TaskFile.model_validate(data)
    except ValidationError as err:
        raise TaskFileError(_error_lines(path, err, lines)) from None


# ---------------------------------------------------------------------------------------------
# from a task file to a Task
# ---------------------------------------------------------------------------------------------


def resolve_path(raw: str, base: Path, data_dir: str | Path | None) -> Path:
    """A path of a task file: ``{data_dir}`` expanded, relative paths against the file's folder."""
    if raw.startswith("{data_dir}"):  # the run's data_dir, as given (relative: to the working directory)
        return Path(data_dir if data_dir is not None else "data") / raw.removeprefix("{data_dir}").lstrip("/")
    path = Path(raw).expanduser()
    return path if path.is_absolute() else base / path


def read_rows(path: Path, fmt: str = "auto", hint: str = "") -> list[tuple[str, dict]]:
    """(where, row) pairs of a JSONL, CSV or Parquet file; ``where`` is ``file:line`` (or row)."""
    kind = fmt if fmt != "auto" else {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv",
                                      ".parquet": "parquet", ".pq": "parquet"}.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown data format {path.suffix!r}; use .jsonl, .csv or .parquet "
                        f"(or set data.format)")
    if kind == "jsonl":  # read_jsonl reports a missing file, bad bytes and bad lines with file:line
        out = []
        rows = list(read_jsonl(path, hint=hint))
        with path.open("rb") as fh:
            numbers = [n for n, raw in enumerate(fh, start=1) if raw.strip()]
        for n, obj in zip(numbers, rows):
            out.append((f"{path}:{n}", obj))
        return out
    if not path.is_file():
        raise DataError(f"{path}: file not found" + (f" ({hint})" if hint else ""))
    if kind == "csv":
        try:
            with path.open(encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                return [(f"{path}:{reader.line_num}", dict(row)) for row in reader]
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not UTF-8 ({err.reason})") from None
        except csv.Error as err:
            raise DataError(f"{path}: not valid CSV ({err})") from None
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    return [(f"{path} (row {i + 1})", row) for i, row in enumerate(rows)]


def _text(where: str, row: dict, column: str, role: str) -> str:
    if column not in row:
        raise DataError(f"{where}: no column {column!r} (the task file's {role}); the row has {sorted(row)}")
    value = row[column]
    if value is None:
        raise DataError(f"{where}: column {column!r} ({role}) is empty")
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _fill(where: str, template: str, row: dict, role: str) -> str:
    def value(match: re.Match) -> str:
        column = match.group(1)
        if column not in row:
            raise DataError(f"{where}: {role} names column {column!r}, which the row lacks; it has {sorted(row)}")
        v = row[column]
        return "\n".join(map(str, v)) if isinstance(v, list) else str(v)

    return _COLUMN.sub(value, template)


def _has_output(row: dict, data: DataSpec) -> bool:
    if data.output_template:
        return all(row.get(c) is not None for c in _COLUMN.findall(data.output_template))
    return row.get(data.output) is not None


def load_rows(spec: TaskFile, path: Path, split: str, hint: str = "") -> list[Example]:
    """The rows of one data file as Examples; every other column is kept in ``meta``. ``hint``:
    what to do about a missing file."""
    data = spec.data
    rows = []
    for n, (where, row) in enumerate(read_rows(path, data.format, hint)):
        query = _fill(where, data.query_template, row, "data.query_template") if data.query_template \
            else _text(where, row, data.query, "data.query")
        if split == UNLABELED and not _has_output(row, data):  # a query log: nobody has answered yet
            output = ""
        else:
            output = _fill(where, data.output_template, row, "data.output_template") if data.output_template \
                else _text(where, row, data.output, "data.output")
        ident = _text(where, row, data.id, "data.id") if data.id else str(n)
        if data.strip:
            query, output = query.strip(), output.strip()
        meta = {k: v for k, v in row.items() if k not in (data.query, data.output, data.id)}
        rows.append(Example(id=f"{split}-{ident}", query=query, target=output, meta=meta))
    return rows


def _template(spec: TaskFile, base: Path, data_dir: str | Path | None) -> Template:
    def read(raw: str, key: str) -> str:
        path = resolve_path(raw, base, data_dir)
        try:
            return path.read_text(encoding="utf-8")
        except OSError as err:
            raise TaskFileError(f"{key}: cannot read {path} ({err.strerror or err})") from None

    t = spec.template
    if t.sections is None:
        text = t.text if t.text is not None else read(t.file, "template.file")
        return Template.from_text(text)
    return Template(sections=tuple(
        TemplateSection(kind=s.kind, text=s.text if s.text is not None else read(s.file, f"template.sections.{i}.file"),
                        compressible=s.compress)
        for i, s in enumerate(t.sections)))


def build_task(spec: TaskFile, source: Path, data_dir: str | Path | None = None) -> Task:
    """The ``Task`` a task file declares. ``data_dir`` fills ``{data_dir}`` in its paths."""
    from promptintern.evaluate import make_postprocess, make_scorer

    base = source.parent
    data = spec.data
    if data.loader is not None:
        loader = import_callable(data.loader, f"{source}: data.loader", base)
        load_split = loader
        split_source = getattr(loader, "source", None) or (  # a loader may say where a split's rows come from
            lambda d, split: f"{source}: data.loader {data.loader} (split {split!r}, data_dir {d})")
    else:
        hint = FETCH_HINT if base.resolve() == BUILTIN_DIR.resolve() else ""  # a user's own files: no fetch

        def load_split(d: Path, split: str) -> list[Example]:
            return load_rows(spec, resolve_path(getattr(data, split), base, d), split, hint)

        split_source = lambda d, split: str(resolve_path(getattr(data, split), base, d))  # noqa: E731
    pool = None
    if spec.shots.pool is not None:
        pool = lambda d: load_rows(spec, resolve_path(spec.shots.pool, base, d), "pool")  # noqa: E731
    p = spec.prompt
    return Task(
        name=spec.name,
        template=_template(spec, base, data_dir),
        format=PromptFormat(query_prefix=p.query_prefix, answer_cue=p.answer_cue, target_prefix=p.target_prefix,
                            examples_header=p.examples_header, separator=p.separator),
        splits=data.split_names,
        load_split=load_split,
        metric=spec.metric.name,
        default_k0=spec.shots.k0,
        stop=tuple(p.stop),
        description=spec.description,
        split_source=split_source,
        postprocess=make_postprocess(spec.metric.postprocess, f"{source}: metric.postprocess", base),
        score=make_scorer(spec.metric, f"{source}: metric", base),
        load_pool=pool,
        shot_select=spec.shots.select,
        chat=p.chat,
        source=str(source),
    )


def builtin_path(name: str) -> Path | None:
    path = BUILTIN_DIR / f"{name}.yaml"
    return path if path.is_file() else None


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def task_source(name_or_path: str) -> Path:
    """The task file behind a built-in name or a path; unknown names list what exists."""
    builtin = builtin_path(name_or_path) if "/" not in name_or_path and not name_or_path.endswith(SUFFIXES) else None
    if builtin is not None:
        return builtin
    if name_or_path.endswith(SUFFIXES) or "/" in name_or_path:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise TaskFileError(f"{path}: task file not found")
        return path.resolve()
    raise DataError(f"unknown dataset {name_or_path!r}; allowed: {builtin_names()} or a task file "
                    f"(path ending in {', '.join(SUFFIXES)})")


FETCH_HINT = "run `python -m promptintern.data fetch` first"


def check_files(name_or_path: str, data_dir: str | Path | None) -> None:
    """Every file a task names (data splits, shot pool, template files) exists, checked before
    anything runs; a DataError lists every missing one with the task file's line and key. The
    hint to fetch the data is given for the built-in benchmarks only: a user's own task names
    files of its own."""
    source = task_source(name_or_path)
    spec = read_task_file(source)
    lines = _parse(source)[1]
    named = [(("data", split), getattr(spec.data, split)) for split in FILE_SPLITS]
    named += [(("shots", "pool"), spec.shots.pool), (("template", "file"), spec.template.file)]
    named += [(("template", "sections", i, "file"), s.file) for i, s in enumerate(spec.template.sections or ())]
    missing = []
    for key, raw in named:
        if raw and not resolve_path(raw, source.parent, data_dir).is_file():
            line = next((lines[key[:n]] for n in range(len(key), 0, -1) if key[:n] in lines), None)
            missing.append(f"{source}{':' + str(line) if line else ''}: {'.'.join(map(str, key))}: "
                           f"{resolve_path(raw, source.parent, data_dir)} not found")
    if missing:
        builtin = source.resolve().parent == BUILTIN_DIR.resolve()
        hint = f"{FETCH_HINT} (data folder: {data_dir})" if builtin else \
            "paths are relative to the task file's folder, or absolute"
        raise DataError("\n".join(missing) + f"\n{hint}")


def files_digest(name_or_path: str, data_dir: str | Path | None) -> dict[str, str]:
    """sha256 of the task file and of every file it names that exists (template files, data, pool):
    what a cache key of the rows needs for a task file."""
    source = task_source(name_or_path)
    spec = read_task_file(source)
    named = [getattr(spec.data, split) for split in FILE_SPLITS] + [spec.shots.pool, spec.template.file]
    named += [s.file for s in spec.template.sections or ()]
    out = {"task_file": sha256_file(source)}
    for raw in filter(None, named):
        path = resolve_path(raw, source.parent, data_dir)
        if path.is_file():
            out[raw] = sha256_file(path)
    if spec.data.loader is not None:  # a user's loader module's own source
        module = importlib.util.find_spec(spec.data.loader.partition(":")[0])
        if module is not None and module.origin and Path(module.origin).is_file():
            out[spec.data.loader] = sha256_file(Path(module.origin))
    return out
