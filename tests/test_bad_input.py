"""Bad input gets a clear error and changes nothing.

Every case goes through a public entry point (``preset`` / ``variant_config`` / a pipeline box
inside ``ArtifactStore.build`` / the whole flow) and asserts two things: the message names the
key or file (file:line for data) and what is allowed, and the artifact store holds neither a
folder at the failing box's final path nor a ``.partial-*`` folder for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_nl2bash
from promptintern import pipeline
from promptintern.artifacts import ArtifactStore
from promptintern.config import CompressionConfig, LoraSettings, TrainSettings, preset
from promptintern.datasets import DataError
from promptintern.models import ModelError, build_tiny_model, load_tokenizer, model_fingerprint, prepare_model
from promptintern.schedule import PATTERNS, Schedule, StageSpec
from promptintern.variants import variant_config


def folders(root: Path, kind: str) -> list[str]:
    """Every folder under ``root/kind``, partial folders included (lock files are not folders)."""
    return sorted(p.name for p in (root / kind).iterdir() if p.is_dir()) if (root / kind).is_dir() else []


def fails_cleanly(root: Path, kind: str, build, error=ValueError, match: str = "") -> str:
    """Run ``build(work)`` as the box ``kind``; it must raise ``error`` matching ``match`` and leave
    nothing of ``kind`` behind (no final folder, no partial folder). Returns the message."""
    store = ArtifactStore(root)
    with pytest.raises(error, match=match) as err:
        with store.build(kind, "k" * 16, {}) as work:
            build(work)
    assert folders(root, kind) == [], f"{kind}: left {folders(root, kind)}"
    assert store.complete(kind, "k" * 16) is None
    return str(err.value)


# ---------------------------------------------------------------------------------------------
# configuration: unknown names, impossible schedules (raised before anything runs)
# ---------------------------------------------------------------------------------------------

CONFIG_CASES = {
    # case: (overrides, phrases the message must contain: the key, the bad value / allowed values)
    "unknown compressor": ({"compression": {"method": "zip"}},
                           ["compression.method", "'llmlingua'", "'selective-context'", "'none'"]),
    "unknown schedule pattern": ({"schedule": {"pattern": "cosine"}},
                                 ["schedule.pattern", "'linear'", "'exponential'", "'inverse-exponential'"]),
    "unknown dataset": ({"dataset": "nl2sql"}, ["dataset", "'nl2bash'", "'mbpp'", "'nl2f'"]),
    "zero stages": ({"schedule": {"num_stages": 0}}, ["schedule.num_stages", "greater than or equal to 1"]),
    "tau0 above 1": ({"schedule": {"tau0": 1.5}}, ["schedule.tau0", "less than or equal to 1"]),
    "tau0 below 0": ({"schedule": {"tau0": -0.1}}, ["schedule.tau0", "greater than or equal to 0"]),
    "tau_floor above 1": ({"schedule": {"tau_floor": 2}}, ["schedule.tau_floor", "less than or equal to 1"]),
    "tau_floor above tau0": ({"schedule": {"tau0": 0.3, "tau_floor": 0.5}},
                             ["schedule.tau_floor=0.5 is above schedule.tau0=0.3", "can only fall"]),
    "negative k0": ({"schedule": {"k0": -1}}, ["schedule.k0", "greater than or equal to 0"]),
    # k cannot be typed in per stage: stages are computed, so a rising k cannot be expressed
    "explicit per-stage list": ({"schedule": {"stages": [{"tau": 0.5, "k": 1}, {"tau": 0.2, "k": 4}]}},
                                ["schedule.stages: unknown key", "allowed under schedule: "]),
    "unknown key": ({"schedul": {"k0": 2}}, ["schedul: unknown key; did you mean schedule?",
                                             "allowed under the top level: chat, compression,"]),
    "misspelt nested key": ({"train": {"lrr": 0.1}}, ["train.lrr: unknown key; did you mean train.lr?",
                                                      "allowed under train: adaptive, batch_size,"]),
    "unknown test split": ({"eval": {"test_split": "validation"}},
                           ["eval.test_split='validation'", "'nl2bash'", "['train', 'dev', 'test']"]),
    "zero train_subset": ({"train_subset": 0}, ["train_subset", "greater than or equal to 1"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_names_the_key_and_the_allowed_values(case):
    overrides, phrases = CONFIG_CASES[case]
    with pytest.raises(ValueError) as err:
        preset("tiny", overrides)
    for phrase in phrases:
        assert phrase in str(err.value), (phrase, str(err.value))
    # the same error through the variant entry point (what the flow and the sweep call)
    with pytest.raises(ValueError) as err:
        variant_config("promptintern", "tiny", overrides)
    assert phrases[0] in str(err.value)


def test_a_bad_input_at_the_command_line_prints_one_message(tmp_path):
    """No traceback, no message repeated by each layer of Prefect: the message, where the log is,
    exit status 2. The log file keeps the traceback."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-m", "flows.dag", "--preset", "tiny", "--set", "train.lrr=0.1",
                          "--artifact-root", str(tmp_path / "artifacts")], cwd=repo, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr + run.stdout
    lines = run.stderr.strip().splitlines()
    assert lines[0] == "error: invalid configuration:" and "did you mean train.lr?" in lines[1]
    assert len(lines) == 3 and lines[2].startswith("(the full log: ") and "--debug" in lines[2]
    log = Path(lines[2].removeprefix("(the full log: ").split(";")[0])
    assert "Traceback" in log.read_text() and "ConfigError" in log.read_text()
    assert not (tmp_path / "artifacts").exists()  # refused before anything ran
    debug = subprocess.run([sys.executable, "-m", "flows.dag", "--preset", "tiny", "--set", "train.lrr=0.1",
                            "--debug"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_bad_row_inside_a_flow_is_one_closing_message(tmp_path):
    import subprocess
    import sys

    (tmp_path / "train.jsonl").write_text('{"question": "q1", "answer": "a"}\n{"question": "q2"}\n')
    (tmp_path / "test.jsonl").write_text('{"question": "q1", "answer": "a"}\n')
    (tmp_path / "task.yaml").write_text("name: bad\ntemplate:\n  text: Answer.\ndata:\n  train: train.jsonl\n"
                                        "  test: test.jsonl\n  query: question\n  output: answer\n"
                                        "metric:\n  name: exact_match\n")
    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-m", "flows.dag", "--preset", "tiny", "--task", str(tmp_path / "task.yaml"),
                          "--artifact-root", str(tmp_path / "artifacts")], cwd=repo, capture_output=True,
                         text=True, timeout=300)
    out = run.stdout + run.stderr
    message = "train.jsonl:2: no column 'answer' (the task file's data.output)"
    assert run.returncode == 2 and "Traceback" not in out and len(out.splitlines()) <= 10, out
    # said by the box that failed, and once at the end
    assert out.count(message) == 2 and f"error: {tmp_path / message}" in out
    # and leaves no residue: no exception pickle, lock file or empty folder; the root it made is gone
    assert not (tmp_path / "artifacts").exists(), sorted((tmp_path / "artifacts").rglob("*"))


