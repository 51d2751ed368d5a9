"""The whole DAG on the tiny model under Prefect's test harness, and its cache behaviour."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from promptintern.config import preset


def _task_states(flow_run_id) -> dict[str, list[str]]:
    """Task name -> state names of one flow run.

    Task-run states reach the API a moment after the flow returns, in no fixed order: wait until
    the last task (report) is there, every run is final, and the count holds still.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    seen = -1
    with get_client(sync_client=True) as client:
        for _ in range(200):
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            settled = any(r.name.startswith("report") for r in runs) and all(r.state and r.state.is_final() for r in runs)
            if settled and len(runs) == seen:
                break
            seen = len(runs) if settled else -1
            time.sleep(0.2)
    out: dict[str, list[str]] = {}
    for run in runs:
        out.setdefault(run.name.rsplit("-", 1)[0], []).append(run.state.name)
    return out


def _run(cfg, root):
    from flows.dag import promptintern

    state = promptintern(config=cfg, artifact_root=str(root), return_state=True)
    return state.result(), _task_states(state.state_details.flow_run_id)


@pytest.fixture(scope="module")
def first_run(prefect_harness, tiny_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    cfg = preset("tiny", {"data_dir": str(tiny_data_dir)})
    result, states = _run(cfg, root)
    return cfg, root, result, states


def test_flow_runs_every_box_and_reports(first_run):
    cfg, root, result, states = first_run
    assert set(states) == {"prepare-model", "load-dataset", "compress-template", "build-retrieval-bank",
                           "materialize-shard", "train-stage", "merge-adapter", "package-for-serving",
                           "benchmark", "report"}
    # the curriculum's stages, plus the one query-only stage of its equal-steps baseline
    assert len(states["train-stage"]) == cfg.schedule.num_stages + 1 == len(states["materialize-shard"])
    assert all(s == "Completed" for names in states.values() for s in names)
    labels = [r["method"] for r in result["rows"]]
    assert labels == ["promptintern", "direct-no-template", "base-full-prompt", "base-full-prompt, template cached",
                      "base-query-only"]
    metrics = {m["label"]: m for m in result["metrics"]}
    # the full prompt is also served with its template in a prompt cache: the same answers, timed
    # both ways side by side, priced with the cached-input prices
    cached = metrics["base-full-prompt"]["template_cached"]
    assert cached["prefix_tokens"] > 20 and cached["answers_agree"] == cached["answers_agree_with_main_run"] == 1.0
    assert cached["recomputed_seconds_per_instance"] > 0 and cached["seconds_per_instance"] > 0
    prices = cached["cost"]["cost_per_1k_queries"]
    assert prices["claude-3-5-sonnet"] < metrics["base-full-prompt"]["cost"]["cost_per_1k_queries"]["claude-3-5-sonnet"]
    assert metrics["promptintern"]["template_cached"] is None  # no template, nothing to cache
    header = result["markdown"].splitlines()[0]
    assert "cost saved vs full prompt" in header and "cost saved vs template cached" in header
    # the honest comparison: fine-tuning on the query alone for exactly as many optimizer steps
    assert metrics["direct-no-template"]["train_steps"] == metrics["promptintern"]["train_steps"] == 18
    assert metrics["direct-no-template"]["k"] == 0 and metrics["direct-no-template"]["template_chars"] == 0
    sig = result["significance"]["systems"]
    assert sig["promptintern"]["p_value"] is None and 0 < sig["direct-no-template"]["p_value"] <= 1
    assert result["verdict"] in result["markdown"]
    assert "test noise" in result["verdict"] or result["verdict"].endswith("a tie.")
    assert "p vs promptintern" in result["markdown"]
    # query-only inference really is query-only; the full prompt carries the template and shots
    assert metrics["promptintern"]["k"] == 0 and metrics["promptintern"]["template_chars"] == 0
    assert metrics["base-full-prompt"]["input_tokens_per_query"] > 10 * metrics["promptintern"]["input_tokens_per_query"]
    run_dir = Path(result["run_dir"])
    for name in ("results.md", "results.csv", "results.json", "config.json"):
        assert (run_dir / name).is_file()
    assert "tok:13a" in (run_dir / "results.md").read_text()  # the BLEU signature travels with it
    # every artifact folder is complete and carries its manifest and Prefect record
    for kind in ("models", "datasets", "templates", "banks", "shards", "adapters", "merged", "serving", "evals"):
        folders = [p for p in (root / kind).iterdir() if not p.name.startswith(".")]
        assert folders, kind
        for folder in folders:
            assert (folder / "manifest.json").is_file() and (folder / ".prefect-result").is_file()
    # every stage shard also exists as OpenAI chat fine-tuning JSONL (the closed-model path)
    from promptintern.export import validate_openai_chat_jsonl

    exports = list((root / "shards").glob("*/openai_chat.jsonl"))
    assert len(exports) == cfg.schedule.num_stages + 1  # and the baseline's
    assert all(validate_openai_chat_jsonl(p) == [] for p in exports)
    merge = json.loads(next((root / "merged").glob("*/merge_check.json")).read_text())
    assert merge["max_abs_logit_diff"] <= 1e-4


def test_second_identical_run_hits_the_cache_for_every_task(first_run):
    cfg, root, first, _ = first_run
    result, states = _run(cfg, root)
    cached = {name: s for name, s in states.items() if name != "report"}
    assert all(s == "Cached" for names in cached.values() for s in names), states
    assert [r["metric"] for r in result["rows"]] == [r["metric"] for r in first["rows"]]


def test_an_artifact_root_moved_elsewhere_is_still_all_cached(first_run, tmp_path):
    """Nothing a box writes names where the root lies: a root copied (or moved, or mounted)
    elsewhere serves every box from its cache."""
    cfg, root, first, _ = first_run
    moved = tmp_path / "elsewhere" / "artifacts"
    shutil.copytree(root, moved)
    kinds = ("models", "datasets", "templates", "banks", "shards", "adapters", "merged", "serving", "evals",
             "teachers")
    for kind in kinds:
        for path in (moved / kind).rglob("*") if (moved / kind).exists() else ():
            if path.is_file() and path.suffix in (".json", ".md", ".txt", ".jsonl"):
                assert str(root) not in path.read_text(errors="replace"), path
    result, states = _run(cfg, moved)
    assert all(s == "Cached" for name, names in states.items() if name != "report" for s in names), states
    assert [r["metric"] for r in result["rows"]] == [r["metric"] for r in first["rows"]]
    config = json.loads(next(moved.glob("adapters/*/adapter/adapter_config.json")).read_text())
    assert config["base_model_name_or_path"].startswith("models/")
    assert config["target_modules"] == sorted(config["target_modules"])


def test_turning_off_the_base_benchmark_reuses_the_tuned_models_benchmark(first_run):
    cfg, root, first, _ = first_run
    alone = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={
        "baseline_full_prompt": False, "baseline_direct": False, "baseline_query_only": False})})
    result, states = _run(alone, root)
    assert states["benchmark"] == ["Cached"]  # one benchmark, the tuned model's, from the cache
    eval_dirs = [json.loads((Path(r["run_dir"]) / "results.json").read_text())["eval_dirs"] for r in (first, result)]
    assert eval_dirs[1] == {"promptintern": eval_dirs[0]["promptintern"]}


