"""The ``promptintern`` flow: one run of the PromptIntern DAG, from data to a results table.

    python -m flows.dag                          # preset cpu-demo (the README's main job)
    python -m flows.dag --preset tiny            # seconds, on the locally built model
    python -m flows.dag --preset cpu-demo --set schedule.k0=2 --set train_subset=64
    python -m flows.dag --preset cpu-demo --task examples/unit-conversion/task.yaml   # your own task

Runs on Prefect's embedded default (no server needed); every box is a cached task, so a second
run with the same parameters recomputes nothing and a changed parameter recomputes only what
depends on it.

    load dataset ─┬─> compress template (one per distinct tau) ─┐
                  └─> build retrieval bank ─────────────────────┴─> stage shards (Parquet)
        ─> train stage 1 -> ... -> stage T (one LoRA adapter) ─> merge ─> benchmark ─> report

The training boxes read the training side of the data alone (its own dataset and bank folders, no
test rows): scoring another split or subset (``eval.test_split``, ``eval.test_subset``) benchmarks
the same trained models again and trains nothing. Only adaptive stage lengths, whose probe rows
must not meet the scored rows, train on a dataset folder that knows the test rows.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from flows.cli import run_cli
from promptintern.config import CompressionConfig, RunConfig, preset as load_preset, validate_config
from promptintern.curriculum import (adaptive_plan, direct_train_settings, is_direct_no_template,
                                     one_stage_recipe, plan_stages, single_stage_plan)
from promptintern.cpu import run_lease
from promptintern.data import dataset_digest
from promptintern.datasets import get_task
from promptintern.models import model_fingerprint
from promptintern.pipeline import stage_steps, train_rows, unlabeled_rows
from promptintern.report import summary_rows, write_run_report
from promptintern.schedule import StageSpec
from promptintern.variants import variant_config
from tasks.caching import clear_failure_records
from tasks.steps import (
    benchmark_task,
    build_bank_task,
    compress_template_task,
    load_dataset_task,
    merge_task,
    prepare_model_task,
    serving_task,
    shard_task,
    teacher_answers_task,
    teacher_logits_task,
    train_stage_task,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
VERBATIM = CompressionConfig(method="none")


def resolve_config(preset: str, overrides: dict[str, Any] | None, config: RunConfig | dict | None,
                   variant: str | None = None, dataset: str | None = None,
                   model: str | None = None, task: str | None = None) -> RunConfig:
    """A full config wins; else the preset, the variant's settings, then the overrides, with
    ``dataset`` / ``model`` as shorthands for those two keys (an override of the same key wins).
    ``task`` is ``dataset`` under the name a task file goes by: a built-in name or a file path."""
    if config is not None:
        return config if isinstance(config, RunConfig) else validate_config(config)
    if task and dataset and task_path(task) != task_path(dataset):
        raise ValueError(f"task={task!r} and dataset={dataset!r} name different tasks: give one of them")
    dataset = task_path(task or dataset) if (task or dataset) else None
    shorthands = {key: value for key, value in (("dataset", dataset), ("model", model)) if value}
    overrides = {**shorthands, **(overrides or {})}
    if variant:
        return variant_config(variant, preset, overrides)
    return load_preset(preset, overrides)


def task_path(task: str) -> str:
    """A built-in task name as given; a task file path made absolute (relative to the working
    directory, else to the repository root, where a deployment's worker runs flows from)."""
    from promptintern.taskfile import SUFFIXES

    if not (task.endswith(SUFFIXES) or "/" in task):
        return task
    path = Path(task).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    return str(path.resolve())


def in_repo(path: str) -> str:
    """A path as given if absolute, else relative to the repository root (where prefect.yaml is)."""
    return str((Path(path) if Path(path).is_absolute() else REPO_ROOT / path).resolve())


def artifact_slug(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-") or "run"


def _teacher(opts: dict, root: str, model: str, full_shard: str, cfg: RunConfig, budget: int, hw: dict,
             stage1: str | None = None) -> tuple[str | None, str]:
    """The teacher of ``train.distill.teacher``: the untuned model, the stage-1 adapter, or a model
    fine-tuned on the full prompt for the run's budget (the direct-template-kshot model at equal
    steps, shared with that variant's cache entry); its adapter folder (None: the untuned model)
    and its logits folder on the full-prompt rows."""
    adapter = stage1
    if cfg.train.distill.teacher == "full-prompt-ft":
        adapter = train_stage_task.with_options(**opts)(root, model, full_shard, None, cfg.lora,
                                                        direct_train_settings(cfg.train), single_stage_plan(budget),
                                                        hardware=hw)
    distill = cfg.train.distill
    return adapter, teacher_logits_task.with_options(**opts)(root, model, adapter, full_shard, distill.top_k,
                                                             cfg.train.max_seq_len, distill.temperature, hardware=hw)


def _teacher_answered(opts: dict, root: str, model: str, adapter: str | None, dataset: str, data_dir: str,
                      data_digest: str, template: str | None, cfg: RunConfig, chat: str, hw: dict) -> str:
    """``train.distill.unlabeled_queries``: the teacher (merged, or the untuned model) answers that
    many unlabeled queries (the task's request log, else training rows) with the full prompt; the
    dataset folder the student trains on."""
    teacher = model if adapter is None else merge_task.with_options(**opts)(
        root, model, adapter, hardware=hw, quantized=cfg.train.quantize_base is not None)
    return teacher_answers_task.with_options(**opts)(
        root, teacher, dataset, data_dir, data_digest, template, cfg.schedule.k0, cfg.retrieval,
        cfg.train.distill.unlabeled_queries, cfg.eval.max_new_tokens, cfg.eval.batch_size, cfg.eval.precision,
        cfg.eval.prefix_cache, chat, hardware=hw)


def _direct_baseline(opts: dict, root: str, model: str, train_data: str, dataset: str, cfg: RunConfig, steps: int,
                     scoring, chat: str, hw: dict) -> tuple[str, str]:
    """The honest comparison: plain fine-tuning on the query alone for ``steps`` optimizer steps (as
    many as the run took), the same recipe otherwise; its training folder and its benchmark."""
    spec = StageSpec(stage=1, tau=0.0, k=0)
    shard = shard_task.with_options(**opts)(root, train_data, None, None, spec, model, chat)
    adapter = train_stage_task.with_options(**opts)(root, model, shard, None, cfg.lora,
                                                    direct_train_settings(cfg.train), single_stage_plan(steps),
                                                    hardware=hw)
    merged = merge_task.with_options(**opts)(root, model, adapter, hardware=hw,
                                             quantized=cfg.train.quantize_base is not None)
    return adapter, benchmark_task.with_options(**opts)(root, merged, dataset, None, None, 0, scoring,
                                                        "direct-no-template", chat, hardware=hw)


@task(name="report")
def report_task(root: str, cfg: RunConfig, eval_dirs: dict[str, str], stage_dirs: list[str],
                template_dirs: dict[float, str | None], variant: str | None = None,
                baseline_dirs: dict[str, str] | None = None) -> dict:
    """Collect the benchmark folders into one table (Markdown + CSV + JSON) under runs/, and
    publish it to the Prefect UI: a table artifact, the Markdown report, a link to the folder.

    Uncached on purpose: every run gets its own report folder, log lines and UI artifacts."""
    result = write_run_report(Path(root), cfg, eval_dirs, stage_dirs, template_dirs, baseline_dirs)
    result["variant"] = variant
    result["summary"] = summary_rows(result["metrics"], variant, result["significance"])
    name = artifact_slug(f"{variant or 'custom'}-{get_task(cfg.dataset).name}")
    create_table_artifact(result["summary"], key=f"results-{name}",
                          description=f"promptintern results, {variant or 'custom config'} on {get_task(cfg.dataset).name}")
    create_markdown_artifact(f"# promptintern: {variant or 'custom config'}\n\n{result['markdown']}",
                             key=f"report-{name}", description="results table and how it was made")
    create_link_artifact(Path(result["run_dir"]).as_uri(), link_text=result["run_dir"], key=f"folder-{name}",
                         description="this run's report folder (results.md / .csv / .json, config.json)")
    get_run_logger().info("results (%s):\n%s", result["run_dir"], result["markdown"])
    return result


@flow(name="promptintern", log_prints=True)
def promptintern(preset: str = "cpu-demo", variant: str | None = None, dataset: str | None = None,
                 model: str | None = None, overrides: dict[str, Any] | None = None,
                 config: RunConfig | None = None, artifact_root: str = "artifacts",
                 task: str | None = None) -> dict:
    """Run the DAG for one configuration: a preset (tiny | cpu-demo | cpu-repro | paper), optionally
    a paper variant (``promptintern.variants``), the task (a built-in name or a task file; ``dataset``
    is the same thing), a model, plus nested overrides (``{"schedule": {"k0": 4}}``); or a full RunConfig."""
    started, root = time.time(), Path(in_repo(artifact_root))
    existed = root.exists()
    with run_lease():  # one active run: the machine's cores are shared out among them (promptintern.cpu)
        try:
            return _run(resolve_config(preset, overrides, config, variant, dataset, model, task), artifact_root,
                        variant)
        finally:  # a failed box's exception pickle is not an artifact; a root this run made and left empty goes
            clear_failure_records(root, started)
            if not existed and root.is_dir() and not any(root.iterdir()):
                root.rmdir()


def _run(cfg: RunConfig, artifact_root: str, variant: str | None) -> dict:
    root = in_repo(artifact_root)
    opts = {"result_storage": Path(root)}
    stages = cfg.schedule.stages()
    inference = cfg.schedule.inference_stage()

    # Cheap checks before any task: a missing data file or model path fails here. Then the data:
    # a bad row fails in seconds, before a model is converted.
    data_dir = in_repo(cfg.data_dir)
    data_digest = dataset_digest(data_dir, cfg.dataset)
    if cfg.train.distill is not None and cfg.train.distill.unlabeled_queries:  # enough unanswered queries?
        unlabeled_rows(cfg.dataset, data_dir, cfg.train_subset, cfg.seed, cfg.train.distill.unlabeled_queries)
    hardware = cfg.hardware.resolve()  # a GPU asked for and missing fails here, naming the setting
    hw = {"device": hardware.device, "dtype": hardware.dtype}
    model_print = model_fingerprint(cfg.model)
    separate_compressor = bool(cfg.compression.model) and cfg.compression.model != cfg.model
    compressor_print = model_fingerprint(cfg.compression.model) if separate_compressor else None
    adaptive = cfg.train.adaptive if len(stages) > 1 else None
    probe = dict(probe_split=cfg.probe_split(), probe_rows=adaptive.dev_rows) if adaptive else {}
    # what the benchmarks score, and what training reads: the same folder only for adaptive stage
    # lengths (their probe rows are checked against the scored ones)
    dataset = load_dataset_task.with_options(**opts)(
        root, cfg.dataset, data_dir, data_digest, cfg.train_subset,
        cfg.eval.test_split, cfg.eval.test_subset, cfg.seed, **probe)
    train_data = dataset if adaptive else load_dataset_task.with_options(**opts)(
        root, cfg.dataset, data_dir, data_digest, cfg.train_subset, None, None, cfg.seed)
    model = prepare_model_task.with_options(**opts)(root, cfg.model, model_print)
    compressor = model
    if separate_compressor:
        compressor = prepare_model_task.with_options(**opts)(root, cfg.compression.model, compressor_print)

    # One compressed template per distinct rate (1 = verbatim, 0 = no template at all).
    full_prompt = cfg.eval.baseline_full_prompt or cfg.train.distill is not None  # a form some box reads
    taus = {s.tau for s in stages} | ({1.0} if full_prompt else set())
    futures = {
        tau: compress_template_task.with_options(**opts).submit(
            root, train_data, tau, cfg.compression if tau < 1.0 else VERBATIM, compressor,
            hardware=hw if tau < 1.0 else None)  # a verbatim template runs no model
        for tau in sorted(taus, reverse=True) if tau > 0.0
    }
    k_max = max([s.k for s in stages] + [cfg.schedule.k0 if full_prompt else 0])
    # the training rows' shots, and the scored rows' (one folder when training knows the test rows;
    # else the scored side's bank retrieves for the test rows alone)
    bank_future = scored_future = None
    if k_max:
        bank_future = build_bank_task.with_options(**opts).submit(root, train_data, k_max, cfg.retrieval, cfg.seed)
        scored_future = bank_future if dataset == train_data else build_bank_task.with_options(**opts).submit(
            root, dataset, k_max, cfg.retrieval, cfg.seed, scored_only=True)
    templates: dict[float, str | None] = {tau: f.result() for tau, f in futures.items()} | {0.0: None}
    bank, eval_bank = (bank_future.result(), scored_future.result()) if k_max else (None, None)

    chat = cfg.chat or get_task(cfg.dataset).chat  # the run's choice, else the task file's

    def submit_shard(spec: StageSpec):
        # mixed forms (schedule.replay): a stage before the last trains a share of its rows in the
        # final form; without it the replay inputs stay None, out of the shard's cache key
        replay = cfg.schedule.replay if spec.stage < len(stages) else 0.0
        final = dict(final_spec=inference, final_template_dir=templates[inference.tau], seed=cfg.seed) if replay else {}
        needs_bank = spec.k or (replay and inference.k)
        return shard_task.with_options(**opts).submit(root, train_set, templates[spec.tau], bank if needs_bank else None,
                                                      spec, model, chat, replay, **final)

    # the budget as counted on the labeled rows (what a full-prompt teacher trains for)
    budget = sum(p.steps for p in plan_stages(len(stages), cfg.train, train_rows(Path(root) / train_data)))
    # a one-stage run reads none of the multi-stage settings: leave them out of its cache key, so
    # the direct-no-template variant and every run's equal-steps baseline are one model
    recipe = cfg.train if len(stages) > 1 else one_stage_recipe(cfg.train)

    # context distillation (train.distill): the teacher's answer logits on the full-prompt rows, a
    # box of their own, read by the stages whose rows are in the inference form; with
    # unlabeled_queries, the teacher's answers to more queries join the rows the stages train on
    teacher, full_shard, train_set = None, None, train_data
    if cfg.train.distill is not None:
        full_spec = StageSpec(stage=1, tau=1.0, k=cfg.schedule.k0)
        full_shard = shard_task.with_options(**opts)(root, train_data, templates[1.0], bank if full_spec.k else None,
                                                     full_spec, model, chat)
        if cfg.train.distill.teacher != "stage1":
            teacher_adapter, teacher = _teacher(opts, root, model, full_shard, cfg, budget, hw)
            if cfg.train.distill.unlabeled_queries:
                train_set = _teacher_answered(opts, root, model, teacher_adapter, train_data, data_dir, data_digest,
                                              templates[1.0], cfg, chat, hw)

    shards = [submit_shard(s) for s in stages]
    plans = plan_stages(len(stages), cfg.train, train_rows(Path(root) / train_set))
    # adaptive stage lengths: a stage ends when the next stage's form stops improving on the probe
    # rows (dev rows in that form, one shard per later stage); the budget stays the plans' sum
    probes = {s.stage - 1: shard_task.with_options(**opts).submit(
        root, train_data, templates[s.tau], bank if s.k else None, s, model, chat, split="dev")
        for s in stages[1:]} if adaptive else {}
    adapter = None
    stage_dirs = []
    used = 0
    for plan, shard in zip(plans, shards):
        extra = {}
        if adaptive:
            plan = adaptive_plan(plans, plan.stage, used, adaptive.min_steps)
            extra = dict(probe_shard_dir=probes[plan.stage].result() if plan.stage in probes else None,
                         dataset_dir=train_data, probe_generation=(cfg.eval.max_new_tokens, cfg.eval.batch_size))
        if teacher is not None and (plan.stage == len(stages) or cfg.schedule.replay):
            extra |= dict(teacher_dir=teacher, distill_form=(inference.tau, inference.k))
        adapter = train_stage_task.with_options(**opts)(root, model, shard.result(), adapter, cfg.lora, recipe, plan,
                                                        **extra, hardware=hw)
        used += stage_steps(Path(root) / adapter)
        stage_dirs.append(adapter)
        if cfg.train.distill is not None and teacher is None:  # the stage-1 adapter teaches the stages after it
            _, teacher = _teacher(opts, root, model, full_shard, cfg, budget, hw, stage1=adapter)
    merged = merge_task.with_options(**opts)(root, model, adapter, hardware=hw,
                                             quantized=cfg.train.quantize_base is not None)
    serving = serving_task.with_options(**opts)(root, merged, train_data, templates[inference.tau], inference.k,
                                                cfg.eval.max_new_tokens, chat)

    # One model's benchmark does not depend on whether the baselines are benchmarked too: those
    # switches are pinned so it stays out of the box's cache key (a variant that only turns it off,
    # like bank-100 beside promptintern, reads the same benchmark).
    scoring = cfg.eval.model_copy(update={"baseline_full_prompt": True, "baseline_direct": True,
                                          "baseline_query_only": True})
    evals = {"promptintern": benchmark_task.with_options(**opts)(
        root, merged, dataset, templates[inference.tau], eval_bank if inference.k else None, inference.k,
        scoring, "promptintern", chat, hardware=hw)}
    baseline_dirs: dict[str, str] = {}
    if cfg.eval.baseline_direct and not is_direct_no_template(cfg):
        baseline_dirs["direct-no-template"], evals["direct-no-template"] = _direct_baseline(
            opts, root, model, train_data, dataset, cfg, used, scoring, chat, hw)
    if cfg.eval.baseline_full_prompt:
        evals["base-full-prompt"] = benchmark_task.with_options(**opts)(
            root, model, dataset, templates[1.0], eval_bank, cfg.schedule.k0, scoring, "base-full-prompt", chat,
            hardware=hw)
    if cfg.eval.baseline_query_only:
        evals["base-query-only"] = benchmark_task.with_options(**opts)(
            root, model, dataset, None, None, 0, scoring, "base-query-only", chat, hardware=hw)
    result = report_task(root, cfg, evals, stage_dirs, {t: r for t, r in templates.items() if r}, variant,
                         baseline_dirs)
    return {**result, "serving_dir": str(Path(root) / serving)}


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``--set a.b=1`` -> {"a": {"b": 1}}; values parse as JSON when they can."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.dag", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-demo", help="tiny | cpu-demo | cpu-repro | paper")
    parser.add_argument("--variant", default=None, help="a paper baseline / ablation (promptintern.variants)")
    parser.add_argument("--task", "--dataset", dest="task", default=None,
                        help="nl2bash | mbpp | nl2f | path/to/task.yaml (default: the preset's)")
    parser.add_argument("--model", default=None, help="tiny | smollm2-135m | a local HF folder | a hub id")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set schedule.k0=2 (repeatable)")
    parser.add_argument("--artifact-root", default="artifacts")
    parser.add_argument("--debug", action="store_true", help="on failure, print the tracebacks here too")
    args = parser.parse_args(argv)
    return run_cli(lambda: _main(args), "flows.dag", args.debug)


def _main(args: argparse.Namespace) -> int:
    overrides = _parse_set(args.set)
    # a bad key, a missing data file or model path fails here, before Prefect starts
    cfg = resolve_config(args.preset, overrides, None, args.variant, None, args.model, args.task)
    dataset_digest(in_repo(cfg.data_dir), cfg.dataset)
    model_fingerprint(cfg.model)
    started = time.time()
    result = promptintern(preset=args.preset, variant=args.variant, task=args.task, model=args.model,
                          overrides=overrides, artifact_root=args.artifact_root)
    print(result["markdown"])
    print(f"wall time {time.time() - started:.0f} s; results in {result['run_dir']}")
    print(f"the internalized model, ready to serve (Hugging Face folder + serving.json): {result['serving_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
