"""The ``sweep`` flow: many paper variants of the one ``promptintern`` flow, one comparison table.

    python -m flows.sweep --preset tiny --variant promptintern --variant direct-no-template ...
    prefect deployment run promptintern-sweep/nightly     # the scheduled form (prefect.yaml)

Two ways to fan out:

- ``mode="deployment"``: every variant becomes a run of the deployment ``promptintern/ablation``
  (``run_deployment``, as sub-runs of the sweep), so every worker polling that work pool, on any
  machine, can take one. The sweep waits for them and reads each run's results back from the
  table artifact the run published.
- ``mode="in-process"``: the variants run one after another as subflows of this process; no worker
  or server needed (Prefect's embedded default).

Either way the upstream boxes the variants share (prepared model, dataset, compressed templates,
retrieval bank) are computed once per sweep: they are cached tasks keyed by content, and concurrent
runs wait on the first one's lock (``tasks.locking``) and then read its folder as ``Cached``.

A variant that needs what is not configured (LLMLingua-2 without a token-classification model, the
API compressor without an endpoint) is skipped with its reason; a failed run is reported as failed.
Both appear in the table; the sweep itself fails after publishing when any run failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from flows.cli import run_cli
from flows.dag import _parse_set, in_repo, promptintern, resolve_config, task_path
from promptintern.report import SWEEP_COLUMNS, write_sweep_report
from promptintern.variants import VARIANTS, VariantUnavailable

ABLATION = "promptintern/ablation"
# Four variants that span the paper's tables on any machine (no extra model or endpoint needed).
DEFAULT_VARIANTS = ["promptintern", "no-example-absorption", "direct-template-kshot", "direct-no-template"]


def _plan(variants: list[str], preset: str, dataset: str | None, model: str | None,
          overrides: dict[str, Any] | None, task: str | None = None) -> tuple[list[str], list[dict]]:
    """Split the variants into runnable ones and skipped ones (with the reason); unknown names fail."""
    runnable, skipped = [], []
    for name in variants:
        try:
            resolve_config(preset, overrides, None, name, dataset, model, task)
        except VariantUnavailable as exc:
            skipped.append({"variant": name, "status": "skipped", "reason": str(exc), "rows": []})
        else:
            runnable.append(name)
    return runnable, skipped


def _table_rows(flow_run_id: UUID) -> list[dict]:
    """The summary rows a ``promptintern`` run published as its table artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["table"])))
    for artifact in artifacts:
        data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        if data and isinstance(data, list) and "method" in data[0]:
            return data
    return []


def _run_deployments(variants: list[str], parameters: dict[str, Any], deployment: str,
                     poll_seconds: float, timeout_s: float | None) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    started = {name: run_deployment(deployment, parameters={**parameters, "variant": name}, timeout=0,
                                    as_subflow=True, tags=["sweep", name], flow_run_name=f"sweep-{name}")
               for name in variants}
    logger.info("submitted %d runs of %s: %s", len(started), deployment,
                ", ".join(f"{n}={r.id}" for n, r in started.items()))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    final: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        while len(final) < len(started):
            for name, run in started.items():
                if name not in final:
                    state = client.read_flow_run(run.id).state
                    if state is not None and state.is_final():
                        final[name] = state
                        logger.info("%s: %s", name, state.name)
            if len(final) < len(started):
                if deadline is not None and time.monotonic() > deadline:
                    break
                time.sleep(poll_seconds)
    runs = []
    for name, run in started.items():
        state = final.get(name)
        if state is None:
            runs.append({"variant": name, "status": "timed out", "flow_run_id": str(run.id), "rows": [],
                         "reason": f"not final after {timeout_s} s"})
        elif state.is_completed():
            runs.append({"variant": name, "status": "completed", "flow_run_id": str(run.id),
                         "rows": _table_rows(run.id)})
        else:
            runs.append({"variant": name, "status": state.name.lower(), "flow_run_id": str(run.id), "rows": [],
                         "reason": state.message or ""})
    return runs


def _run_in_process(variants: list[str], parameters: dict[str, Any]) -> list[dict]:
    runs = []
    for name in variants:
        state = promptintern(**parameters, variant=name, return_state=True)
        if state.is_completed():
            result = state.result()
            runs.append({"variant": name, "status": "completed", "rows": result["summary"],
                         "run_dir": result["run_dir"], "flow_run_id": str(state.state_details.flow_run_id)})
        else:
            runs.append({"variant": name, "status": state.name.lower(), "rows": [], "reason": state.message or "",
                         "flow_run_id": str(state.state_details.flow_run_id)})
    return runs


