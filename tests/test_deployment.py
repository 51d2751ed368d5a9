"""prefect.yaml for real: a local Prefect server, a process worker, `prefect deploy --all`, then
`prefect deployment run promptintern/ablation` and the sweep deployment, on the tiny model.

The README's "Deployments and sweeps" recipe, step by step, in subprocesses with their own
PREFECT_HOME (the other tests' embedded API is not involved). Results are read back over REST.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]
SWEEP_VARIANTS = ["promptintern", "no-template-compression", "direct-template-only", "direct-no-template"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(PREFECT + list(args), env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _start(env: dict, log: Path, *args: str) -> subprocess.Popen:
    """A background Prefect process in its own session, SIGINT at its default (PREFECT.md: a worker
    started in the background of a script ignores SIGINT otherwise and survives one SIGTERM)."""
    return subprocess.Popen(PREFECT + list(args), env=env, cwd=REPO_ROOT, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _post(api: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_data_dir):
    home = tmp_path_factory.mktemp("prefect-server-home")
    api = f"http://127.0.0.1:{_free_port()}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PROMPTINTERN_LOCK_DIR": str(home / "locks")}
    port = api.rsplit(":", 1)[1].split("/")[0]
    server = _start(env, home / "server.log", "server", "start", "--host", "127.0.0.1", "--port", port,
                    "--analytics-off")
    worker = None
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{api}/health", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None, (home / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the Prefect server did not come up in 120 s"
                time.sleep(0.3)
        created = _cli(env, "work-pool", "create", "local-process", "--type", "process", "--overwrite")
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = _cli(env, "--no-prompt", "deploy", "--all")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        # a sweep holds one slot while its variant runs use the others
        worker = _start(env, home / "worker.log", "worker", "start", "--pool", "local-process", "--limit", "3")
        yield {"env": env, "api": api, "home": home, "root": tmp_path_factory.mktemp("deployed-artifacts"),
               "data": tiny_data_dir, "deployed": deployed.stdout}
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)


def _run(server: dict, deployment: str, params: dict, timeout: float) -> subprocess.CompletedProcess:
    return _cli(server["env"], "deployment", "run", deployment, "--params", json.dumps(params),
                "--watch", "--watch-interval", "1", timeout=timeout)


def _flow_run_id(output: str) -> str:
    """`prefect deployment run` prints the new flow run's UUID."""
    for line in output.splitlines():
        if "UUID:" in line:
            return line.split("UUID:")[1].strip()
    raise AssertionError(f"no flow run id in:\n{output}")


def _artifacts(server: dict, flow_run_id: str | None = None) -> list[dict]:
    body: dict = {"limit": 200}
    if flow_run_id:
        body["artifacts"] = {"flow_run_id": {"any_": [flow_run_id]}}
    return _post(server["api"], "/artifacts/filter", body)


def test_prefect_yaml_deploys_the_ablation_and_the_nightly_sweep(server):
    deployments = _post(server["api"], "/deployments/filter", {})
    by_name = {d["name"]: d for d in deployments}
    assert {"ablation", "nightly"} <= set(by_name)
    schedules = by_name["nightly"]["schedules"]
    assert [s["schedule"]["cron"] for s in schedules] == ["0 2 * * *"]
    assert by_name["ablation"]["work_pool_name"] == "local-process"


def test_deployment_run_of_the_ablation_completes_on_a_worker(server):
    params = {"preset": "tiny", "variant": "promptintern", "artifact_root": str(server["root"]),
              "overrides": {"data_dir": str(server["data"])}}
    run = _run(server, "promptintern/ablation", params, timeout=420)
    worker_log = (server["home"] / "worker.log").read_text()[-4000:]
    assert run.returncode == 0, run.stdout + run.stderr + worker_log
    assert "Completed" in run.stdout
    artifacts = _artifacts(server, _flow_run_id(run.stdout))
    kinds = {(a["key"], a["type"]) for a in artifacts}
    assert ("results-promptintern-nl2bash", "table") in kinds
    assert ("report-promptintern-nl2bash", "markdown") in kinds
    assert ("folder-promptintern-nl2bash", "markdown") in kinds or any(t == "link" for _, t in kinds)
    progress = [a for a in artifacts if a["type"] == "progress"]
    # one per training stage, and one for the equal-steps direct baseline
    assert len(progress) == 4 and all(a["data"] == 100.0 for a in progress)
    rows = json.loads(next(a["data"] for a in artifacts if a["type"] == "table"))
    assert [r["method"] for r in rows] == ["promptintern", "direct-no-template", "base-full-prompt", "base-query-only"]
    assert rows[1]["train steps"] == rows[0]["train steps"] and rows[1]["p vs promptintern"] is not None
    assert list((server["root"] / "runs").glob("*/results.md"))


