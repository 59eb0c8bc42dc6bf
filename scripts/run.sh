#!/usr/bin/env bash
# Install (or reuse) the pinned environment, lay out offline datasets when the shared
# copies are beside the checkout, then run the study:
#   scripts/run.sh --space leveled_kd [run_study.py flags]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/bootstrap.sh" | tail -n 1)"
cd "$root"
"$root/scripts/prepare_data.sh" "$root/data" >/dev/null
exec "$venv/bin/python" run_study.py "$@"
