"""The ``promptintern`` flow: one run of the PromptIntern DAG, from data to a results table.

    python -m flows.promptintern                          # preset cpu-demo (the README's main job)
    python -m flows.promptintern --preset tiny            # seconds, on the locally built model
    python -m flows.promptintern --preset cpu-demo --set schedule.k0=2 --set train_subset=64

Runs on Prefect's embedded default (no server needed); every box is a cached task, so a second
run with the same parameters recomputes nothing and a changed parameter recomputes only what
depends on it.

    load dataset ─┬─> compress template (one per distinct tau) ─┐
                  └─> build retrieval bank ─────────────────────┴─> stage shards (Parquet)
        ─> train stage 1 -> ... -> stage T (one LoRA adapter) ─> merge ─> benchmark ─> report
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.logging import get_run_logger

from promptintern.artifacts import stable_hash
from promptintern.config import CompressionConfig, RunConfig, preset as load_preset
from promptintern.data import dataset_digest
from promptintern.models import model_fingerprint
from promptintern.report import csv_table, markdown_table, provenance_lines, rows_from_metrics
from promptintern.variants import variant_config
from tasks.steps import (
    benchmark_task,
    build_bank_task,
    compress_template_task,
    load_dataset_task,
    merge_task,
    prepare_model_task,
    shard_task,
    train_stage_task,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
VERBATIM = CompressionConfig(method="none")


def resolve_config(preset: str, overrides: dict[str, Any] | None, config: RunConfig | dict | None,
                   variant: str | None = None) -> RunConfig:
    """A full config wins; else the preset, the variant's settings, then the overrides."""
    if config is not None:
        return config if isinstance(config, RunConfig) else RunConfig.model_validate(config)
    if variant:
        return variant_config(variant, preset, overrides)
    return load_preset(preset, overrides)


def prompt_form(tau: float, k: int) -> str:
    """How a prompt form reads in a table: 'query only', 'template x0.3 + 2-shot', ..."""
    if tau == 0.0 and k == 0:
        return "query only"
    template = "full template" if tau == 1.0 else ("no template" if tau == 0.0 else f"template x{tau:g}")
    return f"{template} + {k}-shot" if k else template


