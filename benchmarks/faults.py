"""Fault suite: what a study loses, duplicates and costs under each failure it is meant to survive.

    python benchmarks/faults.py [--only clean,raise_once,...] [--json benchmarks/results/faults.json]

Every fault runs the same tiny study (the tests' budget: MNIST slice of 2,000/500 images from
``../shared/data/mnist`` or synthetic digits, one CNN_1 bank to step 100, 300 training images,
3 search trials + the no-KD baseline, 3 epochs, no ASHA so every trial has exactly 3 epochs to
account for) in a subprocess, Ray on 127.0.0.1, and audits MLflow afterwards:

- planned / finished trials (MLflow ``state`` completed or pruned), lost (planned - finished),
- duplicated MLflow runs (a trial, teacher or study logged twice),
- metrics missing (``val_translated_acc`` epochs absent from a trial's history),
- wall time, and its cost over the clean run.

Faults: ``node_loss`` (a 3-node loopback cluster loses a worker mid-trial), ``sigkill_resume``
(driver SIGKILLed mid-study, then ``--resume`` while Ray's orphaned agents still run),
``mlflow_restart`` (the tracking server is killed for 20 s mid-study), ``raise_once`` (one trial
raises once, via ``LEVELED_KD_FAULT_RAISE_ONCE``, and is retried from its checkpoint),
``disk_full`` (the output directory is a small tmpfs that is filled mid-study; then space is freed
and the study resumed), ``two_studies`` (two studies start at once on one new teacher bank).
This is a benchmark, not a test: it prints what it measured, whatever that is.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from study.cluster.faults import ENV as RAISE_ONCE_ENV  # noqa: E402
from study.run import ray_tmpdir  # noqa: E402
from study.testing import (  # noqa: E402
    free_port,
    raylet_pid,
    running_trial_on_a_worker,
    runs_of,
    wait_until_healthy,
    write_tiny_mnist,
)

STUDY = "leveled_kd-mnist"
SEARCH_TRIALS, EPOCHS = 3, 3
PLANNED = SEARCH_TRIALS + 1  # + the no-KD baseline


# ----------------------------------------------------------------------------- running a study

class Bench:
    """Paths and command lines shared by the faults."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.data = write_tiny_mnist(work / "data")  # the tests' data: 2,000/500 MNIST or synthetic digits
        self.bank = work / "bank"

    def args(self, out: Path, *extra: str, bank: Path | None = None) -> list[str]:
        return [sys.executable, "run_study.py", "--data-root", str(self.data), "--no-download",
                "--output-dir", str(out), "--bank-dir", str(bank or self.bank), "--set", "teachers=cnn_1",
                "--teacher-steps", "100", "--teacher-eval-images", "50", "--train-subset", "300",
                "--val-images", "100", "--test-images", "200", "--num-samples", str(SEARCH_TRIALS),
                "--max-epochs", str(EPOCHS), "--no-asha", "--num-cpus", "2", "--quiet", *extra]

    def start(self, args: list[str], env: dict | None = None, log: str = "driver") -> subprocess.Popen:
        """A study driver in its own session (so its orphans can be found and ended by session id)."""
        handle = open(self.work / f"{log}.log", "w")
        return subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
                                stdout=handle, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def run(self, args: list[str], env: dict | None = None, log: str = "driver", timeout: float = 900) -> int:
        proc = self.start(args, env, log)
        try:
            return proc.wait(timeout=timeout)
        finally:
            end_session(proc.pid)

    def log_tail(self, log: str, lines: int = 3) -> list[str]:
        text = (self.work / f"{log}.log").read_text(errors="replace").strip().splitlines()
        return text[-lines:]


def first_result(out: Path, proc: subprocess.Popen | None = None, timeout: float = 600) -> bool:
    """Wait until some trial of the study in ``out`` has reported an epoch."""
    tune_dir = out / "studies" / STUDY / "tune"
    deadline = time.time() + timeout
    while time.time() < deadline and (proc is None or proc.poll() is None):
        if any(p.stat().st_size > 0 for p in tune_dir.glob("trial_*/result.json")):
            return True
        time.sleep(0.2)
    return False


def session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (a driver started with start_new_session: it and what it spawned)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


