#!/usr/bin/env bash
# Start an MLflow tracking server in the background and wait until it answers /health.
#
#   scripts/start_mlflow_server.sh HOST PORT BACKEND_STORE_URI ARTIFACTS_DESTINATION [mlflow server flags...]
#   scripts/start_mlflow_server.sh --stop PORT
#
#   HOST                   interface to bind: 127.0.0.1 (this machine only), the node's private
#                          address, or 0.0.0.0 (every interface: a firewall / security group must
#                          keep the port closed to the internet)
#   BACKEND_STORE_URI      runs, params, metrics: sqlite:////abs/path/mlflow.db or postgresql://...
#                          (leave the password out of the URI: ~/.pgpass or PGPASSWORD)
#   ARTIFACTS_DESTINATION  where uploaded artifacts go (served through the server, --serve-artifacts):
#                          s3://bucket/prefix, gs://bucket/prefix, or a directory (e.g. on NFS)
#
# Used by cluster.yaml / cluster.local.yaml (head_start_ray_commands) and by tests/test_cluster.py.
# Idempotent: a server this script started earlier on PORT is stopped first (`ray up` reruns the
# head's start commands). The pid and the log are kept in $MLFLOW_SERVER_STATE_DIR
# (default ~/.leveled-kd/mlflow-server). The mlflow executable is $MLFLOW, else `mlflow` on PATH.
set -euo pipefail

state="${MLFLOW_SERVER_STATE_DIR:-$HOME/.leveled-kd/mlflow-server}"

stop() {  # stop the server this script started on port $1, if it is still running
  local pidfile="$state/mlflow-$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

if [ "${1:-}" = "--stop" ]; then
  [ $# -eq 2 ] || { echo "usage: $0 --stop PORT" >&2; exit 2; }
  stop "$2"
  exit 0
fi
if [ $# -lt 4 ]; then
  echo "usage: $0 HOST PORT BACKEND_STORE_URI ARTIFACTS_DESTINATION [mlflow server flags...]" >&2
  exit 2
fi
host="$1" port="$2" store="$3" artifacts="$4"
shift 4
mlflow="${MLFLOW:-mlflow}"
command -v "$mlflow" >/dev/null || { echo "start_mlflow_server: '$mlflow' not found (install the project first)" >&2; exit 1; }

mkdir -p "$state"
case "$store" in sqlite:///*) mkdir -p "$(dirname "${store#sqlite:///}")" ;; esac
case "$artifacts" in *://*) ;; *) mkdir -p "$artifacts" ;; esac
stop "$port"

log="$state/mlflow-$port.log"
# its own session (setsid), so that it outlives the shell that started it and can be stopped as a group
setsid nohup "$mlflow" server --host "$host" --port "$port" --backend-store-uri "$store" \
  --artifacts-destination "$artifacts" --serve-artifacts "$@" > "$log" 2>&1 < /dev/null &
echo $! > "$state/mlflow-$port.pid"

probe="$host"
case "$host" in 0.0.0.0|::|"[::]") probe=127.0.0.1 ;; esac
url="http://$probe:$port/health"
for _ in $(seq 1 "${MLFLOW_SERVER_START_TIMEOUT:-120}"); do
  if python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null; then
    echo "mlflow server on $host:$port (store $store, artifacts $artifacts; log $log)"
    exit 0
  fi
  kill -0 "$(cat "$state/mlflow-$port.pid")" 2>/dev/null || break
  sleep 1
done
echo "start_mlflow_server: the server did not answer $url; last lines of $log:" >&2
tail -n 20 "$log" >&2 || true
stop "$port"
exit 1
