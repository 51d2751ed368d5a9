"""The ``reproduce`` flow: the paper's experiments at CPU scale, one command per part of docs/results.md.

    python -m flows.reproduce nl2bash      # methods + PromptIntern ablations on NL2Bash (preset cpu-repro)
    python -m flows.reproduce ablations    # schedule patterns and retrieval-bank sizes on NL2Bash
    python -m flows.reproduce mbpp         # PromptIntern vs template + k-shot vs no template, 500 tasks
    python -m flows.reproduce timing       # seconds per instance of every model above, re-measured side by side
    python -m flows.reproduce curricula-dev            # the curricula at equal steps, on the dev split
    python -m flows.reproduce map-64 --extra-seeds 1,2  # where it pays: one size of the map, three seeds
    python -m flows.reproduce map --render-only        # the map's table and plot from its records
    python -m flows.reproduce mbpp timing --resume   # finish MBPP, then re-time its models only
    make reproduce                         # all four; docs/results.md is rewritten part by part
    python -m flows.reproduce nl2bash --resume       # keep the finished rows of the record, run the rest
    python -m flows.reproduce nl2bash --render-only  # rewrite the tables from the record, run nothing

Each part runs its variants of the ``promptintern`` flow one after another (as subflows, on
Prefect's embedded default), stores what every run measured in ``docs/results/<part>.json``, draws
``docs/results/<part>_metric_vs_tokens.png`` and rewrites that part's tables in ``docs/results.md``
(between ``<!-- BEGIN part -->`` / ``<!-- END part -->``; the prose around them is kept). Every
box is cached, so a rerun with unchanged code and data recomputes nothing and rewrites the same
numbers; with an empty artifact root it recomputes them (see docs/results.md for the tolerance).

The record is rewritten after every variant, so a part that is stopped half-way keeps what it
finished. ``--resume`` keeps the completed rows of an existing record whose configuration (the
variant's resolved config and the dataset's content digest) is unchanged and runs only the rest:
a sweep longer than one sitting can be finished in several, each row saying when and from which
commit it came.

Every model's answers are published beside the tables (``docs/results/predictions/<part>/<variant>.jsonl``:
id, prediction, reference, and the sandbox verdict for code), and each table carries a paired
bootstrap test against PromptIntern (``promptintern.significance``): the 95% interval of every row's
metric and the p-value of its difference, so that a difference inside the test set's noise reads as
such. ``--render-only`` recomputes those from the published answers.

Only the ``promptintern`` variant also benchmarks the untuned model with the full prompt (the
reference row); the other variants skip that benchmark, which would otherwise run once per
distinct k0 (tens of minutes each on 2 cores) and change no number of the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.logging import get_run_logger

from flows.cli import run_cli
from flows.dag import REPO_ROOT, _parse_set, in_repo, promptintern, resolve_config
from promptintern.artifacts import sha256_file, stable_hash
from promptintern.config import RunConfig, _merge
from promptintern.data import dataset_digest
from promptintern.machine import hardware
from promptintern.report import plot_metric_vs_tokens
from promptintern.results import (MAP_SIZES, MAP_VARIANTS, PARTS, Part, eval_dirs_of, export_predictions,
                                  models_of, plot_points, read_predictions, replace_region, retime,
                                  timing_markdown, write_document)
from promptintern.scaling import map_markdown, map_points, plot_metric_vs_rows
from promptintern.significance import paired_bootstrap
from promptintern.variants import VariantUnavailable

PRESET = "cpu-repro"
DOC = REPO_ROOT / "docs" / "results.md"
TIMED_PARTS = ("nl2bash", "mbpp")  # `timing` alone re-times these (ablations share their models with nl2bash)
HEADER = "# Results\n\nSee the sections below; each table names the command that regenerates it.\n"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version() -> str:
    """The commit the numbers came from, marked dirty when tracked code differs from it."""
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "promptintern", "flows", "tasks")
    return f"{commit}{' (+ uncommitted changes)' if dirty else ''}"


def _machine() -> str:
    hw = hardware("torch", "transformers", "peft", "llmlingua", "sacrebleu", "prefect")
    import torch

    versions = ", ".join(f"{k} {v}" for k, v in hw["versions"].items())
    return f"{hw['cpu']}, {hw['cores']} cores ({torch.get_num_threads()} torch threads), {hw['mem_gb']} GB; {versions}"


def config_digest(cfg: RunConfig) -> str:
    """What decides a variant's numbers: its resolved config (less where the data lives) and the
    content of its dataset. Equal digests: ``--resume`` may keep a row instead of recomputing it."""
    settings = _without_none(cfg.model_dump(mode="json", exclude={"data_dir", "hardware"}))
    # the hardware by what changes numbers (device kind, dtype: nothing for the CPU in fp32, the
    # records made before the setting existed), and generation's precision as it resolves
    hardware = cfg.hardware.resolve()
    settings["eval"]["precision"] = cfg.eval.precision or hardware.dtype
    settings.update(hardware.key_material())
    for key in FP_ORDER_ONLY:  # same numbers up to floating-point order: not a different row
        settings["train"].pop(key, None)
    return stable_hash({"config": settings, "data": dataset_digest(in_repo(cfg.data_dir), cfg.dataset)})


# Train settings that change how a step is computed, not what it computes (gradient checkpointing
# recomputes the same activations; data-parallel processes sum the same gradients in another order).
FP_ORDER_ONLY = ("gradient_checkpointing", "processes")


def _without_none(tree: Any) -> Any:
    """Settings left unset (None: an optional feature off) are dropped, so a setting added later with
    None as its default leaves the digests of the rows made before it unchanged."""
    if isinstance(tree, dict):
        return {key: _without_none(value) for key, value in tree.items() if value is not None}
    return tree


def _load_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); delete it or run without --resume") from exc


def _merged_with(on_disk: dict[str, dict], runs: dict[str, dict], only: tuple[str, ...]) -> dict[str, dict]:
    """The rows to write with ``--resume``: the record on disk, which another invocation of the same
    part (``--variants`` others, beside this one) may have written since this one began, overlaid
    by the rows this invocation ran or kept. A row still pending here, or one of a variant left to
    other invocations (not in ``only``), keeps its row on disk; a row's seed runs are the union of
    both when both rows are the same configuration (ours win a seed both made)."""
    merged = {}
    for variant, row in runs.items():
        theirs = on_disk.get(variant)
        if theirs is not None and (row.get("status") == "pending" or (only and variant not in only)):
            row = theirs
        elif theirs is not None and theirs.get("config_digest") == row.get("config_digest"):
            row = {**row, "seed_runs": {**theirs.get("seed_runs", {}), **row.get("seed_runs", {})}}
        merged[variant] = row
    return merged


def _variant_record(result: dict, root: Path) -> dict:
    """What the tables need from one run: the fine-tuned model's metrics, steps, what it ran."""
    report = json.loads((Path(result["run_dir"]) / "results.json").read_text())
    by_label = {m["label"]: m for m in report["metrics"]}
    tuned = by_label["promptintern"]
    eval_dir = root / report["eval_dirs"]["promptintern"]
    manifest = json.loads((eval_dir / "manifest.json").read_text())
    return {
        "status": "completed",
        "tuned": tuned,
        "base_full_prompt": by_label.get("base-full-prompt"),
        "base_query_only": by_label.get("base-query-only"),
        "recipe": report["provenance"].get("recipe"),
        "prompt_form": tuned.get("prompt_form", ""),
        "steps": sum(s["optimizer_steps"] for s in report["stages"]),
        "stages": [{k: s[k] for k in ("stage", "rows", "optimizer_steps", "first_loss", "final_loss",
                                      "tokens", "tokens_per_second", "seconds") if k in s} for s in report["stages"]],
        "schedule": report["provenance"]["schedule"],
        "compressor": report["provenance"]["compressor"],
        "template_rates": report["provenance"]["template rates achieved"],
        "predictions_sha256": manifest["files"]["predictions.jsonl"]["sha256"],
        "run_dir": os.path.relpath(result["run_dir"], root),
        "eval_dir": report["eval_dirs"]["promptintern"],
    }


