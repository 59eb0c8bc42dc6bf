"""Helpers shared by the end-to-end tests (tests/test_study.py, tests/test_cluster.py): run a tiny
study in a subprocess, stop a server. Reading back a study's MLflow runs and picking free loopback
ports are :mod:`study.testing`'s (benchmarks/faults.py uses them too)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

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


def stop_server(server: subprocess.Popen, grace: float = 30.0) -> None:
    """Stop a server started with ``start_new_session=True`` and its children (an MLflow server's
    job consumers); SIGKILL what a loaded machine has not shut down within ``grace`` seconds."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=grace)