@task(name="sweep-report")
def sweep_report_task(root: str, runs: list[dict], provenance: dict) -> dict:
    """Write and publish the comparison: table artifact, Markdown report, link to the PNG plot."""
    result = write_sweep_report(Path(root), runs, provenance)
    create_table_artifact([{c: row.get(c, "") for c in SWEEP_COLUMNS} for row in result["table"]],
                          key="sweep-comparison", description="every variant of this sweep, paper layout")
    create_markdown_artifact(f"# promptintern sweep\n\n{result['markdown']}\n\nPlot: {result['plot']}\n",
                             key="sweep-report", description="comparison table and how it was made")
    create_link_artifact(Path(result["plot"]).as_uri(), link_text="metric vs input tokens per query (PNG)",
                         key="sweep-plot", description=result["plot"])
    get_run_logger().info("sweep comparison (%s):\n%s", result["sweep_dir"], result["markdown"])
    return result


@flow(name="promptintern-sweep", log_prints=True)
def sweep(variants: list[str] | None = None, preset: str = "cpu-demo", dataset: str | None = None,
          model: str | None = None, overrides: dict[str, Any] | None = None,
          mode: Literal["deployment", "in-process"] = "in-process", deployment: str = ABLATION,
          artifact_root: str = "artifacts", poll_seconds: float = 5.0, timeout_s: float | None = None,
          task: str | None = None) -> dict:
    """Run ``variants`` (default: four that span the paper's tables; ``["all"]``: every variant)
    with the same preset / dataset / model / overrides, then publish one comparison table and plot."""
    names = list(VARIANTS) if variants in (["all"], ("all",)) else list(variants or DEFAULT_VARIANTS)
    if task:  # a task file travels as an absolute path: a worker elsewhere in the tree finds it
        dataset, task = task_path(task), None
    runnable, skipped = _plan(names, preset, dataset, model, overrides)
    for row in skipped:
        get_run_logger().warning("skipping %s: %s", row["variant"], row["reason"])
    parameters = {"preset": preset, "dataset": dataset, "model": model, "overrides": overrides,
                  "artifact_root": artifact_root}
    if mode == "deployment":
        runs = _run_deployments(runnable, parameters, deployment, poll_seconds, timeout_s)
    else:
        runs = _run_in_process(runnable, parameters)
    runs += skipped
    runs.sort(key=lambda r: names.index(r["variant"]))

    cfg = resolve_config(preset, overrides, None, None, dataset, model)
    provenance = {
        "variants": ", ".join(names),
        "preset": preset,
        "model": cfg.model,
        "dataset": f"{cfg.dataset} ({cfg.eval.test_split} split, first {cfg.eval.test_subset or 'all'} rows; "
                   f"{cfg.train_subset or 'all'} training rows)",
        "seed": cfg.seed,
        "overrides": json.dumps(overrides or {}, sort_keys=True),
        "mode": mode if mode == "in-process" else f"runs of {deployment}",
        "scoring": "; ".join(sorted({r["scoring"] for run in runs for r in run["rows"] if r.get("scoring")})) or "n/a",
        "input tokens": "counted with the run model's own tokenizer, prompt as fed to the model",
        "per-run provenance": "each run's report folder (runs/*/results.md): schedule, training, rates",
    }
    root = in_repo(artifact_root)
    result = sweep_report_task(root, runs, provenance)
    failed = [r["variant"] for r in runs if r["status"] not in ("completed", "skipped")]
    if failed:
        raise RuntimeError(f"sweep: {len(failed)} of {len(runs)} variant runs did not complete: {', '.join(failed)} "
                           f"(the comparison in {result['sweep_dir']} shows the rest)")
    return {**result, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", default=[], help="repeatable; 'all' for every variant")
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--task", "--dataset", dest="task", default=None,
                        help="nl2bash | mbpp | nl2f | path/to/task.yaml (default: the preset's)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--mode", choices=("in-process", "deployment"), default="in-process")
    parser.add_argument("--artifact-root", default="artifacts")
    parser.add_argument("--debug", action="store_true", help="on failure, print the tracebacks here too")
    args = parser.parse_args(argv)

    def body() -> int:
        overrides = _parse_set(args.set) or None  # bad keys and variant names fail before Prefect starts
        _plan(list(VARIANTS) if args.variant == ["all"] else args.variant or DEFAULT_VARIANTS, args.preset, None,
              args.model, overrides, args.task)
        result = sweep(variants=args.variant or None, preset=args.preset, task=args.task, model=args.model,
                       overrides=_parse_set(args.set) or None, mode=args.mode, artifact_root=args.artifact_root)
        print(result["markdown"])
        print(f"plot: {result['plot']}")
        return 0

    return run_cli(body, "flows.sweep", args.debug)


if __name__ == "__main__":
    sys.exit(main())