def test_the_sweep_deployment_fans_variants_out_over_the_pool(server, tmp_path):
    root = tmp_path / "sweep-artifacts"  # empty: every box is computed within this sweep
    params = {"variants": SWEEP_VARIANTS + ["llmlingua2-0.3"], "preset": "tiny", "mode": "deployment",
              "artifact_root": str(root), "overrides": {"data_dir": str(server["data"])},
              "poll_seconds": 1}
    run = _run(server, "promptintern-sweep/nightly", params, timeout=600)
    worker_log = (server["home"] / "worker.log").read_text()[-4000:]
    assert run.returncode == 0, run.stdout + run.stderr + worker_log
    sweep_id = _flow_run_id(run.stdout)
    # every variant ran as its own run of promptintern/ablation, under the sweep
    children = _post(server["api"], "/flow_runs/filter",
                     {"flow_runs": {"parent_flow_run_id": {"any_": [sweep_id]}}})
    by_variant = {c["parameters"]["variant"]: c for c in children}
    assert set(by_variant) == set(SWEEP_VARIANTS)
    assert all(c["state_type"] == "COMPLETED" for c in children)
    artifacts = {a["key"]: a for a in _artifacts(server, sweep_id)}
    table = json.loads(artifacts["sweep-comparison"]["data"])
    assert [r["variant"] for r in table] == ["base model, full prompt", *SWEEP_VARIANTS, "llmlingua2-0.3"]
    assert all(r["status"] == "completed" for r in table[1:-1])
    assert table[-1]["status"].startswith("skipped: ") and "compression.model" in table[-1]["status"]
    plot = Path(artifacts["sweep-plot"]["description"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # two variant runs at a time shared one artifact root: each folder was built by exactly one
    # task run (the others waited on its lock and read it as Cached)
    task_runs = _post(server["api"], "/task_runs/filter",
                      {"flow_runs": {"id": {"any_": [c["id"] for c in children]}}, "limit": 200})
    built: dict[str, int] = {}
    for run in task_runs:
        name = run["name"].rsplit("-", 1)[0]
        built[name] = built.get(name, 0) + (run["state_name"] == "Completed")
    for task, kind in (("prepare-model", "models"), ("load-dataset", "datasets"), ("compress-template", "templates"),
                       ("build-retrieval-bank", "banks"), ("materialize-shard", "shards"),
                       ("train-stage", "adapters"), ("benchmark", "evals")):
        folders = [p for p in (root / kind).iterdir() if not p.name.startswith(".")]
        assert built.get(task, 0) == len(folders), (task, built, len(folders))
    # one model; the data's training side and its scored rows, each built once for every variant
    assert built["prepare-model"] == 1 and built["load-dataset"] == 2


def test_a_task_file_runs_through_the_ablation_deployment(server):
    """`prefect deployment run promptintern/ablation -p task=path/to/task.yaml`, as the README says."""
    run = _cli(server["env"], "deployment", "run", "promptintern/ablation", "-p", "task=examples/unit-conversion/task.yaml",
               "-p", "preset=tiny", "-p", f"artifact_root={server['root'] / 'byo'}", "--watch", "--watch-interval", "1",
               timeout=420)
    worker_log = (server["home"] / "worker.log").read_text()[-4000:]
    assert run.returncode == 0, run.stdout + run.stderr + worker_log
    artifacts = _artifacts(server, _flow_run_id(run.stdout))
    assert ("results-promptintern-unit-conversion", "table") in {(a["key"], a["type"]) for a in artifacts}
    serving = list((server["root"] / "byo" / "serving").glob("*/serving.json"))
    assert len(serving) == 1 and json.loads(serving[0].read_text())["task"] == "unit-conversion"


def test_the_readmes_prefect_recipe_runs_as_written_under_set_e(tmp_path):
    """The README's recipe, line for line, as a `set -e` script: `make prefect-up` (waits for the
    server's health before it deploys), two deployment runs on the tiny preset (the nightly sweep
    small), `make prefect-down`. Only the port and PREFECT_HOME are the test's own."""
    import re

    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"<!-- BEGIN prefect-recipe -->\n```bash\n(.*?)```\n<!-- END prefect-recipe -->", text, re.S)
    assert block, "the README lost its prefect-recipe block"
    fetched = subprocess.run([sys.executable, "-m", "promptintern.data", "fetch", "--dataset", "nl2bash"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    if fetched.returncode:
        pytest.skip(f"no NL2Bash data to run the recipe on: {fetched.stderr[-300:]}")
    port = _free_port()
    script = tmp_path / "recipe.sh"
    script.write_text("set -euo pipefail\n" + block.group(1).replace("4200", str(port)))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "PROMPTINTERN_PREFECT_PORT": str(port),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PROMPTINTERN_NIGHTLY": "off",
           "PROMPTINTERN_LOCK_DIR": str(tmp_path / "locks")}
    env.pop("PREFECT_API_URL", None)
    try:
        run = subprocess.run(["bash", str(script)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                             timeout=1200)
        logs = "".join((tmp_path / "home" / "stack" / f"{n}.log").read_text()[-3000:]
                       for n in ("server", "worker") if (tmp_path / "home" / "stack" / f"{n}.log").exists())
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:] + logs
        assert f"UI: http://127.0.0.1:{port}" in run.stdout
        assert run.stdout.count("Flow run ") >= 2 and "Completed" in run.stdout
        assert "worker: stopped" in run.stdout and "server: stopped" in run.stdout
    finally:
        subprocess.run(["bash", "scripts/prefect-down.sh"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=60)