@pytest.mark.parametrize("call, phrases", [
    (lambda: preset("huge"), ["unknown preset 'huge'", "['cpu-demo', 'cpu-repro', 'gpu-1b', 'gpu-7b', 'paper', 'tiny']"]),
    (lambda: variant_config("promptintern-turbo", "tiny"),
     ["unknown variant 'promptintern-turbo'", "'direct-no-template'", "'promptintern-tau-floor-0.3'"]),
    (lambda: variant_config("promptintern", "huge"), ["unknown preset 'huge'", "allowed"]),
], ids=["preset", "variant", "variant-preset"])
def test_unknown_preset_and_variant_list_the_known_ones(call, phrases):
    with pytest.raises(ValueError) as err:
        call()
    for phrase in phrases:
        assert phrase in str(err.value)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_no_valid_schedule_lets_k_or_tau_rise(pattern):
    """k and tau are computed from one monotone shape, so every schedule the config accepts falls
    (this is why "k rising across stages" has no config spelling to reject)."""
    for num_stages in (1, 2, 3, 5, 8):
        for k0 in (0, 1, 5, 10):
            for steepness in (0.1, 3.0, 12.0):
                for tau0, floor in ((1.0, 0.0), (0.8, 0.3), (0.5, 0.5)):
                    stages = Schedule(pattern=pattern, num_stages=num_stages, k0=k0, steepness=steepness,
                                      tau0=tau0, tau_floor=floor).stages()
                    assert [s.stage for s in stages] == list(range(1, num_stages + 1))
                    assert all(a.k >= b.k and a.tau >= b.tau for a, b in zip(stages, stages[1:]))
                    assert stages[0].k == k0 and 0.0 <= stages[-1].tau <= stages[0].tau <= 1.0


