"""The MLflow and Optuna SQLite stores when several studies share one output directory."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from helpers import ROOT

OPEN_BOTH_STORES = textwrap.dedent("""
    import sys
    import optuna
    from study.tracking.runs import Tracker, sqlite_store_lock

    db_dir, name = sys.argv[1], sys.argv[2]
    Tracker(f"sqlite:///{db_dir}/mlflow.db", name)
    with sqlite_store_lock(f"sqlite:///{db_dir}/optuna.db"):
        optuna.storages.RDBStorage(f"sqlite:///{db_dir}/optuna.db")
""")


def test_studies_started_together_all_open_a_new_store(tmp_path):
    """Two reproduction runs into one output directory once raced MLflow's schema migrations on a
    new SQLite file and one died ("Online migration expected to match one row"); the store's
    creation is now serialised, so every one of several simultaneous starts succeeds."""
    script = tmp_path / "open_stores.py"
    script.write_text(OPEN_BOTH_STORES)
    for attempt in range(2):  # two fresh stores: two chances for a race to show
        db_dir = tmp_path / f"store-{attempt}"
        db_dir.mkdir()
        procs = [subprocess.Popen([sys.executable, str(script), str(db_dir), f"study-{i}"], cwd=ROOT,
                                  env={"MLFLOW_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        failed = [err.strip().splitlines()[-1] for code, err in results if code != 0]
        assert not failed, failed
