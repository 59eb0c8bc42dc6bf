"""Teacher stage + teacher-output caches of a small study, before and after caches became lazy.

    python -m benchmarks.lazy_caches --data-root data --compare-ref 3ce415d -- --train-subset 2000
    python -m benchmarks.lazy_caches --data-root data --bank-dir runs/teachers --compare-ref 3ce415d

Before, the driver computed the cache of every (teacher, snapshot) the space *may* use in stage 1
and shipped them all to the trials through Ray's object store; after, stage 1 only trains the
banks and each trial takes the caches its config asks for from the bank, computing one on first
use under the bank's lock. Runs ``run_study.py`` of this tree and (``--compare-ref``) of an older
commit (exported with ``git archive``; the shared repository gets no worktree) with the same flags,
each on a fresh output directory, and reads back ``study.json`` (``teachers_seconds``: stage 1 and,
before, the caches; ``trials_seconds``: stage 2, and after, the caches the trials computed) and
the cache files each run left in its banks. ``--bank-dir``: start every run from a copy of these
banks with their caches removed, so the teachers' training is not timed, only the caches.
Prints a table and writes JSON (``benchmarks/results/lazy_caches.json``, one entry per ``--label``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, write_result

ROOT = Path(__file__).resolve().parents[1]


def export_tree(ref: str, folder: Path) -> Path:
    """The files of commit ``ref`` under ``folder`` (``git archive``: no worktree in the shared repository)."""
    archive = folder / "tree.tar"
    with open(archive, "wb") as out:
        subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, stdout=out)
    tree = folder / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def fresh_banks(source: Path | None, target: Path) -> None:
    """``target``: a copy of the banks in ``source`` without their caches (their manifests forget them too)."""
    if source is None:
        return
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.outputs*.pt", "*.tmp", ".bank.lock"))
    for manifest_path in target.rglob("manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        for record in manifest["snapshots"].values():
            record.pop("outputs", None)
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def run_study(tree: Path, out: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    banks = out / "teachers"
    fresh_banks(Path(args.bank_dir).resolve() if args.bank_dir else None, banks)
    cmd = [sys.executable, "run_study.py", "--space", args.space, "--data-root", str(Path(args.data_root).resolve()),
           "--no-download", "--output-dir", str(out), "--bank-dir", str(banks), "--quiet",
           "--num-cpus", str(args.num_cpus), *extra]
    env = dict(os.environ, PYTHONPATH=str(tree))  # this tree's packages, in the driver and in Ray's workers
    started = time.time()
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env)
    wall = time.time() - started
    if done.returncode != 0:
        sys.exit(f"study failed in {tree}:\n{done.stderr[-3000:]}")
    (study_dir,) = (out / "studies").iterdir()
    state = json.loads((study_dir / "study.json").read_text())
    caches = list(banks.rglob("*.outputs*.pt"))
    return {"wall_s": round(wall, 1), "teachers_s": state.get("teachers_seconds"),
            "trials_s": state.get("trials_seconds"), "trials": state.get("plan", {}).get("planned_trials"),
            "caches": len(caches), "cache_mb": round(sum(p.stat().st_size for p in caches) / 2**20, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--bank-dir", default=None, help="start every run from these banks, caches removed")
    p.add_argument("--space", default="leveled_kd")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--compare-ref", default=None, help="also run this git commit's study with the same flags")
    p.add_argument("--label", default="default")
    p.add_argument("--json", default="benchmarks/results/lazy_caches.json")
    p.add_argument("study_flags", nargs="*", help="extra run_study.py flags, after --")
    args = p.parse_args()

    results = {}
    with tempfile.TemporaryDirectory(prefix="lkd-lazy-") as tmp:
        if args.compare_ref:
            tree = export_tree(args.compare_ref, Path(tmp))
            results[f"{args.compare_ref} (before: driver precomputes)"] = run_study(tree, Path(tmp) / "out-ref", args,
                                                                                  args.study_flags)
        results["this tree (lazy, in trials)"] = run_study(ROOT, Path(tmp) / "out", args, args.study_flags)
    rows = [{"run": name, **result} for name, result in results.items()]
    print_table(rows, [("run", "run", "{}"), ("trials", "trials", "{}"), ("caches", "caches", "{}"),
                       ("cache MB", "cache_mb", "{:.2f}"), ("teachers s", "teachers_s", "{}"),
                       ("trials s", "trials_s", "{}"), ("wall s", "wall_s", "{:.1f}")])
    path = ROOT / args.json
    record = json.loads(path.read_text()) if path.is_file() else {}
    record[args.label] = {"space": args.space, "flags": args.study_flags, "bank_dir": bool(args.bank_dir),
                          "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                      "load_avg": os.getloadavg()}, "results": results}
    write_result(record, args.json)


if __name__ == "__main__":
    main()
