#!/usr/bin/env bash
# Stop what scripts/prefect-up.sh started: the worker, then the server (SIGTERM to each process
# group, SIGKILL after 20 s). The database and the deployments stay in $PREFECT_HOME.
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${PREFECT_HOME:-$PWD/.prefect}/stack"
for name in worker server; do
    pidfile="$stack/$name.pid"
    [ -f "$pidfile" ] || { echo "$name: not started by prefect-up"; continue; }
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; fi
        echo "$name: stopped"
    else
        echo "$name: was not running"
    fi
    rm -f "$pidfile"
done