# ---------------------------------------------------------------------------------------------
# data: the load-dataset box
# ---------------------------------------------------------------------------------------------


def _edit_line(path: Path, lineno: int, text: str | bytes) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[lineno - 1] = (text if isinstance(text, bytes) else text.encode()) + b"\n"
    path.write_bytes(b"".join(lines))


DATA_CASES = {
    # case: (how the data dir is broken, prepare_dataset kwargs, regex the message must match)
    "malformed JSONL line": (lambda d: _edit_line(d / "nl2bash/split/train.jsonl", 3, '{"id": 2, "nl": "x",'),
                             {}, r"nl2bash/split/train.jsonl:3: not valid JSON"),
    "row missing a field": (lambda d: _edit_line(d / "nl2bash/split/test.jsonl", 2, '{"id": 1, "nl": "x"}'),
                            {}, r"nl2bash/split/test.jsonl:2: no column 'cmd' \(the task file's data.output\); "
                                r"the row has \['id', 'nl'\]"),
    "null field": (lambda d: _edit_line(d / "nl2bash/split/train.jsonl", 5, '{"id": 4, "nl": null, "cmd": "ls"}'),
                   {}, r"train.jsonl:5: column 'nl' \(data.query\) is empty"),
    "line not an object": (lambda d: _edit_line(d / "nl2bash/split/train.jsonl", 1, '["ls", "-a"]'),
                           {}, r"train.jsonl:1: expected a JSON object, got list"),
    "not UTF-8": (lambda d: _edit_line(d / "nl2bash/split/train.jsonl", 4, b'{"id": 3, "nl": "\xff", "cmd": "ls"}'),
                  {}, r"train.jsonl:4: not UTF-8"),
    "empty split": (lambda d: (d / "nl2bash/split/test.jsonl").write_text("\n"),
                    {}, r"nl2bash/split/test.jsonl: the 'test' split of dataset 'nl2bash' is empty \(0 rows\)"),
    "missing split file": (lambda d: (d / "nl2bash/split/train.jsonl").unlink(),
                           {}, r"nl2bash/split/train.jsonl: file not found \(run `python -m promptintern.data fetch`"),
    "train_subset larger than the split": (
        lambda d: None, {"train_subset": 33},
        r"train_subset=33 is larger than the 'train' split of 'nl2bash' \(32 rows\): set train_subset to at "
        r"most 32, or to null"),
    "test_subset larger than the split": (
        lambda d: None, {"test_subset": 9},
        r"eval.test_subset=9 is larger than the 'test' split of 'nl2bash' \(8 rows\): set eval.test_subset to at most 8"),
    "unknown test split": (lambda d: None, {"test_split": "validation"},
                           r"eval.test_split='validation': dataset 'nl2bash' has no such split; allowed: "
                           r"\['train', 'dev', 'test'\]"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_names_file_and_line_and_leaves_nothing(case, tmp_path):
    break_it, kwargs, pattern = DATA_CASES[case]
    data_dir = write_nl2bash(tmp_path / "data")
    break_it(data_dir)
    args = {"train_subset": None, "test_split": "test", "test_subset": None, **kwargs}
    fails_cleanly(tmp_path / "artifacts", "datasets", lambda out: pipeline.prepare_dataset(
        "nl2bash", str(data_dir), args["train_subset"], args["test_split"], args["test_subset"], 0, out),
        DataError, pattern)


def test_an_empty_mbpp_split_names_the_task_id_range(tmp_path):
    (tmp_path / "data" / "mbpp").mkdir(parents=True)
    row = {"task_id": 601, "text": "add one", "code": "def f(x): return x + 1", "test_list": ["assert f(1) == 2"]}
    (tmp_path / "data" / "mbpp" / "mbpp.jsonl").write_text(json.dumps(row) + "\n")
    fails_cleanly(tmp_path / "artifacts", "datasets", lambda out: pipeline.prepare_dataset(
        "mbpp", str(tmp_path / "data"), None, "test", None, 0, out), DataError,
        r"mbpp/mbpp.jsonl \(no task_id in 11-510\): the 'test' split of dataset 'mbpp' is empty")


# ---------------------------------------------------------------------------------------------
# models: paths, tokenizers, context length
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, says", [
    (lambda tmp: str(tmp / "no" / "such" / "model"), "does not exist"),
    (lambda tmp: str((tmp / "empty").mkdir() or tmp / "empty"), "has no config.json"),
    (lambda tmp: str((tmp / "file.bin").write_bytes(b"x") and tmp / "file.bin"), "is not a folder"),
], ids=["missing", "no-config", "a-file"])
def test_a_model_path_that_is_not_a_model_is_refused_before_work(make, says, tmp_path):
    spec = make(tmp_path)
    allowed = "model must be one of ['smollm2-135m', 'tiny'], a local Hugging Face model folder"
    with pytest.raises(ModelError, match=says) as err:
        model_fingerprint(spec)  # what the flow calls first, before any task
    assert repr(spec) in str(err.value) and allowed in str(err.value)
    message = fails_cleanly(tmp_path / "artifacts", "models", lambda out: prepare_model(spec, out), ModelError, says)
    assert allowed in message


