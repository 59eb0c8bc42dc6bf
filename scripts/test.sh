#!/usr/bin/env bash
# Install (or reuse) the pinned environment, then run the test suite.
#   scripts/test.sh [pytest args]        (PYTEST_WORKERS=N: N parallel workers, default 2; 0: one process)
# Exits non-zero on any failure, including "no tests collected" (pytest's exit 5).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/bootstrap.sh" | tail -n 1)"
cd "$root"
export MLFLOW_DISABLE_TELEMETRY=true RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# Two workers (pytest-xdist; PYTEST_WORKERS=0 runs in one process): most of the suite's time is end-to-end
# studies whose Ray, MLflow and subprocess start-ups leave a core idle; the cluster tests stay on one worker.
exec "$venv/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadgroup "$@"
