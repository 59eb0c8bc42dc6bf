"""Teacher training speed and system time, old settings vs new, measured side by side in one run.

    python benchmarks/teacher_speed.py --data-root /work/data [--threads 1] [--rounds 3] [--steps 10] [--bank-steps 100]

Part 1, **step time** (one process, variants alternating within each round, medians):
CNN_1 steps at batch 128 through the shared trainer, under

- ``old``: fp32, NCHW, AdamW's default implementation (the trainer before issue 12),
- ``fp32 new``: fp32, channels_last, fused AdamW (``--precision fp32``),
- ``bf16 NCHW``: bf16 autocast, NCHW, fused AdamW (what channels_last adds),
- ``new (auto)``: bf16 autocast, channels_last, fused AdamW (``auto`` on a CPU with native bf16).

Both CPU time (user + sys of this process: with one thread it is the work done, and other
jobs on a shared machine do not inflate it) and wall time are reported.

Part 2, **system time** of building a real teacher bank (``TeacherBank.ensure`` to
``--bank-steps``, each snapshot scored on ``--eval-images`` x 33 shifts), each in a fresh
subprocess: glibc's allocator untuned (``LEVELED_KD_MALLOC_TUNING=0``, as before) vs tuned,
in fp32 and in the new default. Reported from ``getrusage``: user, sys and minor page faults.
Prints both tables and writes JSON.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import print_table, write_result
from losses import LeveledKDConfig, LeveledKDLoss
from models import build_model
from study.train.data import load_dataset, train_val_split
from study.train.runtime import cpu_flags, resolve_precision
from study.train.trainer import TrainConfig, Trainer, seed_everything

VARIANTS = {  # name: (precision, channels_last, fused AdamW)
    "old": ("fp32", False, False),
    "fp32 new": ("fp32", True, True),
    "bf16 NCHW": ("bf16", False, True),
    "new (auto)": ("auto", True, True),
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def variant_trainer(data, precision: str, channels_last: bool, fused: bool) -> Trainer:
    seed_everything(0)
    split = train_val_split(data)
    trainer = Trainer(build_model("cnn_1", data.input_shape, data.num_classes),
                      LeveledKDLoss(LeveledKDConfig(alpha=1.0)),
                      {"x": data.train_x[split.train], "y": data.train_y[split.train]},
                      TrainConfig(epochs=10**6, seed=0, device="cpu", precision=precision))
    if not channels_last:
        trainer.model.to(memory_format=torch.contiguous_format)
    if not fused:
        params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
        trainer.optimizer = torch.optim.AdamW(params, lr=trainer.config.lr, weight_decay=trainer.config.weight_decay)
    return trainer


def step_times(args: argparse.Namespace) -> dict:
    data = load_dataset("mnist", args.data_root, download=False)
    trainers = {name: variant_trainer(data, *spec) for name, spec in VARIANTS.items()}
    for trainer in trainers.values():  # warm-up: oneDNN primitives, allocator
        trainer.config.max_steps = trainer.step + 2
        trainer.fit()
    cpu_ms, wall_ms = {n: [] for n in trainers}, {n: [] for n in trainers}
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            trainer.config.max_steps = trainer.step + args.steps
            wall, cpu = time.perf_counter(), cpu_seconds()
            trainer.fit()
            wall_ms[name].append(1000 * (time.perf_counter() - wall) / args.steps)
            cpu_ms[name].append(1000 * (cpu_seconds() - cpu) / args.steps)
    rows = []
    for name, trainer in trainers.items():
        rows.append({"variant": name, "precision": trainer.precision, "channels_last": VARIANTS[name][1],
                     "fused_adamw": VARIANTS[name][2], "cpu_ms": statistics.median(cpu_ms[name]),
                     "wall_ms": statistics.median(wall_ms[name]), "cpu_ms_rounds": cpu_ms[name],
                     "wall_ms_rounds": wall_ms[name]})
    for row in rows:
        row["speedup_cpu"] = rows[0]["cpu_ms"] / row["cpu_ms"]
        row["speedup_wall"] = rows[0]["wall_ms"] / row["wall_ms"]
    return {"rows": rows}


CHILD = """
from study.train.data import load_dataset
from study.teachers.bank import TeacherBank, TeacherSpec
data = load_dataset("mnist", {data_root!r}, download=False)
bank = TeacherBank({bank!r}, TeacherSpec("mnist", "cnn_1"), eval_images={eval_images})
bank.ensure(data, {steps}, device="cpu", precision={precision!r})
print(bank.manifest().get("precision"))
"""


def bank_build(args: argparse.Namespace, tuned: bool, precision: str, work: Path) -> dict:
    """Build a bank in a fresh subprocess; its rusage comes from RUSAGE_CHILDREN deltas."""
    env = dict(os.environ, LEVELED_KD_MALLOC_TUNING="1" if tuned else "0", OMP_NUM_THREADS=str(args.threads))
    bank = work / f"bank-{int(tuned)}-{precision}"
    code = CHILD.format(data_root=args.data_root, bank=str(bank), eval_images=args.eval_images,
                        steps=args.bank_steps, precision=precision)
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"allocator_tuned": tuned, "precision": out.stdout.strip().splitlines()[-1],
            "wall_s": time.perf_counter() - started, "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime, "minor_faults": after.ru_minflt - before.ru_minflt,
            "max_rss_mib": after.ru_maxrss / 1024}


def system_time(args: argparse.Namespace) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="lkd-teacher-speed-") as folder:
        for tuned, precision in ((False, "fp32"), (True, "fp32"), (False, "auto"), (True, "auto")):
            print(f"  bank build: allocator {'tuned' if tuned else 'untuned'}, {precision}", file=sys.stderr,
                  flush=True)
            rows.append(bank_build(args, tuned, precision, Path(folder)))
    for row in rows:
        row["sys_share"] = row["sys_s"] / max(1e-9, row["user_s"] + row["sys_s"])
    return {"rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--threads", type=int, default=1, help="torch threads here and in the bank subprocesses")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    p.add_argument("--bank-steps", type=int, default=100, help="teacher bank built to this step (snapshots every 50)")
    p.add_argument("--eval-images", type=int, default=500, help="test images each snapshot is scored on")
    p.add_argument("--skip-bank", action="store_true", help="only the step times")
    p.add_argument("--json", default="benchmarks/results/teacher_speed.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    steps = step_times(args)
    print(f"CNN_1 step, batch 128, {args.threads} thread(s), median of {args.rounds} alternating rounds x "
          f"{args.steps} steps; auto -> {resolve_precision('auto', 'cpu')}")
    print_table(steps["rows"], [("variant", "variant", "{}"), ("precision", "precision", "{}"),
                                ("ch-last", "channels_last", "{}"), ("fused", "fused_adamw", "{}"),
                                ("CPU ms", "cpu_ms", "{:.1f}"), ("x old", "speedup_cpu", "{:.2f}x"),
                                ("wall ms", "wall_ms", "{:.1f}"), ("x old", "speedup_wall", "{:.2f}x")])
    record = {"benchmark": "teacher_speed", "command": "python " + " ".join(sys.argv), "threads": args.threads,
              "cpu_flags": sorted({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"} & cpu_flags()),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_count": os.cpu_count(),
              "load_avg_before": load_before, "step_time": steps}
    if not args.skip_bank:
        sys_rows = system_time(args)
        print(f"\nteacher bank to {args.bank_steps} steps ({args.bank_steps // 50} snapshots, each scored on "
              f"{args.eval_images} images x 33 shifts), fresh process each, {args.threads} thread(s)")
        print_table(sys_rows["rows"], [("allocator", lambda r: "tuned" if r["allocator_tuned"] else "default", "{}"),
                                       ("precision", "precision", "{}"), ("wall s", "wall_s", "{:.1f}"),
                                       ("user s", "user_s", "{:.1f}"), ("sys s", "sys_s", "{:.1f}"),
                                       ("sys %", "sys_share", "{:.0%}"), ("minor faults", "minor_faults", "{:,}")])
        record["bank_build"] = {"bank_steps": args.bank_steps, "eval_images": args.eval_images, **sys_rows}
    record["load_avg_after"] = os.getloadavg()
    write_result(record, args.json)


if __name__ == "__main__":
    main()
