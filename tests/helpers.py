"""Helpers shared by the end-to-end tests (tests/test_study.py, tests/test_cluster.py): run a tiny
study in a subprocess, read back its MLflow runs, pick free loopback ports."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


def study_args(mnist_root, bank_dir, out, *extra):
    """``run_study.py`` on a tiny budget (one tiny teacher bank, 300 training images); ``extra`` flags
    come last, so they override these (argparse keeps the last value)."""
    return [sys.executable, "run_study.py", "--data-root", str(mnist_root), "--no-download", "--output-dir", str(out),
            "--bank-dir", str(bank_dir), "--set", "teachers=cnn_1", "--teacher-steps", "100",
            "--teacher-eval-images", "50", "--train-subset", "300", "--val-images", "100", "--test-images", "200",
            "--num-cpus", "2", "--quiet", *extra]


def run_study(*args, timeout=600, env=None):
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def runs_of(tracking_uri, experiment):
    """(client, {leveled_kd.kind: [runs]}) of one study's MLflow experiment."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_kind = {}
    for run in runs:
        by_kind.setdefault(run.data.tags.get("leveled_kd.kind"), []).append(run)
    return client, by_kind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(uri: str, timeout: float = 90.0) -> bool:
    """Poll an MLflow server's /health until it answers."""
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(uri + "/health", timeout=2).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


def stop_server(server: subprocess.Popen, grace: float = 30.0) -> None:
    """Stop a server started with ``start_new_session=True`` and its children (an MLflow server's
    job consumers); SIGKILL what a loaded machine has not shut down within ``grace`` seconds."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=grace)
