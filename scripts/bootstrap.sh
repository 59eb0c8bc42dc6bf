#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the pinned
# dependencies into it. Idempotent: a venv whose stamp matches pyproject.toml's
# hash is reused as is, so a second run costs a second, not two minutes.
#
#   VENV=/path/to/venv scripts/bootstrap.sh     # default: ./.venv
#
# Prints the venv's path on its last line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
python="${PYTHON:-python3}"
hash="$(sha256sum < "$root/pyproject.toml" | cut -c1-16)"
stamp="$venv/.leveled-kd-installed"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  echo "bootstrap: installing pinned dependencies into $venv (about 2 minutes, 6.5 GB the first time)" >&2
  "$python" -m venv "$venv"
  log="$venv/.install.log"
  # pip's own chatter goes to a log; it is shown only when the install fails
  if ! { "$venv/bin/python" -m pip install -q --upgrade pip && "$venv/bin/python" -m pip install -q -e "$root[dev]" \
         && "$venv/bin/python" -m pip check; } > "$log" 2>&1; then
    cat "$log" >&2
    echo "bootstrap: installing into $venv failed (log: $log)" >&2
    exit 1
  fi
  echo "$hash" > "$stamp"
else
  # The editable install points at one checkout; re-point it when the venv is shared. The check runs
  # from / so that this checkout's own folder (python's cwd entry on sys.path) cannot answer for it.
  if ! (cd / && "$venv/bin/python" -c "import study, sys, os; sys.exit(0 if os.path.dirname(os.path.dirname(study.__file__)) == '$root' else 1)" 2>/dev/null); then
    "$venv/bin/python" -m pip install -q --no-deps -e "$root" > "$venv/.install.log" 2>&1 \
      || { cat "$venv/.install.log" >&2; exit 1; }
  fi
fi
echo "$venv"