def end_session(sid: int) -> None:
    """End what remains of a driver this benchmark started (by its session's process ids only)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = session_pids(sid)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if pids:
            time.sleep(2)


# ----------------------------------------------------------------------------- auditing MLflow

def audit(tracking_uri: str, planned: int = PLANNED, experiment: str = STUDY) -> dict[str, Any]:
    client, runs = runs_of(tracking_uri, experiment)
    trials = runs.get("trial", [])
    ids = [r.data.tags.get("leveled_kd.trial_id") for r in trials]
    finished = {r.data.tags["leveled_kd.trial_id"] for r in trials
                if r.data.tags.get("state") in ("completed", "pruned")}
    missing = 0
    for run in trials:
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_translated_acc")}
        epochs = int(run.data.metrics.get("epochs_trained", EPOCHS)) if run.data.tags.get("state") == "completed" \
            else max(steps, default=0)
        missing += len(set(range(1, epochs + 1)) - steps)
    missing += EPOCHS * max(0, planned - len(set(ids)))  # trials never logged: all their epochs
    duplicated = (len(ids) - len(set(ids)) + max(0, len(runs.get("study", [])) - 1)
                  + len(runs.get("teacher", [])) - len({r.data.tags.get("leveled_kd.teacher")
                                                        for r in runs.get("teacher", [])}))
    return {"planned": planned, "finished": len(finished), "lost": planned - len(finished),
            "duplicated_runs": duplicated, "metrics_missing": missing,
            "retried_trials": sum(int(r.data.tags.get("retries", 0)) > 0 for r in trials)}


def sqlite_uri(out: Path) -> str:
    return f"sqlite:///{out / 'mlflow.db'}"


# ----------------------------------------------------------------------------- the faults

def fault_clean(b: Bench) -> dict:
    out = b.work / "clean"
    code = b.run(b.args(out), log="clean")
    return {"exit_code": code, **audit(sqlite_uri(out))}


def fault_raise_once(b: Bench) -> dict:
    out = b.work / "raise_once"
    marker = b.work / "raise_once.marker"
    code = b.run(b.args(out), env={RAISE_ONCE_ENV: f"{marker}@2"}, log="raise_once")
    return {"exit_code": code, "fault_fired": marker.exists(), **audit(sqlite_uri(out))}


def fault_sigkill_resume(b: Bench) -> dict:
    out = b.work / "sigkill"
    proc = b.start(b.args(out), log="sigkill-1")
    fired = first_result(out, proc)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: Ray's processes are left behind, as after a crash
    proc.wait()
    time.sleep(2)
    lingering = len(session_pids(proc.pid))
    try:
        code = b.run(b.args(out, "--resume"), log="sigkill-2")  # started while the orphans still run
    finally:
        end_session(proc.pid)
    return {"exit_code": code, "fault_fired": fired, "orphan_processes_during_resume": lingering,
            **audit(sqlite_uri(out))}


def fault_mlflow_restart(b: Bench, down_seconds: float = 20.0) -> dict:
    out = b.work / "mlflow_restart"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server_cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
                  "--backend-store-uri", f"sqlite:///{b.work / 'mlflow-server.db'}",
                  "--artifacts-destination", str(b.work / "mlflow-artifacts"), "--workers", "1"]

    def start_server() -> subprocess.Popen:
        server = subprocess.Popen(server_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        if not wait_until_healthy(uri, timeout=120):
            raise RuntimeError("mlflow server did not start")
        return server

    server = start_server()
    try:
        proc = b.start(b.args(out, "--tracking-uri", uri), log="mlflow_restart")
        fired = first_result(out, proc)
        end_session(server.pid)
        time.sleep(down_seconds)
        server = start_server()
        code = proc.wait(timeout=900)
        end_session(proc.pid)
        return {"exit_code": code, "fault_fired": fired, "server_down_s": down_seconds, **audit(uri)}
    finally:
        end_session(server.pid)


def fault_disk_full(b: Bench, size_mb: int = 1024) -> dict:
    mount = b.work / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        return {"skipped": "cannot mount a tmpfs here (needs root)"}
    try:
        out = mount / "runs"
        proc = b.start(b.args(out), log="disk_full-1")
        fired = first_result(out, proc)
        filler = mount / "filler"
        with open(filler, "wb") as f:  # take every free byte
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        code = proc.wait(timeout=900)
        end_session(proc.pid)
        stderr_tail = b.log_tail("disk_full-1", 3)
        before = audit(sqlite_uri(out))
        filler.unlink()
        resumed = b.run(b.args(out, "--resume"), log="disk_full-2")
        return {"exit_code": code, "fault_fired": fired, "last_lines": stderr_tail,
                "finished_before_resume": before["finished"], "resume_exit_code": resumed,
                **audit(sqlite_uri(out))}
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fault_two_studies(b: Bench) -> dict:
    bank = b.work / "bank-shared-new"  # a new bank: both studies want to train it and cache its outputs
    procs = [b.start(b.args(b.work / f"two-{i}", bank=bank), log=f"two-{i}") for i in range(2)]
    codes = [p.wait(timeout=900) for p in procs]
    for p in procs:
        end_session(p.pid)
    audits = [audit(sqlite_uri(b.work / f"two-{i}")) for i in range(2)]
    manifest = json.loads((bank / "mnist" / "cnn_1" / "seed-0" / "manifest.json").read_text())
    from study.teachers.bank import sha256

    folder = bank / "mnist" / "cnn_1" / "seed-0"
    bad_files = sum(sha256(folder / f"step-{int(s):06d}.outputs-{tag}.pt") != digest
                    for s, record in manifest["snapshots"].items() for tag, digest in record.get("outputs", {}).items())
    bad_files += sum(sha256(folder / r["file"]) != r["sha256"] for r in manifest["snapshots"].values())
    total = {k: sum(a[k] for a in audits) for k in ("planned", "finished", "lost", "duplicated_runs",
                                                   "metrics_missing", "retried_trials")}
    return {"exit_code": max(codes), "bank_snapshots": sorted(map(int, manifest["snapshots"])),
            "bank_files_not_matching_manifest": bad_files, **total}


def fault_node_loss(b: Bench) -> dict:
    """tests/test_cluster.py's loopback cluster: a 0-CPU head and two 1-CPU workers on 127.0.0.1;
    the worker running a reporting trial is removed (its raylet and workers killed)."""
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="lkd-faults-", dir="/tmp")
    old_tmp = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp_dir
    ray_tmpdir()
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=0, node_ip_address="127.0.0.1", include_dashboard=False, temp_dir=temp_dir,
        _system_config={"health_check_period_ms": 1000, "health_check_timeout_ms": 1000,
                        "health_check_failure_threshold": 3}))
    try:
        workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
        cluster.wait_for_nodes()
        out = b.work / "node_loss"
        proc = b.start(b.args(out, "--address", cluster.address, "--max-failures", "2"), log="node_loss")
        raylets = {raylet_pid(node): node for node in workers}
        victim = None
        deadline = time.time() + 600
        while victim is None and proc.poll() is None and time.time() < deadline:
            victim = running_trial_on_a_worker(out / "studies" / STUDY / "tune", raylets, EPOCHS)
            time.sleep(0.1)
        if victim is not None:
            cluster.remove_node(victim[1], allow_graceful=False)
        code = proc.wait(timeout=900)
        end_session(proc.pid)
        return {"exit_code": code, "fault_fired": victim is not None, **audit(sqlite_uri(out))}
    finally:
        cluster.shutdown()
        if old_tmp is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old_tmp
        shutil.rmtree(temp_dir, ignore_errors=True)


FAULTS: dict[str, Callable[[Bench], dict]] = {
    "clean": fault_clean, "node_loss": fault_node_loss, "sigkill_resume": fault_sigkill_resume,
    "mlflow_restart": fault_mlflow_restart, "raise_once": fault_raise_once, "disk_full": fault_disk_full,
    "two_studies": fault_two_studies,
}


# ----------------------------------------------------------------------------- main

def table(rows: dict[str, dict]) -> str:
    clean = rows.get("clean", {}).get("wall_s")
    head = f"{'fault':<16}{'planned':>8}{'finished':>9}{'lost':>6}{'dup runs':>9}{'missing':>8}{'wall s':>8}{'cost s':>8}  exit"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        if "skipped" in r or "error" in r:
            lines.append(f"{name:<16}  {r.get('skipped') or r.get('error')}")
            continue
        cost = f"{r['wall_s'] - clean:+.0f}" if clean is not None and name != "clean" else "-"
        lines.append(f"{name:<16}{r['planned']:>8}{r['finished']:>9}{r['lost']:>6}{r['duplicated_runs']:>9}"
                     f"{r['metrics_missing']:>8}{r['wall_s']:>8.0f}{cost:>8}  {r['exit_code']}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(FAULTS), help="comma-separated faults (clean always runs first)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "faults.json"))
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, stores)")
    p.add_argument("--merge", action="store_true", help="update the rows of an existing --json, keep the others")
    args = p.parse_args()
    ray_tmpdir()
    work = Path(tempfile.mkdtemp(prefix="lkd-faults-work-"))
    bench = Bench(work)
    print(f"work directory {work}; building the shared teacher bank (not timed)", flush=True)
    bench.run(bench.args(work / "warmup", "--num-samples", "1", "--max-epochs", "1"), log="warmup")
    rows: dict[str, dict] = {}
    names = ["clean"] + [n for n in args.only.split(",") if n and n != "clean"]
    for name in names:
        started = time.time()
        try:
            rows[name] = FAULTS[name](bench)
        except Exception as error:  # a fault that breaks the harness is a result too
            rows[name] = {"error": f"{type(error).__name__}: {error}"}
        rows[name]["wall_s"] = round(time.time() - started, 1)
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    print()
    print(table(rows))
    if args.merge and Path(args.json).is_file():  # rerun some faults, keep the others' rows
        rows = {**json.loads(Path(args.json).read_text())["faults"], **rows}
        print("\nmerged with the earlier rows of", args.json)
        print(table(rows))
    result = {"study": {"search_trials": SEARCH_TRIALS, "baseline": 1, "epochs": EPOCHS, "asha": False,
                        "train_subset": 300, "teacher_steps": 100, "num_cpus": 2},
              "machine": f"{os.cpu_count()} CPUs", "faults": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.json}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