@task(name="report")
def report_task(root: str, cfg: RunConfig, eval_dirs: dict[str, str], stage_dirs: list[str],
                template_dirs: dict[float, str | None]) -> dict:
    """Collect the benchmark folders into one table (Markdown + CSV + JSON) under runs/."""
    template_rate = {"promptintern": cfg.schedule.inference_stage().tau, "base-full-prompt": 1.0}
    metrics = []
    for label, rel in eval_dirs.items():
        m = json.loads((Path(root) / rel / "metrics.json").read_text())
        m["prompt_form"] = prompt_form(template_rate[label], m["k"])
        metrics.append(m)
    rows = rows_from_metrics(metrics, full_prompt_label="base-full-prompt" if "base-full-prompt" in eval_dirs else None,
                             price_model=cfg.eval.price_model)
    stages = [json.loads((Path(root) / rel / "stats.json").read_text()) for rel in stage_dirs]
    templates = {str(tau): json.loads((Path(root) / rel / "stats.json").read_text())
                 for tau, rel in template_dirs.items() if rel}
    provenance = {
        "model": cfg.model,
        "dataset": f"{cfg.dataset} (train rows {metrics[0]['dataset']['train_rows']}, "
                   f"{cfg.eval.test_split} rows {metrics[0]['dataset']['test_rows']})",
        "schedule": ", ".join(f"t{s['stage']}: tau {s.get('tau', '?')} k {s.get('k', '?')}" for s in (
            sp.model_dump() for sp in cfg.schedule.stages())),
        "compressor": cfg.compression.method,
        "seed": cfg.seed,
        "decoding": f"greedy, max_new_tokens {cfg.eval.max_new_tokens}, batch {cfg.eval.batch_size}",
        "bleu": next((m["sacrebleu_signature"] for m in metrics if "sacrebleu_signature" in m), "n/a"),
        "execution": next((f"sandbox {m['sandbox']['mode']}, {m['sandbox']['workers']} workers, "
                           f"{m['sandbox']['timeout_s']} s per program" for m in metrics if "sandbox" in m), "n/a"),
        "cost": f"{cfg.eval.price_model} list prices of {metrics[0]['cost']['prices_date']}, tokens counted "
                f"with {metrics[0]['cost']['tokenizer']}",
        "training": "; ".join(f"stage {s['stage']}: {s['optimizer_steps']} steps, loss "
                              f"{s['first_loss']:.3f} -> {s['final_loss']:.3f}, {s['tokens_per_second']:.0f} tok/s"
                              for s in stages),
        "template rates achieved": ", ".join(f"tau {t}: {v['rate_achieved']:.3f} ({v['tokens_after']} tokens)"
                                             for t, v in templates.items()),
    }
    run_dir = Path(root) / "runs" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{stable_hash(cfg, 8)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    md = f"{markdown_table(rows)}\n\nHow these numbers were made:\n{provenance_lines(provenance)}\n"
    (run_dir / "results.md").write_text(md)
    (run_dir / "results.csv").write_text(csv_table(rows))
    (run_dir / "results.json").write_text(json.dumps({"rows": rows, "metrics": metrics,
                                                      "provenance": provenance, "stages": stages}, indent=2))
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    get_run_logger().info("results (%s):\n%s", run_dir, md)
    return {"run_dir": str(run_dir), "rows": rows, "markdown": md, "metrics": metrics}


@flow(name="promptintern", log_prints=True)
def promptintern(preset: str = "cpu-demo", variant: str | None = None, overrides: dict[str, Any] | None = None,
                 config: RunConfig | None = None, artifact_root: str = "artifacts") -> dict:
    """Run the DAG for one configuration: a preset, optionally a paper variant
    (``promptintern.variants``), plus overrides; or a full RunConfig."""
    cfg = resolve_config(preset, overrides, config, variant)
    root = str((Path(artifact_root) if Path(artifact_root).is_absolute() else REPO_ROOT / artifact_root).resolve())
    opts = {"result_storage": Path(root)}
    stages = cfg.schedule.stages()
    inference = cfg.schedule.inference_stage()

    model = prepare_model_task.with_options(**opts)(root, cfg.model, model_fingerprint(cfg.model))
    compressor = model
    if cfg.compression.model and cfg.compression.model != cfg.model:
        compressor = prepare_model_task.with_options(**opts)(
            root, cfg.compression.model, model_fingerprint(cfg.compression.model))
    data_dir = str(REPO_ROOT / cfg.data_dir) if not Path(cfg.data_dir).is_absolute() else cfg.data_dir
    dataset = load_dataset_task.with_options(**opts)(
        root, cfg.dataset, data_dir, dataset_digest(data_dir, cfg.dataset), cfg.train_subset,
        cfg.eval.test_split, cfg.eval.test_subset, cfg.seed)

    # One compressed template per distinct rate (1 = verbatim, 0 = no template at all).
    taus = {s.tau for s in stages} | ({1.0} if cfg.eval.baseline_full_prompt else set())
    futures = {
        tau: compress_template_task.with_options(**opts).submit(
            root, dataset, tau, cfg.compression if tau < 1.0 else VERBATIM, compressor)
        for tau in sorted(taus, reverse=True) if tau > 0.0
    }
    k_max = max([s.k for s in stages] + [cfg.schedule.k0 if cfg.eval.baseline_full_prompt else 0])
    bank_future = build_bank_task.with_options(**opts).submit(root, dataset, k_max, cfg.retrieval, cfg.seed) if k_max else None
    templates: dict[float, str | None] = {tau: f.result() for tau, f in futures.items()} | {0.0: None}
    bank = bank_future.result() if bank_future is not None else None

    shards = [shard_task.with_options(**opts).submit(root, dataset, templates[s.tau], bank if s.k else None, s, model)
              for s in stages]
    adapter = None
    stage_dirs = []
    for spec, shard in zip(stages, shards):
        adapter = train_stage_task.with_options(**opts)(root, model, shard.result(), adapter, cfg.lora, cfg.train, spec.stage)
        stage_dirs.append(adapter)
    merged = merge_task.with_options(**opts)(root, model, adapter)

    evals = {"promptintern": benchmark_task.with_options(**opts)(
        root, merged, dataset, templates[inference.tau], bank if inference.k else None, inference.k,
        cfg.eval, "promptintern")}
    if cfg.eval.baseline_full_prompt:
        evals["base-full-prompt"] = benchmark_task.with_options(**opts)(
            root, model, dataset, templates[1.0], bank, cfg.schedule.k0, cfg.eval, "base-full-prompt")
    return report_task(root, cfg, evals, stage_dirs, {t: r for t, r in templates.items() if r})


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
    parser = argparse.ArgumentParser(prog="python -m flows.promptintern", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-demo", help="tiny | cpu-demo | paper")
    parser.add_argument("--variant", default=None, help="a paper baseline / ablation (promptintern.variants)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set schedule.k0=2 (repeatable)")
    parser.add_argument("--artifact-root", default="artifacts")
    args = parser.parse_args(argv)
    overrides = _parse_set(args.set)
    resolve_config(args.preset, overrides, None, args.variant)  # a bad key fails here, before Prefect starts
    started = time.time()
    result = promptintern(preset=args.preset, variant=args.variant, overrides=overrides,
                          artifact_root=args.artifact_root)
    print(result["markdown"])
    print(f"wall time {time.time() - started:.0f} s; results in {result['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