def _without_special_tokens(model_dir: Path, *names: str) -> Path:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for name in names:
        setattr(tokenizer, name, None)
    tokenizer.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def no_pad_model(tmp_path_factory) -> Path:
    folder = build_tiny_model(tmp_path_factory.mktemp("no-pad"))
    return _without_special_tokens(folder, "pad_token")


def test_a_tokenizer_without_pad_token_pads_with_eos_and_trains(no_pad_model, tmp_path):
    """Handled the way the Hugging Face examples and TRL do: pad = EOS (documented in load_tokenizer)."""
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(no_pad_model).pad_token is None
    prepared = prepare_model(str(no_pad_model), tmp_path / "model")
    tokenizer = load_tokenizer(prepared)
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.pad_token_id == tokenizer.eos_token_id
    data_dir = write_nl2bash(tmp_path / "data", n_train=6, n_test=2)
    (tmp_path / "ds").mkdir(), (tmp_path / "shard").mkdir(), (tmp_path / "adapter").mkdir()
    pipeline.prepare_dataset("nl2bash", str(data_dir), None, "test", None, 0, tmp_path / "ds")
    pipeline.shard(tmp_path / "ds", None, None, StageSpec(stage=1, tau=0.0, k=0), prepared, tmp_path / "shard")
    stats = pipeline.train(prepared, tmp_path / "shard", None, LoraSettings(r=4, alpha=8, dropout=0.0),
                           TrainSettings(batch_size=3, max_seq_len=128), 1, tmp_path / "adapter")
    assert stats["optimizer_steps"] == 2 and stats["final_loss"] == stats["final_loss"]  # ran, not NaN


def test_a_tokenizer_without_pad_or_eos_is_a_clear_error(no_pad_model, tmp_path):
    import shutil

    folder = Path(shutil.copytree(no_pad_model, tmp_path / "no-eos"))
    _without_special_tokens(folder, "eos_token", "bos_token")
    message = fails_cleanly(tmp_path / "artifacts", "models", lambda out: prepare_model(str(folder), out),
                            ModelError, "has neither a pad token nor an EOS token")
    assert str(folder) in message and "tokenizer_config.json" in message
    with pytest.raises(ModelError, match="neither a pad token nor an EOS token"):
        load_tokenizer(folder)


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory) -> Path:
    """The tiny model with a 256-token context: the NL2Bash template is 1,213 of its tokens."""
    folder = build_tiny_model(tmp_path_factory.mktemp("short-context"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 256}))
    return folder


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    out = tmp_path / "ds"
    out.mkdir()
    pipeline.prepare_dataset("nl2bash", str(write_nl2bash(tmp_path / "data", 8, 2)), None, "test", None, 0, out)
    return out


def test_a_template_longer_than_the_context_is_an_error_before_training(short_context_model, dataset_dir, tmp_path):
    template = tmp_path / "template"
    template.mkdir()
    pipeline.compress(dataset_dir, 1.0, CompressionConfig(method="none"), short_context_model, template)
    message = fails_cleanly(tmp_path / "artifacts", "shards", lambda out: pipeline.shard(
        dataset_dir, template, None, StageSpec(stage=1, tau=1.0, k=0), short_context_model, out),
        ValueError, r"stage 1 \(tau=1.0\): the template is 1213 tokens")
    assert "a context of 256 tokens (max_position_embeddings" in message and "schedule.tau0" in message


def test_max_seq_len_beyond_the_context_names_the_key(dataset_dir, tmp_path):
    folder = build_tiny_model(tmp_path / "ctx16")
    (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()),
                                                    "max_position_embeddings": 16}))
    shard = tmp_path / "shard"
    shard.mkdir()
    pipeline.shard(dataset_dir, None, None, StageSpec(stage=1, tau=0.0, k=0), folder, shard)  # query only: fits
    message = fails_cleanly(tmp_path / "artifacts", "adapters", lambda out: pipeline.train(
        folder, shard, None, LoraSettings(r=4, alpha=8), TrainSettings(max_seq_len=64), 1, out),
        ValueError, r"train.max_seq_len=64 is above the context of the model ctx16 \(max_position_embeddings=16\)")
    assert "set train.max_seq_len to at most 16" in message


