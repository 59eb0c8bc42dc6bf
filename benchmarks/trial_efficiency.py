"""Where a study's trial time goes: optimizer steps vs evaluation, checkpoints, start-up and Tune.

    python benchmarks/trial_efficiency.py --data-root data                     # the default study
    python benchmarks/trial_efficiency.py --data-root data --label subset-5k -- --train-subset 5000
    python benchmarks/trial_efficiency.py --data-root data --compare-ref 6bc6d43   # old commit, same flags

Runs ``run_study.py`` (real MNIST, a fresh output directory and, unless ``--bank-dir`` is
given, fresh teacher banks, as from a clean clone) and reads back what every trial reports: ``time_train_s`` (optimizer
steps), ``time_eval_s`` (validation every epoch, test + per-image results at the end),
``time_checkpoint_s`` and ``time_setup_s`` (building the trainer). **Trial efficiency** =
optimizer-step time / (stage-2 wall time x trial slots): everything else, including worker
start-up, Tune's bookkeeping and idle slots, counts against it.

``--compare-ref REF`` also runs the study of an older commit (a ``git worktree``), whose
trials do not report their step time: its efficiency is estimated from the steps it ran
times the step time measured in this run. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("train", "eval", "checkpoint", "setup")


def run_study(root: Path, out: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [sys.executable, "run_study.py", "--space", args.space, "--data-root", str(Path(args.data_root).resolve()),
           "--no-download", "--output-dir", str(out), "--quiet", "--num-cpus", str(args.num_cpus), *extra]
    if args.bank_dir:
        cmd += ["--bank-dir", str(Path(args.bank_dir).resolve())]
    started = time.time()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    wall = time.time() - started
    if done.returncode != 0:
        sys.exit(f"study failed in {root}:\n{done.stderr[-3000:]}")
    (study_dir,) = (out / "studies").iterdir()
    state = json.loads((study_dir / "study.json").read_text())
    table = pd.read_csv(study_dir / "reports" / "trials.csv")
    return {"wall_s": wall, "teachers_s": state.get("teachers_seconds"), "trials_s": state.get("trials_seconds"),
            "table": table}


def breakdown(run: dict, slots: int) -> dict:
    table = run["table"]
    capacity = run["trials_s"] * slots
    out = {"trials": int(len(table)), "epochs": int(table["epochs_done"].sum()), "wall_s": round(run["wall_s"], 1),
           "teachers_s": run["teachers_s"], "trials_s": run["trials_s"],
           "test_translated_acc_best": float(table.sort_values("val_translated_acc").iloc[-1]["test_translated_acc"])}
    if "time_train_s" in table:
        for part in PARTS:
            seconds = float(table[f"time_{part}_s"].fillna(0).sum())
            out[f"{part}_s"] = round(seconds, 1)
            out[f"{part}_share"] = round(seconds / capacity, 3)
        out["outside_trainable_share"] = round(1 - sum(out[f"{p}_share"] for p in PARTS), 3)
        out["efficiency"] = out["train_share"]
        out["train_s_per_epoch"] = float(table["time_train_s"].sum() / max(1, table["epochs_done"].sum()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--bank-dir", default=None,
                   help="teacher banks to reuse (default: each run trains its own, as a clean clone does)")
    p.add_argument("--space", default="leveled_kd")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--label", default="default")
    p.add_argument("--compare-ref", default=None, help="also run this git commit's study with the same flags")
    p.add_argument("--output", default="benchmarks/results/trial_efficiency.json")
    p.add_argument("study_flags", nargs="*", help="extra run_study.py flags, after --")
    args = p.parse_args()
    slots = int(args.num_cpus // args.cpus_per_trial)
    extra = ["--cpus-per-trial", str(args.cpus_per_trial), *args.study_flags]

    rows = {}
    with tempfile.TemporaryDirectory(prefix="lkd-eff-") as tmp:
        if args.compare_ref:
            tree = Path(tmp) / "ref"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.compare_ref], cwd=ROOT, check=True,
                           capture_output=True)
            try:
                rows[f"{args.compare_ref} (before)"] = run_study(tree, Path(tmp) / "out-ref", args, extra)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        rows["this tree"] = run_study(ROOT, Path(tmp) / "out", args, extra)

    results = {name: breakdown(run, slots) for name, run in rows.items()}
    now = results["this tree"]
    for name, result in results.items():
        if "efficiency" not in result and "train_s_per_epoch" in now:  # older trainable: estimate its step time
            steps_s = result["epochs"] * now["train_s_per_epoch"]
            result["efficiency"] = round(steps_s / (result["trials_s"] * slots), 3)
            result["efficiency_note"] = "estimated: epochs run x this tree's measured seconds per epoch"
    columns = ["trials", "epochs", "wall_s", "teachers_s", "trials_s", *(f"{p}_share" for p in PARTS),
               "outside_trainable_share", "efficiency", "test_translated_acc_best"]
    print(pd.DataFrame(results).T.reindex(columns=columns).to_string())
    report = {"label": args.label, "flags": extra, "space": args.space, "slots": slots, "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()}, "results": results}
    path = Path(args.output)
    existing = json.loads(path.read_text()) if path.is_file() else {}
    existing[args.label] = report
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=2, default=str))
    print(f"wrote {path} [{args.label}]")


if __name__ == "__main__":
    main()
