"""Task files: any task in one YAML / TOML file; the built-in benchmarks are such files too."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from promptintern.datasets import DataError, builtin_tasks, get_task
from promptintern.taskfile import BUILTIN_DIR, TaskFileError, read_task_file

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "unit-conversion" / "task.yaml"

BASE = """\
name: my-task
template:
  text: Answer with the capital city.
data:
  train: train.jsonl
  test: test.jsonl
  query: question
  output: answer
metric:
  name: exact_match
"""


def _rows(n: int, prefix: str = "") -> list[dict]:
    return [{"question": f"{prefix}capital of country {i}?", "answer": f"City {i}", "tests": [f"assert f() == {i}"]}
            for i in range(n)]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _write_jsonl(tmp_path / "train.jsonl", _rows(6))
    _write_jsonl(tmp_path / "test.jsonl", _rows(3, "test "))
    return tmp_path


def _task_file(folder: Path, text: str = BASE, name: str = "task.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_builtin_benchmarks_are_task_files():
    assert builtin_tasks() == ["mbpp", "nl2bash", "nl2f"]
    for name in builtin_tasks():
        task = get_task(name)
        assert Path(task.source) == BUILTIN_DIR / f"{name}.yaml"
        assert read_task_file(task.source).name == name
    nl2bash = get_task("nl2bash")
    assert [s.kind for s in nl2bash.template.sections] == ["instruction", "document"]
    assert nl2bash.format.render_query("list files") == "Task: list files\nCommand:"
    assert get_task("mbpp").score.__name__ == "scorer" and "descirption" in get_task("mbpp").template.text


def test_a_task_file_loads_rows_template_and_scores(folder):
    task = get_task(str(_task_file(folder)))
    rows = task.load(folder, "train")
    assert [r.id for r in rows[:2]] == ["train-0", "train-1"]  # no id column: the row number
    assert rows[1].query == "capital of country 1?" and rows[1].target == "City 1"
    assert rows[1].meta == {"tests": ["assert f() == 1"]}  # every other column is kept
    assert task.template.text == "Answer with the capital city." and task.splits == ("train", "test")
    scores = task.score(["City 0", "city 1", " City 2 "], task.load(folder, "test"))
    assert scores == {"metric": "exact_match", "exact_match": pytest.approx(200 / 3, abs=1e-3), "n": 3}


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_csv_and_parquet_rows_equal_the_jsonl_rows(folder, kind):
    rows = [{k: v for k, v in r.items() if k != "tests"} for r in _rows(6)]
    if kind == "csv":
        lines = ["question,answer"] + [f"\"{r['question']}\",{r['answer']}" for r in rows]
        (folder / "train.csv").write_text("\n".join(lines) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), folder / "train.parquet")
    other = get_task(str(_task_file(folder, BASE.replace("train.jsonl", f"train.{kind}"), f"{kind}.yaml")))
    plain = get_task(str(_task_file(folder)))
    assert [(r.query, r.target) for r in other.load(folder, "train")] == \
        [(r.query, r.target) for r in plain.load(folder, "train")]


def test_query_template_builds_the_query_from_columns(folder):
    _write_jsonl(folder / "train.jsonl", [{"city": "Paris", "tags": ["a", "b"], "answer": "France"}])
    text = BASE.replace("  query: question\n", '  query_template: "Where is {city}? Hints:\\n{tags}"\n')
    rows = get_task(str(_task_file(folder, text))).load(folder, "train")
    assert rows[0].query == "Where is Paris? Hints:\na\nb"


@pytest.mark.parametrize("text, expected", [
    (BASE.replace("  query: question", "  quer: question"),
     [r"task.yaml:7: data.quer: unknown key; allowed: .*output, output_template, query, query_template"]),
    (BASE.replace("metric:\n  name: exact_match\n", ""), [r"task.yaml: metric: Field required"]),  # no line: it is absent
    (BASE.replace("name: exact_match", "name: rouge"), [r"task.yaml:10: metric.name: Input should be 'exact_match'"]),
    (BASE.replace("name: exact_match", "name: python"), [r"metric: metric.callable is missing"]),
    (BASE.replace("name: exact_match", "name: exact_match\n  postprocess: last-line"),
     [r"task.yaml:11: metric.postprocess: 'last-line': allowed: strip, first-line, code-block"]),
    (BASE.replace("name: my-task", "name: My Task"), [r"task.yaml:1: name: String should match pattern"]),
    (BASE.replace("  test: test.jsonl\n", ""), [r"task.yaml:4: data: data.test is missing"]),
    (BASE.replace("  text: Answer with the capital city.", "  sections:\n    - kind: document\n      text: a\n      file: b.md"),
     [r"task.yaml:4: template.sections.0: a template section needs exactly one of text, file \(got text, file\)"]),
    (BASE.replace("  train: train.jsonl\n", "  train: train.jsonl\n  loader: my.mod:load\n"),
     [r"data: give files \(train, test\) or a loader, not both"]),
    ("name: [unclosed\n", [r"task.yaml:\d: not valid YAML"]),
    ("- a list\n", [r"task.yaml: expected a mapping of keys"]),
])
def test_a_bad_task_file_names_file_line_and_key(folder, text, expected):
    path = _task_file(folder, text)
    with pytest.raises(TaskFileError) as err:
        read_task_file(path)
    for pattern in expected:
        assert any(__import__("re").search(pattern, line) for line in str(err.value).splitlines()), str(err.value)
    assert str(path) in str(err.value)


def test_a_toml_task_file_works_and_its_errors_name_the_key(folder):
    toml = """\
    name = "my-task"
    [template]
    text = "Answer with the capital city."
    [data]
    train = "train.jsonl"
    test = "test.jsonl"
    query = "question"
    output = "answer"
    [metric]
    name = "bleu"
    """
    _write_jsonl(folder / "test.jsonl", [{"question": "q", "answer": "the old city of number {i} here"}])
    task = get_task(str(_task_file(folder, toml, "task.toml")))
    rows = task.load(folder, "test")
    assert task.score([rows[0].target], rows)["bleu"] == 100.0
    scores = task.score(["the old town of number {i} here"], rows)
    assert scores["metric"] == "bleu" and 0 < scores["bleu"] < 100 and "tok:13a" in scores["sacrebleu_signature"]
    with pytest.raises(TaskFileError, match=r"task2.toml: data.ouput: unknown key"):
        read_task_file(_task_file(folder, toml.replace('output = "answer"', 'ouput = "answer"'), "task2.toml"))


def test_bad_rows_and_files_name_the_file_and_line(folder):
    _write_jsonl(folder / "train.jsonl", [{"question": "q", "answer": "a"}, {"question": "q2"}])
    task = get_task(str(_task_file(folder)))
    with pytest.raises(DataError, match=r"train.jsonl:2: no column 'answer' \(the task file's data.output\)"):
        task.load(folder, "train")
    (folder / "rows.csv").write_text("question,answer\nq1,a1\nq2\n")
    csv_task = get_task(str(_task_file(folder, BASE.replace("train.jsonl", "rows.csv"), "c.yaml")))
    with pytest.raises(DataError, match=r"rows.csv:3: column 'answer' \(data.output\) is empty"):
        csv_task.load(folder, "train")
    missing = BASE.replace("  text: Answer with the capital city.", "  file: nowhere.md")
    with pytest.raises(TaskFileError, match=r"template.file: cannot read .*nowhere.md"):
        get_task(str(_task_file(folder, missing, "m.yaml")))
    with pytest.raises(DataError, match=r"unknown dataset 'nl2sql'; allowed: \['mbpp', 'nl2bash', 'nl2f'\] or a task file"):
        get_task("nl2sql")


def test_chrf_and_execution_metrics(folder):
    chrf = get_task(str(_task_file(folder, BASE.replace("name: exact_match", "name: chrf"), "chrf.yaml")))
    scores = chrf.score(["City 0", "City 1", "City 2"], chrf.load(folder, "test"))
    assert scores["chrf"] == 100.0 and scores["sacrebleu_signature"].startswith("nrefs:1")

    _write_jsonl(folder / "test.jsonl", [
        {"question": "return one", "answer": "def f():\n    return 1", "tests": ["assert f() == 1"]},
        {"question": "return two", "answer": "def f():\n    return 2", "tests": "assert f() == 2\nassert f() > 1"},
    ])
    text = BASE.replace("name: exact_match", "name: execution\n  tests: tests\n  postprocess: code-block")
    task = get_task(str(_task_file(folder, text, "exec.yaml")))
    rows = task.load(folder, "test")
    answers = [task.postprocess(text) for text in ("```python\ndef f():\n    return 1\n```", "def f():\n    return 3")]
    scores = task.score(answers, rows, {"timeout_s": 10})
    assert scores["metric"] == "pass@1" and scores["pass@1"] == 50.0 and scores["passed"] == 1
    assert scores["exact_match"] == 50.0 and scores["statuses"] == {"passed": 1, "failed": 1}


def test_a_python_metric_is_called_with_the_rows(folder, monkeypatch):
    (folder / "my_metric.py").write_text(textwrap.dedent("""\
        def score(predictions, examples):
            hits = sum(p.lower() == e.target.lower() for p, e in zip(predictions, examples))
            return {"metric": "caseless", "caseless": 100.0 * hits / len(examples)}

        def broken(predictions, examples):
            return {"value": 1}
        """))
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("my_metric", None)
    text = BASE.replace("name: exact_match", "name: python\n  callable: my_metric:score")
    task = get_task(str(_task_file(folder, text, "py.yaml")))
    scores = task.score(["city 0", "CITY 1", "x"], task.load(folder, "test"))
    assert scores == {"n": 3, "metric": "caseless", "caseless": pytest.approx(200 / 3)}
    bad = get_task(str(_task_file(folder, text.replace(":score", ":broken"), "bad.yaml")))
    with pytest.raises(ValueError, match=r"must return a dict with 'metric' naming its headline key"):
        bad.score(["x", "y", "z"], bad.load(folder, "test"))
    with pytest.raises(TaskFileError, match=r"cannot import 'no_such_module'"):
        get_task(str(_task_file(folder, text.replace("my_metric:score", "no_such_module:score"), "none.yaml")))


@pytest.mark.parametrize("select", ["fixed", "retrieve"])
def test_a_shot_pool_gives_the_shots(folder, tmp_path, select):
    from promptintern.config import RetrievalConfig
    from promptintern.pipeline import bank, prepare_dataset, read_shot_pool

    _write_jsonl(folder / "pool.jsonl", [{"question": f"pool question {i}?", "answer": f"P{i}"} for i in range(4)])
    text = BASE + f"shots:\n  pool: pool.jsonl\n  select: {select}\n"
    path = _task_file(folder, text, f"pool-{select}.yaml")
    data_out, bank_out = tmp_path / "ds", tmp_path / "bank"
    data_out.mkdir(), bank_out.mkdir()
    info = prepare_dataset(str(path), str(folder), None, "test", None, 0, data_out)
    assert info["pool_rows"] == 4 and info["shot_select"] == select
    stats = bank(data_out, 3, RetrievalConfig(), 0, bank_out)
    assert stats["shots_from"] == f"pool ({select})" and stats["pool_size"] == 4
    neighbors = np.load(bank_out / "test_neighbors.npy")
    assert neighbors.shape == (3, 3) and neighbors.max() < 4
    if select == "fixed":
        assert (neighbors == [0, 1, 2]).all()
    assert [r.id for r in read_shot_pool(data_out)] == ["pool-0", "pool-1", "pool-2", "pool-3"]


def test_every_missing_file_a_task_names_is_reported_before_anything_runs(folder, prefect_harness, tmp_path):
    from flows.dag import promptintern
    from promptintern.data import dataset_digest

    text = BASE.replace("  test: test.jsonl", "  test: tests/held-out.jsonl") + "shots:\n  pool: pool.jsonl\n"
    path = _task_file(folder, text, "missing.yaml")
    with pytest.raises(DataError) as err:
        dataset_digest(folder, str(path))
    message = str(err.value)
    # both missing files, each with the task file's line and key; no fetch hint for a user's task
    assert f"{path}:6: data.test: {folder / 'tests' / 'held-out.jsonl'} not found" in message
    assert f"{path}:12: shots.pool: {folder / 'pool.jsonl'} not found" in message
    assert "fetch" not in message and "relative to the task file" in message
    started = time.monotonic()
    with pytest.raises(DataError, match="held-out.jsonl not found"):  # the flow stops before its first box
        promptintern(preset="tiny", task=str(path), artifact_root=str(tmp_path / "artifacts"))
    assert not (tmp_path / "artifacts" / "datasets").exists() and time.monotonic() - started < 20
    # a built-in benchmark whose data was not fetched: the hint to fetch it
    with pytest.raises(DataError, match=r"data.train: .*nl2bash/split/train.jsonl not found[\s\S]*data fetch"):
        dataset_digest(tmp_path / "no-data", "nl2bash")


def test_a_task_files_k0_wins_over_the_preset_and_a_run_override_over_both(folder):
    from promptintern.config import preset

    assert preset("tiny").schedule.k0 == 2
    assert preset("tiny", {"dataset": str(EXAMPLE)}).schedule.k0 == 4  # the file says k0: 4
    assert preset("tiny", {"dataset": str(EXAMPLE), "schedule": {"k0": 3}}).schedule.k0 == 3
    silent = _task_file(folder, BASE, "silent.yaml")  # no shots.k0: the preset's
    assert preset("tiny", {"dataset": str(silent)}).schedule.k0 == 2
    # the built-in files carry the paper's k; the CPU presets keep their own
    assert preset("cpu-demo", {"dataset": "nl2bash"}).schedule.k0 == 2
    assert preset("cpu-demo", {"dataset": str(REPO / "promptintern" / "taskfiles" / "nl2bash.yaml")}).schedule.k0 == 2


def test_the_example_task_runs_end_to_end_on_the_tiny_model(prefect_harness, tmp_path):
    """examples/unit-conversion: one file, the DAG from rows to an internalized model and a score."""
    import pyarrow.parquet as pq

    from flows.dag import promptintern

    result = promptintern(preset="tiny", task=str(EXAMPLE.relative_to(REPO)), artifact_root=str(tmp_path))
    rows = {r["method"]: r for r in result["summary"]}
    assert rows["promptintern"]["metric"] == "exact_match" and rows["promptintern"]["prompt form"] == "query only"
    assert rows["promptintern"]["input tokens / query"] < rows["base-full-prompt"]["input tokens / query"] / 10
    dataset = next(d for d in (tmp_path / "datasets").iterdir() if d.is_dir() and not d.name.startswith("."))
    assert (dataset / "pool.jsonl").is_file() and json.loads((dataset / "info.json").read_text())["pool_rows"] == 8
    shards = [d for d in (tmp_path / "shards").iterdir() if d.is_dir() and not d.name.startswith(".")]
    stage1 = min(shards, key=lambda d: -pq.read_table(d / "shard.parquet").column("k")[0].as_py())
    shots = pq.read_table(stage1 / "shard.parquet").column("example_ids").to_pylist()
    # the task file's shots.k0 (4) wins over the tiny preset's schedule.k0 (2); fixed: the same for every row
    assert shots[0] == ["pool-3", "pool-2", "pool-1", "pool-0"] and all(s == shots[0] for s in shots)
    assert "Request: " in pq.read_table(stage1 / "shard.parquet").column("prompt")[0].as_py()
    # its python metric (unit_metric.py, imported from next to the task file) adds its own scores
    evals = json.loads((Path(result["run_dir"]) / "results.json").read_text())["eval_dirs"]
    metrics = json.loads((tmp_path / evals["promptintern"] / "metrics.json").read_text())
    assert {"answer_form", "unit_correct", "within_2pct"} <= set(metrics) and metrics["metric"] == "exact_match"


def test_each_section_kind_gets_its_own_compressor(tiny_model_dir, tmp_path):
    """compression.by_kind: the instruction stays verbatim, the document is compressed."""
    from promptintern.config import CompressionConfig
    from promptintern.pipeline import compress, prepare_dataset

    sections = (
        "  sections:\n"
        "    - kind: instruction\n"
        "      text: Answer with the capital city only, in one word, exactly as written in the list.\n"
        "    - kind: document\n"
        "      text: 'Capitals: France Paris; Spain Madrid; Italy Rome; Japan Tokyo; Peru Lima; Chile Santiago; "
        "Egypt Cairo; Kenya Nairobi; Canada Ottawa; Brazil Brasilia; India New Delhi; China Beijing.'\n")
    task = _task_file(tmp_path, BASE.replace("  text: Answer with the capital city.\n", sections))
    _write_jsonl(tmp_path / "train.jsonl", _rows(4))
    _write_jsonl(tmp_path / "test.jsonl", _rows(2))
    dataset = tmp_path / "ds"
    dataset.mkdir()
    prepare_dataset(str(task), str(tmp_path), None, "test", None, 0, dataset)
    instruction = "Answer with the capital city only, in one word, exactly as written in the list."
    out = tmp_path / "t"
    out.mkdir()
    stats = compress(dataset, 0.5, CompressionConfig(method="llmlingua", by_kind={"instruction": "none"}),
                     tiny_model_dir, out)
    text = (out / "template.txt").read_text()
    assert text.startswith(instruction + "\n\n") and len(text) < len(instruction) + 200
    kinds = {s["kind"]: s for s in stats["sections"]}
    assert kinds["instruction"]["method"] == "none"
    assert kinds["instruction"]["tokens_after"] == kinds["instruction"]["tokens_before"]
    assert kinds["document"]["method"] == "llmlingua"
    assert kinds["document"]["tokens_after"] < kinds["document"]["tokens_before"]
    assert stats["by_kind"] == {"instruction": "none"} and stats["rate_achieved"] < 1.0