def test_the_direct_no_template_variant_is_the_runs_equal_steps_baseline(first_run):
    """One model, not two: the variant with the same budget (3 passes = the curriculum's 18 steps)
    reads the baseline's training and benchmark from the cache."""
    from flows.dag import promptintern

    cfg, root, first, _ = first_run
    state = promptintern(preset="tiny", variant="direct-no-template", artifact_root=str(root), return_state=True,
                         overrides={"data_dir": cfg.data_dir, "train": {"total_epochs": 3.0}})
    result = state.result()
    states = _task_states(state.state_details.flow_run_id)
    assert states["train-stage"] == ["Cached"]
    tuned = next(m for m in result["metrics"] if m["label"] == "promptintern")
    baseline = next(m for m in first["metrics"] if m["label"] == "direct-no-template")
    assert tuned["train_steps"] == baseline["train_steps"] == 18 and tuned["bleu"] == baseline["bleu"]
    assert "direct-no-template" not in {m["label"] for m in result["metrics"]}  # it is the run itself


def test_a_late_parameter_recomputes_only_downstream(first_run):
    cfg, root, _, _ = first_run
    changed = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"max_new_tokens": 4})})
    _, states = _run(changed, root)
    recomputed = {name for name, s in states.items() if "Completed" in s}
    assert recomputed == {"benchmark", "package-for-serving", "report"}  # serving.json records max_new_tokens