@task(name="write-results")
def write_results_task(part_name: str, record: dict, doc: str) -> str:
    """Store the part's record, draw its plot, rewrite its region of docs/results.md."""
    part = PARTS[part_name]
    doc_path = Path(doc)
    out = doc_path.parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    record = {**record, "plot": _draw_plot(part, record, doc_path)}
    (out / f"{part.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    write_document(doc_path, [(part, record)], HEADER)
    get_run_logger().info("%s: wrote %s and its region of %s", part.name, out / f"{part.name}.json", doc_path)
    return str(out / f"{part.name}.json")


def _draw_plot(part: Part, record: dict, doc_path: Path) -> str:
    """Draw the part's metric-vs-tokens plot next to its record; its path relative to the document."""
    plot = doc_path.parent / "results" / f"{part.name}_metric_vs_tokens.png"
    preset = record["provenance"]["preset"].split()[0]  # "<preset> (promptintern/config.py), ..."
    title = f"{part.dataset} · {record['provenance']['model']} · preset {preset}"
    plot_metric_vs_tokens(plot_points(part, record), plot, title)
    return os.path.relpath(plot, doc_path.parent)


def variant_config(spec: Part, variant: str, preset: str = PRESET,
                   overrides: dict[str, Any] | None = None) -> tuple[dict, RunConfig]:
    """A variant of a part as the part runs it: its settings and its resolved config
    (``VariantUnavailable`` where it cannot run here). The part's own rows are the baselines: a
    run's equal-steps direct baseline is the part's direct-no-template row, and only PromptIntern's
    run benchmarks the untuned model."""
    first = variant == "promptintern"
    mine = _merge(_merge({"dataset": spec.dataset, "eval": {
        "baseline_full_prompt": first, "baseline_direct": False, "baseline_query_only": first}}, spec.settings),
        overrides or {})
    return mine, resolve_config(preset, mine, None, variant)


@flow(name="promptintern-reproduce", log_prints=True)
def reproduce(part: str = "nl2bash", preset: str = PRESET, overrides: dict[str, Any] | None = None,
              artifact_root: str = "artifacts", doc: str | None = None, resume: bool = False,
              extra_seeds: tuple[int, ...] = (), only: tuple[str, ...] = ()) -> dict:
    """Run every variant of ``part`` (``promptintern.results.PARTS``) on ``preset`` and rewrite the
    part's tables in ``doc`` (default docs/results.md) after each one. ``resume``: keep the completed
    rows of the existing record whose config digest is unchanged instead of running them again.
    ``extra_seeds``: then run every variant again with each of these ``train.seed`` values (the
    spread between training seeds, beside the test set's noise). ``only``: run just these variants
    of the part; the others keep their rows from the record (with ``resume``) or stay pending. With
    ``resume``, every write re-reads the record first, so two invocations of one part with
    different ``only`` can run at once (one per core) without erasing each other's rows."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; allowed: {sorted(PARTS)}")
    spec: Part = PARTS[part]
    logger = get_run_logger()
    root = Path(in_repo(artifact_root))
    doc_path = Path(doc) if doc else DOC
    previous = _load_record(doc_path.parent / "results" / f"{part}.json").get("runs", {}) if resume else {}
    started, load_start = time.time(), os.getloadavg()[0]
    runs: dict[str, dict] = {}
    configs: dict[str, tuple[dict, RunConfig]] = {}
    for variant in spec.variants:  # what cannot run is known (and shown) before anything runs
        try:
            configs[variant] = variant_config(spec, variant, preset, overrides)
            runs[variant] = {"status": "pending"}
        except VariantUnavailable as exc:
            logger.warning("skipping %s: %s", variant, exc)
            runs[variant] = {"status": "skipped", "reason": str(exc)}
    unknown = sorted(set(only) - set(spec.variants))
    if unknown:
        raise ValueError(f"--variants {', '.join(unknown)}: not in part {part!r}; allowed: {spec.variants}")
    kept: list[str] = []
    record_path = doc_path.parent / "results" / f"{part}.json"

    def _write(runs: dict[str, dict]) -> str:
        if resume:  # what another invocation of the part wrote meanwhile stays
            runs = _merged_with(_load_record(record_path).get("runs", {}), runs, only)
        return write_results_task(part, _part_record(part, preset, overrides, runs, kept, started, load_start,
                                                     doc_path), str(doc_path))

    for seed in (None, *extra_seeds):  # every variant once, then again for each extra training seed
        for number, variant in enumerate(spec.variants, start=1):
            if variant not in configs:
                continue
            if only and variant not in only:
                if seed is None and variant in previous:
                    runs[variant] = previous[variant]
                continue
            mine, cfg = configs[variant]
            if seed is not None:
                mine = _merge(mine, {"train": {"seed": seed}})
                cfg = resolve_config(preset, mine, None, variant)
            digest = config_digest(cfg)
            label = variant if seed is None else f"{variant} (train.seed {seed})"
            old = previous.get(variant, {}) if seed is None else \
                previous.get(variant, {}).get("seed_runs", {}).get(str(seed), {})
            if old.get("status") == "completed" and old.get("config_digest") == digest:
                logger.info("%s: variant %d of %d: %s kept from the record (%s, %s)", part, number,
                            len(spec.variants), label, old.get("code", "?"), old.get("finished", "?"))
                row = old  # with the seed runs made beside it (same config but train.seed)
                kept.append(label)
            else:
                logger.info("%s: variant %d of %d: %s", part, number, len(spec.variants), label)
                row = _run_variant(preset, variant, mine, artifact_root, root,
                                   _predictions_path(doc_path, part, variant, seed))
                row["config_digest"] = digest
            if seed is None:
                runs[variant] = {**row, "seed_runs": dict(row.get("seed_runs", {}))}
            else:
                runs[variant].setdefault("seed_runs", {})[str(seed)] = row
            # after every run: a stopped sweep keeps what it finished (``--resume`` goes on from it)
            path = _write(runs)

    _publish_missing_predictions(part, runs, root, doc_path)  # rows kept from a record made before they were published
    path = _write(runs)
    # what this invocation was asked to run and did not finish (with --variants, the part's other
    # rows are left alone on purpose: not failures); its extra seeds' runs count too
    asked = [v for v in runs if not only or v in only]
    failed = [v for v in asked if runs[v]["status"] not in ("completed", "skipped")]
    failed += [f"{v} (train.seed {seed})" for v in asked if runs[v]["status"] == "completed"
               for seed in map(str, extra_seeds) if runs[v].get("seed_runs", {}).get(seed, {}).get("status") != "completed"]
    if failed:
        raise RuntimeError(f"reproduce {part}: {len(failed)} variant runs did not complete: {', '.join(failed)} "
                           f"(the others are in {path})")
    return {"record": path, "runs": runs}


def _run_variant(preset: str, variant: str, overrides: dict, artifact_root: str, root: Path, published: Path) -> dict:
    """One run of the ``promptintern`` flow for the record: what its model measured, its answers
    published at ``published``, when and from which commit."""
    began, load_before = time.time(), os.getloadavg()[0]
    state = promptintern(preset=preset, variant=variant, overrides=overrides, artifact_root=artifact_root,
                         return_state=True)
    if state.is_completed():
        row = _variant_record(state.result(), root)
        export_predictions(root / row["eval_dir"], published)
    else:
        row = {"status": state.name.lower(), "reason": state.message or ""}
    return {**row, "code": code_version(), "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_minutes": round((time.time() - began) / 60, 1),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def _predictions_path(doc_path: Path, part: str, variant: str, seed: int | None = None) -> Path:
    name = variant if seed is None else f"{variant}.seed{seed}"
    return doc_path.parent / "results" / "predictions" / part / f"{name}.jsonl"


def significance(part: str, runs: dict[str, dict], doc_path: Path, baseline: str = "promptintern",
                 seed: str | None = None) -> dict | None:
    """Paired bootstrap of the part's metric over the published predictions of its completed rows,
    every row against ``baseline`` (None until the baseline has run); ``seed``: of the rows' runs
    with that extra training seed instead of their main runs."""
    def run_of(row: dict) -> dict:
        return row if seed is None else row.get("seed_runs", {}).get(seed, {})

    systems = {v: read_predictions(_predictions_path(doc_path, part, v, seed and int(seed))) for v, r in runs.items()
               if run_of(r).get("status") == "completed"
               and _predictions_path(doc_path, part, v, seed and int(seed)).exists()}
    if baseline not in systems:
        return None
    return paired_bootstrap(runs[baseline]["tuned"]["metric"], systems, baseline)


def seed_significance(part: str, runs: dict[str, dict], doc_path: Path, baseline: str) -> dict[str, dict]:
    """For every extra training seed: the paired bootstrap of each row's run at that seed against
    the baseline's run at the same seed."""
    seeds = sorted({s for r in runs.values() for s in r.get("seed_runs", {})}, key=int)
    tests = {seed: significance(part, runs, doc_path, baseline, seed) for seed in seeds}
    return {seed: test for seed, test in tests.items() if test is not None}


def _part_record(part: str, preset: str, overrides: dict[str, Any] | None, runs: dict[str, dict],
                 kept: list[str], started: float, load_start: float, doc_path: Path) -> dict:
    """The part's record: every variant's row so far, the reference row, how the numbers were made."""
    cfg = resolve_config(preset, _merge(_merge({"dataset": PARTS[part].dataset}, PARTS[part].settings), overrides or {}),
                         None, "promptintern")
    base = next((r["base_full_prompt"] for r in runs.values() if r.get("base_full_prompt")), None)
    base_query = next((r["base_query_only"] for r in runs.values() if r.get("base_query_only")), None)
    sets = " ".join(f"--set {k}" for k in _flatten(overrides or {}))
    tuned = next((r["tuned"] for r in runs.values() if r.get("tuned")), {})
    done = [r for r in runs.values() if r.get("status") == "completed"]
    commits = sorted({r["code"] for r in done if r.get("code")})
    provenance = {
        "command": f"python -m flows.reproduce {part}{'' if preset == PRESET else ' --preset ' + preset}{(' ' + sets) if sets else ''}",
        "preset": f"{preset} (promptintern/config.py), each variant's settings from promptintern/variants.py",
        "code": ", ".join(commits) or code_version(),
        "model": cfg.model,
        "data": (f"{cfg.dataset}: {cfg.train_subset} training rows (shuffled with seed {cfg.seed}, first "
                 f"{cfg.train_subset}); {cfg.eval.test_split} split, "
                 f"{'first ' + str(cfg.eval.test_subset) + ' rows' if cfg.eval.test_subset else 'all rows'}"
                 f" ({tuned.get('n', '?')} scored)"),
        "training": (f"LoRA r {cfg.lora.r} alpha {cfg.lora.alpha} on {', '.join(cfg.lora.target_modules)}; "
                     f"batch {cfg.train.batch_size}, lr {cfg.train.lr:g}, seed {cfg.train.seed}; " + (
                         f"equal steps: {cfg.train.total_epochs:g} passes over the training rows per variant, "
                         f"split over its stages evenly unless its settings say otherwise (train.stage_weights, "
                         f"train.adaptive; each row's recipe is in its record)" if cfg.train.total_epochs else
                         f"{cfg.train.epochs_per_stage:g} passes over the rows per stage")),
        "decoding": f"greedy, max_new_tokens {cfg.eval.max_new_tokens}, batch {cfg.eval.batch_size}",
        "scoring": tuned.get("sacrebleu_signature")
        and f"sacrebleu {tuned['sacrebleu_signature']}; EM: exact match after collapsing runs of whitespace; NLC2CMD as in the NeurIPS 2020 challenge"
        or ("pass@1 in the sandbox" if tuned.get("metric") == "pass@1" else tuned.get("metric", "n/a")),
        "input tokens": "the model's own tokenizer, the prompt exactly as fed to the model",
        "s / instance": ("batched generation wall time / rows, measured in the run (one run at a time; each "
                         "row's load average before and after is in the JSON record)"),
        "machine": _machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall time": (f"{(time.time() - started) / 60:.0f} min this invocation; per variant: "
                      + ", ".join(f"{v} {r['wall_minutes']:g}" for v, r in runs.items() if r.get("wall_minutes") is not None)
                      + " min (cached boxes take seconds)"),
        "load average": f"{load_start:.2f} at the start, {os.getloadavg()[0]:.2f} now",
    }
    if kept:
        provenance["resumed"] = (f"{len(kept)} rows kept from earlier invocations with --resume "
                                 f"(same config digest): {', '.join(kept)}")
    pending = [v for v, r in runs.items() if r.get("status") == "pending"]
    if pending:
        provenance["pending"] = f"{len(pending)} variants not run yet: {', '.join(pending)}"
    return {"part": part, "runs": runs, "base_full_prompt": base, "base_query_only": base_query, "provenance": provenance,
            "significance": significance(part, runs, doc_path, PARTS[part].baseline),
            "seed_significance": seed_significance(part, runs, doc_path, PARTS[part].baseline)}


