#!/usr/bin/env bash
# Bring up the local Prefect stack for promptintern's deployments, and say where it is:
# a Prefect server (API + UI), the work pool `local-process`, both deployments of prefect.yaml,
# and one process worker. Idempotent: what is already up is left as it is.
#
#   make prefect-up                     # or: bash scripts/prefect-up.sh
#   PROMPTINTERN_PREFECT_PORT=4300 PROMPTINTERN_WORKER_LIMIT=2 make prefect-up
#   PROMPTINTERN_NIGHTLY=off make prefect-up      # deploy with the 02:00 UTC schedule paused
#
# State lives in $PREFECT_HOME (default: .prefect in the repository); logs and pid files in
# $PREFECT_HOME/stack/. `make prefect-down` stops the worker and the server.
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
port="${PROMPTINTERN_PREFECT_PORT:-4200}"
export PREFECT_API_URL="${PREFECT_API_URL:-http://127.0.0.1:$port/api}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
python="${PYTHON:-$PWD/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
prefect=("$python" -m prefect)
stack="$PREFECT_HOME/stack"
mkdir -p "$stack"
set -m  # background processes in their own process groups, with SIGINT / SIGTERM at their defaults

healthy() { "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" \
            "$PREFECT_API_URL" >/dev/null 2>&1; }
alive() { [ -f "$stack/$1.pid" ] && kill -0 "$(cat "$stack/$1.pid")" 2>/dev/null; }

if healthy; then
    echo "Prefect server: already up at $PREFECT_API_URL"
else
    nohup "${prefect[@]}" server start --host 127.0.0.1 --port "$port" --analytics-off \
        >"$stack/server.log" 2>&1 </dev/null &
    echo $! >"$stack/server.pid"
    for _ in $(seq 1 300); do  # up to 90 s: a fresh database takes ~15 s here
        healthy && break
        if ! alive server; then echo "the Prefect server exited; its log ($stack/server.log):" >&2
            tail -n 30 "$stack/server.log" >&2; exit 1; fi
        sleep 0.3
    done
    healthy || { echo "the Prefect server did not answer in 90 s; see $stack/server.log" >&2; exit 1; }
    echo "Prefect server: up at $PREFECT_API_URL (log $stack/server.log)"
fi

"${prefect[@]}" work-pool inspect local-process >/dev/null 2>&1 \
    || "${prefect[@]}" work-pool create local-process --type process >/dev/null
echo "work pool: local-process"

echo "deploying prefect.yaml: promptintern/ablation, and promptintern-sweep/nightly, whose schedule"
echo "  (02:00 UTC) runs EVERY variant on the cpu-demo preset on any worker of the pool: hours of compute."
"${prefect[@]}" --no-prompt deploy --all >"$stack/deploy.log" 2>&1 \
    || { echo "prefect deploy failed; its output ($stack/deploy.log):" >&2; tail -n 30 "$stack/deploy.log" >&2; exit 1; }
if [ "${PROMPTINTERN_NIGHTLY:-on}" = off ]; then
    "$python" - <<'PY'
import asyncio
from prefect.client.orchestration import get_client
async def main():
    async with get_client() as client:
        deployment = await client.read_deployment_by_name("promptintern-sweep/nightly")
        for schedule in deployment.schedules:
            await client.update_deployment_schedule(deployment.id, schedule.id, active=False)
asyncio.run(main())
PY
    echo "  the nightly schedule is paused (PROMPTINTERN_NIGHTLY=off)"
else
    echo "  the nightly schedule is active; pause it with PROMPTINTERN_NIGHTLY=off make prefect-up, or in the UI"
fi

if alive worker; then
    echo "worker: already running (pid $(cat "$stack/worker.pid"))"
else
    nohup "${prefect[@]}" worker start --pool local-process --limit "${PROMPTINTERN_WORKER_LIMIT:-3}" \
        >"$stack/worker.log" 2>&1 </dev/null &
    echo $! >"$stack/worker.pid"
    echo "worker: started, up to ${PROMPTINTERN_WORKER_LIMIT:-3} runs at once (log $stack/worker.log)"
fi

echo
echo "UI: ${PREFECT_API_URL%/api}"
echo "For prefect commands in your shell:  export PREFECT_HOME=$PREFECT_HOME PREFECT_API_URL=$PREFECT_API_URL"
echo "Stop everything:  make prefect-down"