def test_the_hardware_setting_reaches_every_box_that_runs_a_model(first_run, tmp_path):
    """The CPU in fp32 spelled out is the default's run, every box Cached; bf16 weights recompute the
    boxes that run a model (compressor, training, merge, benchmark) and what is made from them (the
    compressed template's shard, the serving folder), and they say so."""
    import shutil

    cfg, first_root, _, _ = first_run
    root = tmp_path / "artifacts"  # a copy: the other tests read the first run's folders
    shutil.copytree(first_root, root)

    def on(dtype):
        return cfg.model_copy(update={"hardware": cfg.hardware.model_copy(update={"device": "cpu", "dtype": dtype})})

    _, states = _run(on("fp32"), root)
    assert all(s == "Cached" for name, names in states.items() if name != "report" for s in names), states
    _, states = _run(on("bf16"), root)
    recomputed = {name for name, s in states.items() if "Completed" in s}
    assert recomputed == {"compress-template", "materialize-shard", "train-stage", "merge-adapter",
                          "package-for-serving", "benchmark", "report"}, states
    assert states["prepare-model"] == ["Cached"]
    assert states["load-dataset"] == states["build-retrieval-bank"] == ["Cached", "Cached"]  # training's, scoring's
    # the verbatim template runs no model: its box, and the shards of the verbatim and no-template
    # stages, are the fp32 run's; the tau 0.5 template was scored in bf16
    assert states["compress-template"].count("Cached") == 1 and sorted(set(states["materialize-shard"])) == \
        ["Cached", "Completed"]
    metrics = [json.loads(p.read_text()) for p in (root / "evals").glob("*/metrics.json")]
    assert {m["decoding"] for m in metrics if m.get("device") == "cpu"} == {"greedy", "greedy, bf16 weights"}
    checks = [json.loads(p.read_text()) for p in (root / "merged").glob("*/merge_check.json")]
    assert {c.get("saved_dtype") for c in checks} == {"fp32", "bf16"}


def test_scoring_other_rows_benchmarks_the_same_models_and_trains_nothing(first_run, tmp_path):
    """Another eval.test_split / test_subset (the dev split chooses, the test split is scored once)
    is a new benchmark of the models already trained: the training side of the data holds no test
    rows, so no training box's key moves."""
    cfg, first_root, first, _ = first_run
    root = tmp_path / "artifacts"  # a copy: the other tests read the first run's folders
    shutil.copytree(first_root, root)
    other = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"test_subset": cfg.eval.test_subset - 2})})
    result, states = _run(other, root)
    for box in ("compress-template", "materialize-shard", "train-stage", "merge-adapter", "package-for-serving"):
        assert set(states[box]) == {"Cached"}, (box, states[box])
    # the training side's dataset and bank are the first run's; the scored side's are new
    assert sorted(states["load-dataset"]) == sorted(states["build-retrieval-bank"]) == ["Cached", "Completed"]
    assert set(states["benchmark"]) == {"Completed"}
    scored = {m["label"]: m["n"] for m in result["metrics"]}
    assert scored["promptintern"] == scored["direct-no-template"] == cfg.eval.test_subset - 2
    assert {m["label"]: m["n"] for m in first["metrics"]}["promptintern"] == cfg.eval.test_subset
    training = [p for p in (root / "datasets").iterdir() if (p / "info.json").is_file()
                and "test_rows" not in json.loads((p / "info.json").read_text())]
    assert len(training) == 1 and not (training[0] / "test.jsonl").exists()
    # the scored side's bank holds the test rows' shots alone; the training rows' are the training side's
    banks = [p for p in (root / "banks").iterdir() if (p / "stats.json").is_file()]
    assert sorted((p / "train_neighbors.npy").exists() for p in banks) == [False, False, True]
    assert all((p / "test_neighbors.npy").exists() != (p / "train_neighbors.npy").exists() for p in banks)


