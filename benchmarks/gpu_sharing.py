"""What ``--gpus-per-trial 1/N`` buys on one GPU: N student trainings at once, each in its own process.

    python benchmarks/gpu_sharing.py --data-root data --output-dir runs [--processes 1 2 4 8] [--epochs 2]

Ray Tune runs each trial in its own worker process, and a fractional GPU request
(``--gpus-per-trial 0.25``) only lets four of them be scheduled on the same GPU: it
does not split the GPU's memory or compute. This measures what that sharing gives
for the study's own workload (an MLP student with cached CNN_1 outputs, normal KD,
the shared trainer, bf16 autocast on CUDA): for N processes started together, the
epoch time each one sees, the student epochs per hour all of them reach together,
and each process's peak GPU memory (what decides how small a fraction can be).
Needs the CNN_1 bank (``python -m study.distill --teacher-step 2500`` builds it).
Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import mnist_with_teacher_outputs, student_benchmark_parser
from losses import LeveledKDConfig
from study.distill.spec import RunSpec, TeacherRef, build_trainer
from study.train.trainer import select_device


def _train(args: argparse.Namespace, seed: int, start, results) -> None:
    """One "trial": build the student from cached teacher outputs, wait for the others, train, report."""
    torch.set_num_threads(1)
    data, split, outputs = mnist_with_teacher_outputs(args)
    spec = RunSpec(student=args.student, teachers=(TeacherRef("cnn_1", args.teacher_step),),
                   loss=LeveledKDConfig(s_kl=1.0, s_fm=0.0),
                   epochs=1 + args.epochs, seed=seed)
    trainer = build_trainer(spec, data, split, outputs, device=args.device)
    trainer.config.max_steps = trainer.steps_per_epoch  # a warm-up epoch (cuDNN autotuning, allocator)
    trainer.fit()
    start.wait()
    started = time.perf_counter()
    trainer.config.max_steps = None
    trainer.fit()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_reserved(trainer.device) / 2**20 if trainer.device.type == "cuda" else 0.0
    results.put({"epoch_s": seconds / args.epochs, "peak_reserved_mib": peak, "finished_at": time.perf_counter()})


def run(args: argparse.Namespace, processes: int) -> dict:
    # the installed module's _train, also when this file runs as __main__: workers unpickle it by that name
    from benchmarks.gpu_sharing import _train

    ctx = mp.get_context("spawn")  # CUDA cannot be shared with forked children
    start, results = ctx.Barrier(processes + 1), ctx.Queue()
    workers = [ctx.Process(target=_train, args=(args, seed, start, results)) for seed in range(processes)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    rows = [results.get(timeout=3600) for _ in workers]
    for w in workers:
        w.join()
    wall = max(r["finished_at"] for r in rows) - began
    return {"processes": processes, "gpus_per_trial": round(1 / processes, 3),
            "median_epoch_s": statistics.median(r["epoch_s"] for r in rows),
            "student_epochs_per_hour": processes * args.epochs * 3600 / wall,
            "peak_reserved_mib_per_process": max(r["peak_reserved_mib"] for r in rows)}


def main() -> None:
    p = student_benchmark_parser(__doc__, "benchmarks/results/gpu_sharing.json")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per process (after one warm-up epoch)")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    data, split, _ = mnist_with_teacher_outputs(args)  # trained and cached once, read by every process
    device = select_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rows = [run(args, n) for n in args.processes]
    single = rows[0]["student_epochs_per_hour"]
    print(f"{args.student} student, normal KD from cached CNN_1 outputs, {args.epochs} timed epochs per process, {where}")
    print(f"{'processes':>9} {'gpus/trial':>10} {'epoch s':>8} {'epochs/h':>9} {'x one':>6} {'peak MiB/proc':>13}")
    for row in rows:
        row["speedup_vs_one"] = row["student_epochs_per_hour"] / single
        print(f"{row['processes']:>9} {row['gpus_per_trial']:>10} {row['median_epoch_s']:>8.2f} "
              f"{row['student_epochs_per_hour']:>9.0f} {row['speedup_vs_one']:>6.2f} "
              f"{row['peak_reserved_mib_per_process']:>13.0f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": where, "torch": torch.__version__, "student": args.student,
                               "images": len(split.train), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