@flow(name="promptintern-retime", log_prints=True)
def retime_flow(parts: tuple[str, ...] = TIMED_PARTS, rows: int = 24, repeats: int = 3,
                artifact_root: str = "artifacts", doc: str | None = None) -> dict:
    """Measure again, side by side, the seconds per instance of every model the parts' records
    (docs/results/<part>.json) name, and rewrite the ``timing`` region of the document.

    Each part is timed in one go (its speed-ups compare models measured together); a part whose
    models are not under the artifact root (its rows came from another sitting) keeps the timing
    the record already holds for it."""
    logger = get_run_logger()
    doc_path = Path(doc) if doc else DOC
    root = Path(in_repo(artifact_root))
    out = doc_path.parent / "results"
    previous = _load_record(out / "timing.json").get("parts", {})
    record: dict[str, dict] = {"parts": {}}
    for part in parts:
        path = out / f"{part}.json"
        if not path.exists():
            logger.warning("no record of part %s (%s): run `python -m flows.reproduce %s` first", part, path, part)
            continue
        evals, forms, missing = models_of(part, json.loads(path.read_text())["runs"], root)
        if missing:  # rows kept with --resume from another sitting: their models are not here
            logger.warning("%s: not re-timed, their models are not under %s (rerun the part without --resume "
                           "to rebuild them): %s", part, root, ", ".join(missing))
        if not evals:
            if part in previous:
                logger.warning("%s: keeping the timing of %s", part, previous[part]["provenance"]["finished"])
                record["parts"][part] = previous[part]
            continue
        load_start = os.getloadavg()[0]
        timing = task(name=f"retime-{part}")(retime)(root, evals, rows, repeats)
        provenance = {
            "command": f"python -m flows.reproduce timing --rows {rows} --repeats {repeats}",
            "what": (f"each model of the part generates for the first {rows} test rows with its own prompt "
                     f"form, batch size and max_new_tokens; {repeats} rounds in rotating order, median"),
            "code": code_version(),
            "machine": _machine(),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load average": f"{load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        }
        if missing:
            provenance["not re-timed"] = f"models not in the artifact root: {', '.join(missing)}"
        record["parts"][part] = {"timing": timing, "forms": forms, "provenance": provenance}
    for part, kept in previous.items():  # parts not asked for this time stay as they were
        record["parts"].setdefault(part, kept)
    if not record["parts"]:
        raise FileNotFoundError(f"no completed runs with their models under {root} in {out}; run the parts first")
    out.mkdir(parents=True, exist_ok=True)
    (out / "timing.json").write_text(json.dumps(record, indent=2) + "\n")
    text = doc_path.read_text() if doc_path.exists() else HEADER
    doc_path.write_text(replace_region(text, "timing", _timing_body(record)))
    return record


def _timing_body(record: dict) -> str:
    out = []
    def place(part: str) -> int:  # the document's order, whichever part was re-timed last
        return TIMED_PARTS.index(part) if part in TIMED_PARTS else len(TIMED_PARTS)

    for part, entry in sorted(record["parts"].items(), key=lambda item: place(item[0])):
        out += [f"#### {part}", "", timing_markdown(entry["timing"], entry["forms"]), "",
                "How these numbers were made:", ""]
        out += [f"- {k}: {v}" for k, v in entry["provenance"].items()]
        out.append("")
    return "\n".join(out)


def render(names: list[str], doc: str | None = None, artifact_root: str | None = None) -> list[str]:
    """Rewrite the regions of ``names`` in the document from their stored records, running no model
    (after a change to the table code, or to merge records made in another checkout). The
    significance tests are recomputed from the published predictions and the plot is redrawn; a
    row's predictions that are not published yet are taken from its benchmark under
    ``artifact_root`` when it is there."""
    doc_path = Path(doc) if doc else DOC
    done = []
    for name in names:
        path = doc_path.parent / "results" / f"{name}.json"
        if name != "map" and not path.exists():
            raise FileNotFoundError(f"{path}: no record of {name!r}; run `python -m flows.reproduce {name}` first")
        record = _load_record(path)
        if name == "map":
            if render_map(doc_path) is None:
                raise FileNotFoundError(f"no map-<rows> record beside {doc_path}: run `python -m flows.reproduce "
                                        f"map-16` (or another size) first")
        elif name == "timing":
            text = doc_path.read_text() if doc_path.exists() else HEADER
            doc_path.write_text(replace_region(text, "timing", _timing_body(record)))
        else:
            if artifact_root:
                _publish_missing_predictions(name, record["runs"], Path(in_repo(artifact_root)), doc_path)
            record["significance"] = significance(name, record["runs"], doc_path, PARTS[name].baseline)
            seeds = seed_significance(name, record["runs"], doc_path, PARTS[name].baseline)
            if seeds or "seed_significance" in record:  # a record without extra seeds stays byte for byte
                record["seed_significance"] = seeds
            record["plot"] = _draw_plot(PARTS[name], record, doc_path)
            path.write_text(json.dumps(record, indent=2) + "\n")
            write_document(doc_path, [(PARTS[name], record)], HEADER)
        done.append(name)
    return done


def render_map(doc_path: Path) -> Path | None:
    """The ``map`` region: every ``map-<rows>`` record found beside the document, as one table and one
    plot of the metric against training rows (``promptintern.scaling``); None before any has run."""
    records = {}
    for rows in MAP_SIZES:
        path = doc_path.parent / "results" / f"map-{rows}.json"
        if path.exists():
            records[rows] = _load_record(path)
    if not records:
        return None
    points = [p for p in map_points(records) if p["variant"] in MAP_VARIANTS]  # the rows every size has
    first = next(iter(records.values()))
    plot = plot_metric_vs_rows(points, doc_path.parent / "results" / "map_metric_vs_rows.png",
                               f"nl2bash · {first['provenance']['model']} · test split")
    commands = "; ".join(f"`{r['provenance']['command']}`" for r in records.values())
    body = (f"{map_markdown(points)}\n\n![metric vs training rows]({os.path.relpath(plot, doc_path.parent)})\n\n"
            f"Made by {commands} (each with `--extra-seeds` for the seeds it shows), then "
            f"`python -m flows.reproduce map --render-only`; every number's provenance is in "
            f"`docs/results/map-<rows>.json`.\n")
    text = doc_path.read_text() if doc_path.exists() else HEADER
    doc_path.write_text(replace_region(text, "map", body))
    return plot


def _publish_missing_predictions(part: str, runs: dict[str, dict], root: Path, doc_path: Path) -> None:
    for variant, run in runs.items():
        dest = _predictions_path(doc_path, part, variant)
        if run.get("status") != "completed" or dest.exists():
            continue
        eval_dir = run.get("eval_dir") or (eval_dirs_of(run, root) or {}).get("promptintern")
        if eval_dir and (root / eval_dir / "predictions.jsonl").exists():
            if sha256_file(root / eval_dir / "predictions.jsonl") != run["predictions_sha256"]:
                raise ValueError(f"{root / eval_dir}: not the predictions the record of {part}/{variant} names")
            export_predictions(root / eval_dir, dest)


def _flatten(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="+", choices=sorted(PARTS) + ["map", "timing"],
                        help="timing: re-measure seconds per instance side by side, of the parts named with it "
                             "(alone, or beside ablations only, whose models are nl2bash's: of nl2bash and mbpp)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field for every variant (recorded in the table's command)")
    parser.add_argument("--preset", default=PRESET, help="default cpu-repro (the one docs/results.md uses)")
    parser.add_argument("--artifact-root", default="artifacts")
    parser.add_argument("--resume", action="store_true",
                        help="keep the completed rows of docs/results/<part>.json whose config is unchanged; run the rest")
    parser.add_argument("--doc", default=None, help="the document to rewrite (default docs/results.md)")
    parser.add_argument("--render-only", action="store_true",
                        help="run no model: rewrite the named parts' tables from docs/results/<part>.json and the published predictions")
    parser.add_argument("--extra-seeds", default="", metavar="1,2",
                        help="run every variant again with these train.seed values (the table adds each "
                             "row's per-seed scores, their mean and sd, and a p-value per seed)")
    parser.add_argument("--variants", default="", metavar="a,b",
                        help="run only these variants of the part (the others keep their rows with --resume)")
    parser.add_argument("--rows", type=int, default=24, help="timing: test rows per model")
    parser.add_argument("--repeats", type=int, default=3, help="timing: rounds over all models")
    parser.add_argument("--debug", action="store_true", help="on failure, print the tracebacks here too")
    args = parser.parse_args(argv)
    return run_cli(lambda: _main(parser, args), "flows.reproduce", args.debug)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.render_only:
        for name in render(list(dict.fromkeys(args.part)), args.doc, args.artifact_root):
            print(f"{name}: region rewritten from its record")
        return 0
    overrides = _parse_set(args.set) or None
    try:
        extra_seeds = tuple(int(x) for x in args.extra_seeds.split(",") if x.strip())
    except ValueError:
        parser.error(f"--extra-seeds {args.extra_seeds!r}: give integers separated by commas, e.g. 1,2")
    parts = [name for name in args.part if name not in ("map", "timing")]
    for name in parts:
        resolve_config(args.preset, _merge({"dataset": PARTS[name].dataset}, overrides or {}), None, "promptintern")
    for name in parts:
        reproduce(part=name, preset=args.preset, overrides=overrides, artifact_root=args.artifact_root, doc=args.doc,
                  resume=args.resume, extra_seeds=extra_seeds,
                  only=tuple(v.strip() for v in args.variants.split(",") if v.strip()))
    if any(name.startswith("map") for name in args.part):
        render_map(Path(args.doc) if args.doc else DOC)
    if "timing" in args.part:  # beside parts: only theirs (`mbpp timing` times MBPP's models); alone: all
        timed = tuple(name for name in parts if name in TIMED_PARTS) or TIMED_PARTS
        retime_flow(parts=timed, rows=args.rows, repeats=args.repeats,
                    artifact_root=args.artifact_root, doc=args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