def test_a_deleted_folder_recomputes_only_its_task(first_run):
    cfg, root, _, _ = first_run
    merged = next(p for p in (root / "merged").iterdir() if not p.name.startswith("."))
    shutil.rmtree(merged)
    _, states = _run(cfg, root)
    assert sorted(states["merge-adapter"]) == ["Cached", "Completed"]  # of the two merged models, one was deleted
    assert merged.is_dir()
    assert all(s == "Cached" for name, names in states.items() if name not in ("merge-adapter", "report") for s in names)


def test_a_truncated_artifact_is_recomputed_not_trusted(first_run):
    cfg, root, _, _ = first_run
    shard = next((root / "shards").glob("*/shard.parquet"))
    shard.write_bytes(shard.read_bytes()[:100])
    _, states = _run(cfg, root)
    assert "Completed" in states["materialize-shard"]
    assert shard.stat().st_size > 100


def test_mbpp_runs_through_the_same_dag(prefect_harness, tmp_path):
    """MBPP layout written for the test: task ids in the train (601+) and test (11-510) ranges."""
    rows = []
    for i, task_id in enumerate([11, 12, 13, 601, 602, 603, 604, 605, 606]):
        rows.append({"task_id": task_id, "text": f"Write a function to add {i} to a number.",
                     "code": f"def add_{i}(x):\r\n    return x + {i}",
                     "test_list": [f"assert add_{i}(1) == {1 + i}"], "test_setup_code": "",
                     "challenge_test_list": []})
    (tmp_path / "data" / "mbpp").mkdir(parents=True)
    (tmp_path / "data" / "mbpp" / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = preset("tiny", {"dataset": "mbpp", "data_dir": str(tmp_path / "data"), "train_subset": None,
                          "eval": {"test_subset": None, "max_new_tokens": 6}})
    result, states = _run(cfg, tmp_path / "artifacts")
    assert all(s == "Completed" for names in states.values() for s in names)
    metrics = {m["label"]: m for m in result["metrics"]}
    # MBPP is scored by running the answers against their asserts in the sandbox
    assert metrics["promptintern"]["metric"] == "pass@1" and metrics["promptintern"]["n"] == 3
    assert sum(metrics["promptintern"]["statuses"].values()) == 3
    assert metrics["promptintern"]["pass@1"] == 0.0  # a random tiny model writes no working code
    assert "sandbox" in result["markdown"]
    assert metrics["base-full-prompt"]["input_tokens_per_query"] > metrics["promptintern"]["input_tokens_per_query"]


def test_a_local_model_folder_works_as_model(prefect_harness, tiny_model_dir, tiny_data_dir, tmp_path):
    cfg = preset("tiny", {"model": str(tiny_model_dir), "data_dir": str(tiny_data_dir),
                          "train_subset": 8, "eval": {"test_subset": 2, "baseline_full_prompt": False,
                                                      "baseline_direct": False, "baseline_query_only": False}})
    result, states = _run(cfg, tmp_path)
    assert [r["method"] for r in result["rows"]] == ["promptintern"]
    assert states["prepare-model"] == ["Completed"]


def test_a_paper_variant_is_a_parameterization_of_the_same_flow(prefect_harness, tiny_data_dir, tmp_path):
    from flows.dag import promptintern

    state = promptintern(preset="tiny", variant="direct-template-0.6-halfk",
                         overrides={"data_dir": str(tiny_data_dir), "eval": {"test_subset": 2}},
                         artifact_root=str(tmp_path), return_state=True)
    result = state.result()
    states = _task_states(state.state_details.flow_run_id)
    assert len(states["train-stage"]) == 2  # direct fine-tuning: one stage; and its query-only baseline
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["promptintern"]["prompt form"] == "template x0.6 + 1-shot"


def test_adaptive_stage_lengths_keep_the_budget_through_the_flow(prefect_harness, tiny_data_dir, tmp_path):
    """train.adaptive: the probe rows are frozen with the dataset (the last dev rows), each stage but
    the last is probed on the next stage's form, and the stages' steps add up to the fixed budget,
    which is also the direct baseline's."""
    cfg = preset("tiny", {"data_dir": str(tiny_data_dir), "train_subset": 16,
                          "train": {"reset_optimizer_each_stage": False, "lr_schedule": "wsd",
                                    "adaptive": {"probe": "generate", "dev_rows": 3, "every": 1, "patience": 1,
                                                 "min_steps": 1}},
                          "eval": {"test_subset": 2, "baseline_full_prompt": False, "baseline_query_only": False}})
    result, states = _run(cfg, tmp_path)
    assert all(s == "Completed" for names in states.values() for s in names)
    run = json.loads((Path(result["run_dir"]) / "results.json").read_text())
    stages = run["stages"]
    assert sum(s["optimizer_steps"] for s in stages) == 12  # 3 stages x 16 rows / batch 4
    assert [bool(s["probe"]) for s in stages] == [True, True, False]  # the last stage has no next form
    assert all(s["step_offset"] == sum(x["optimizer_steps"] for x in stages[:i]) for i, s in enumerate(stages))
    metrics = {m["label"]: m for m in result["metrics"]}
    assert metrics["direct-no-template"]["train_steps"] == 12
    dataset = next(p for p in (tmp_path / "datasets").iterdir() if not p.name.startswith("."))
    dev = [json.loads(line) for line in (dataset / "dev.jsonl").read_text().splitlines()]
    assert [r["id"] for r in dev] == ["dev-1", "dev-2", "dev-3"]  # the last 3 of the 4 dev rows
    assert len(list((tmp_path / "shards").glob("*/shard.parquet"))) == 3 + 2 + 1  # stages, probes, baseline


def test_context_distillation_runs_its_teacher_once_as_a_box(prefect_harness, tiny_data_dir, tmp_path):
    """promptintern-distill: the full-prompt teacher (direct-template-kshot at the run's budget) is
    trained and its answer logits computed once; context-distillation (one query-only stage) reads
    both from the cache, and is compared with plain fine-tuning on the query."""
    from flows.dag import promptintern

    common = {"data_dir": str(tiny_data_dir), "train_subset": 8, "train": {"total_epochs": 3.0},
              "eval": {"test_subset": 2, "baseline_full_prompt": False, "baseline_query_only": False}}
    states = {}
    for variant in ("promptintern-distill", "context-distillation"):
        state = promptintern(preset="tiny", variant=variant, overrides=common, artifact_root=str(tmp_path),
                             return_state=True)
        result = state.result()
        states[variant] = _task_states(state.state_details.flow_run_id)
        assert [m["label"] for m in result["metrics"]] == ["promptintern", "direct-no-template"]
    assert states["promptintern-distill"]["teacher-logits"] == ["Completed"]
    assert states["context-distillation"]["teacher-logits"] == ["Cached"]
    # distill: 3 stages + the teacher + the direct baseline; context distillation: 1 stage, the
    # teacher and the baseline read from the cache
    assert len(states["promptintern-distill"]["train-stage"]) == 5
    assert sorted(states["context-distillation"]["train-stage"]) == ["Cached", "Cached", "Completed"]
    teacher = next(p for p in (tmp_path / "teachers").iterdir() if not p.name.startswith("."))
    assert json.loads((teacher / "stats.json").read_text())["rows"] == 8
