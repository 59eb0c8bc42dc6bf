"""Trials per hour of one tiny study on a simulated 1-, 2- and 3-node Ray cluster (one machine).

    python benchmarks/cluster_scaling.py [--nodes 1 2 3] [--num-samples 11] [--json PATH]

Each cluster is ``ray.cluster_utils.Cluster``: a head and N-1 worker nodes, 1 CPU each, every
one on 127.0.0.1, and the study is ``run_study.py --address <cluster>`` (the tests' tiny budget:
a 2,000/500-image MNIST slice, one tiny teacher bank shared by all runs and built before them).
Reported: trials per hour over the search (first trial start to last trial end, from Tune's
result.json files) and over the driver's whole run, and the mean number of trials running at
once. The nodes share this machine's cores: beyond ``os.cpu_count()`` nodes nothing can scale.
Prints a table and writes JSON (default benchmarks/results/cluster_scaling.json).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from math import prod
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmarks.common import print_table, write_result  # noqa: E402
from study.run import ray_tmpdir  # noqa: E402

MNIST_FILES = {"train-images-idx3-ubyte": "train", "train-labels-idx1-ubyte": "train",
               "t10k-images-idx3-ubyte": "test", "t10k-labels-idx1-ubyte": "test"}


def mnist_slice(source: Path, dest: Path, train: int, test: int) -> Path:
    """A torchvision MNIST root with the first ``train`` / ``test`` images of the IDX files in ``source``."""
    raw = dest / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, split in MNIST_FILES.items():
        data = gzip.decompress((source / f"{name}.gz").read_bytes())
        ndim = data[3]
        dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
        n = train if split == "train" else test
        body = data[4 + 4 * ndim:4 + 4 * ndim + n * prod(dims[1:])]
        (raw / name).write_bytes(data[:4] + struct.pack(">" + "I" * ndim, n, *dims[1:]) + body)
    return dest


def study_command(args, data_root: Path, bank: Path, out: Path, address: str | None, num_samples: int,
                  name: str) -> list[str]:
    command = [sys.executable, "run_study.py", "--data-root", str(data_root), "--no-download", "--output-dir",
               str(out), "--bank-dir", str(bank), "--set", "teachers=cnn_1", "--teacher-steps", "100",
               "--teacher-eval-images", "50", "--train-subset", str(args.train_subset), "--val-images", "100",
               "--test-images", "200", "--max-epochs", str(args.max_epochs), "--num-samples", str(num_samples),
               "--no-asha", "--study-name", name, "--quiet"]
    return command + (["--address", address] if address else ["--num-cpus", "1"])


def search_span(tune_dir: Path) -> dict:
    """Trial start/end times from result.json: search seconds and mean trials running at once."""
    spans = []
    for path in tune_dir.glob("trial_*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            start = rows[0]["timestamp"] - rows[0]["time_this_iter_s"]
            spans.append((start, rows[-1]["timestamp"]))
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    seconds = max(last - first, 1e-9)
    return {"trials": len(spans), "search_s": seconds,
            "mean_concurrency": sum(e - s for s, e in spans) / seconds}


def run_on_cluster(args, nodes: int, data_root: Path, bank: Path, work: Path) -> dict:
    from ray.cluster_utils import Cluster

    ray_tmpdir()
    temp_dir = tempfile.mkdtemp(prefix="lkd-bench-", dir="/tmp")
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=1, node_ip_address="127.0.0.1", include_dashboard=False, temp_dir=temp_dir))
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        out = work / f"nodes-{nodes}"
        name = f"scaling-{nodes}"
        load_before = os.getloadavg()[0]
        started = time.time()
        result = subprocess.run(study_command(args, data_root, bank, out, cluster.address, args.num_samples, name),
                                cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        wall = time.time() - started
        if result.returncode != 0:
            raise RuntimeError(f"study on {nodes} node(s) failed:\n{result.stderr[-3000:]}")
        span = search_span(out / "studies" / name / "tune")
        return {"nodes": nodes, "cpus": nodes, **span, "wall_s": wall,
                "trials_per_hour_search": 3600 * span["trials"] / span["search_s"],
                "trials_per_hour_wall": 3600 * span["trials"] / wall,
                "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]}
    finally:
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--num-samples", type=int, default=11, help="search trials per study (+1 no-KD baseline)")
    p.add_argument("--max-epochs", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=1200)
    p.add_argument("--mnist", type=Path,
                   default=Path(os.environ.get("LEVELED_KD_SHARED_DATA", ROOT.parent / "shared" / "data")) / "mnist",
                   help="folder with MNIST's four .gz IDX files")
    p.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder, removed afterwards")
    p.add_argument("--json", default="benchmarks/results/cluster_scaling.json")
    args = p.parse_args()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="lkd-scaling-"))
    try:
        data_root = mnist_slice(args.mnist, work / "data", train=2000, test=500)
        bank = work / "teachers"
        # the teacher bank and its output cache, once, outside the timed runs
        warm = subprocess.run(study_command(args, data_root, bank, work / "warm-up", None, 1, "warm-up") +
                              ["--no-baseline", "--max-epochs", "1"], cwd=ROOT, capture_output=True, text=True)
        if warm.returncode != 0:
            raise SystemExit(f"warm-up study failed:\n{warm.stderr[-3000:]}")
        rows = []
        for nodes in args.nodes:
            print(f"{nodes} node(s)...", file=sys.stderr, flush=True)
            rows.append(run_on_cluster(args, nodes, data_root, bank, work))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    base = next((r for r in rows if r["nodes"] == min(args.nodes)), rows[0])
    for row in rows:
        row["speedup_search"] = row["trials_per_hour_search"] / base["trials_per_hour_search"]
    print_table(rows, [("nodes", "nodes", "{}"), ("CPUs", "cpus", "{}"), ("trials", "trials", "{}"),
                       ("search s", "search_s", "{:.0f}"), ("trials/h (search)", "trials_per_hour_search", "{:.0f}"),
                       ("speedup", "speedup_search", "{:.2f}x"), ("running at once", "mean_concurrency", "{:.2f}"),
                       ("wall s", "wall_s", "{:.0f}"), ("trials/h (wall)", "trials_per_hour_wall", "{:.0f}")])
    cores = os.cpu_count()
    print(f"\n{cores} CPU cores on this machine: simulated nodes share them, so more than {cores} nodes cannot "
          f"scale (and the driver, Ray's control plane and other jobs use the same cores).")
    record = {
        "benchmark": "cluster_scaling",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"cpu_count": cores, "platform": platform.platform(), "python": platform.python_version()},
        "budget": {"num_samples": args.num_samples, "baseline_trials": 1, "max_epochs": args.max_epochs,
                   "train_subset": args.train_subset, "data": "MNIST slice 2000 train / 500 test",
                   "cpus_per_trial": 1, "asha": False},
        "rows": rows,
    }
    write_result(record, args.json)


if __name__ == "__main__":
    main()