def test_too_few_training_rows_for_k_names_the_keys(dataset_dir, tmp_path):
    bank = tmp_path / "bank"
    bank.mkdir()
    pipeline.bank(dataset_dir, 10, preset("tiny").retrieval, 0, bank)  # 8 rows: 7 neighbors at most
    fails_cleanly(tmp_path / "artifacts", "shards", lambda out: pipeline.shard(
        dataset_dir, None, bank, StageSpec(stage=1, tau=0.0, k=9), build_tiny_model(tmp_path / "m"), out),
        ValueError, r"holds 7 neighbors per row .* needs k=9: lower schedule.k0 or use more training rows")


# ---------------------------------------------------------------------------------------------
# the whole flow on the tiny model: the failing box leaves no folder, complete or partial
# ---------------------------------------------------------------------------------------------


def _flow(cfg, root: Path):
    from flows.dag import promptintern

    return promptintern(config=cfg, artifact_root=str(root))


def _complete(root: Path, kind: str) -> list[Path]:
    return [p for p in (root / kind).glob("*") if (p / "manifest.json").is_file()] if (root / kind).is_dir() else []


def test_flow_with_a_malformed_line_fails_at_load_dataset_and_leaves_nothing(prefect_harness, tmp_path):
    data_dir = write_nl2bash(tmp_path / "data", 12, 4)
    _edit_line(data_dir / "nl2bash/split/train.jsonl", 7, '{"id": 6, "nl": "x" "cmd": "ls"}')
    cfg = preset("tiny", {"data_dir": str(data_dir), "train_subset": None})
    with pytest.raises(DataError, match=r"train.jsonl:7: not valid JSON"):
        _flow(cfg, tmp_path / "artifacts")
    assert folders(tmp_path / "artifacts", "datasets") == []
    for kind in ("templates", "banks", "shards", "adapters", "merged", "evals"):
        assert not (tmp_path / "artifacts" / kind).exists(), kind


def test_flow_with_a_subset_larger_than_the_split_leaves_nothing(prefect_harness, tmp_path):
    cfg = preset("tiny", {"data_dir": str(write_nl2bash(tmp_path / "data", 12, 4)), "train_subset": 50})
    with pytest.raises(DataError, match=r"train_subset=50 is larger than the 'train' split of 'nl2bash' \(12 rows\)"):
        _flow(cfg, tmp_path / "artifacts")
    assert folders(tmp_path / "artifacts", "datasets") == []


def test_flow_with_a_missing_model_path_fails_before_any_task(prefect_harness, tiny_data_dir, tmp_path):
    cfg = preset("tiny", {"data_dir": str(tiny_data_dir), "model": str(tmp_path / "nowhere")})
    with pytest.raises(ModelError, match="does not exist"):
        _flow(cfg, tmp_path / "artifacts")
    assert not (tmp_path / "artifacts").exists() or list((tmp_path / "artifacts").iterdir()) == []


def test_flow_with_a_template_beyond_the_context_stops_at_the_shard(prefect_harness, short_context_model, tmp_path):
    cfg = preset("tiny", {"model": str(short_context_model), "data_dir": str(write_nl2bash(tmp_path / "data", 8, 2)),
                          "train_subset": None, "schedule": {"num_stages": 2, "k0": 1},
                          "eval": {"test_subset": None, "baseline_full_prompt": False}})
    root = tmp_path / "artifacts"
    with pytest.raises(ValueError, match=r"the template is 1213 tokens, but the model .* context of 256 tokens"):
        _flow(cfg, root)
    # upstream boxes are valid and kept; the failing shard box left nothing, nothing downstream ran
    assert _complete(root, "datasets") and _complete(root, "templates")
    assert not any(p.name.startswith(".partial-") for p in (root / "shards").iterdir() if p.is_dir())
    assert len(_complete(root, "shards")) <= 1  # the query-only stage 2 shard may have been built
    assert all(json.loads((p / "manifest.json").read_text())["inputs"]["spec"]["tau"] == 0.0
               for p in _complete(root, "shards"))
    assert not (root / "adapters").exists()
