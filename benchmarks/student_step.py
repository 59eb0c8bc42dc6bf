"""MLP student step throughput against the fp32 matmul peak measured in the same process.

    python benchmarks/student_step.py --data-root /work/data [--rounds 5] [--steps 30] [--threads N]

1. **Peak**: the best GFLOP/s of large square fp32 matmuls (``torch.mm``, 2*n^3
   flops) on this machine right now, and the same in bf16 for reference.
2. **Student step**: the shared trainer (``Trainer.fit``: gather, forward, loss,
   backward, AdamW, loss bookkeeping) on 54k real MNIST training images, MLP_1,
   batch 128, without KD and with normal KD from cached teacher outputs, under
   the *old* settings (fp32, AdamW's default single-tensor implementation, as the
   trainer had them) and the *new* ones (fused AdamW; fp32 and bf16 autocast).
   The cached outputs are random tensors of CNN_1's shapes (10 logits, 256
   features): a step's cost does not depend on their values, and a real cache
   needs a 2,500-step teacher bank first.

Flops per step = 6 * P * B (P = the student's parameters, B = batch): forward 2PB,
backward 4PB. That is the usual count and slightly generous: the first layer needs
no input gradient, so the exact count is (6P - 2*P_first) * B, printed as well.
The ratio printed is step GFLOP/s over the fp32 peak. Variants alternate within
each round and medians are reported, so a drifting load hits all of them alike.
Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from benchmarks.common import print_table, write_result
from losses import LeveledKDConfig
from study.train.data import load_dataset, train_val_split
from study.distill.spec import RunSpec, TeacherRef, build_trainer
from study.train.runtime import cpu_flags
from study.train.trainer import Trainer


def clock(cpu: bool) -> float:
    """CPU time of this process (all its threads) or wall time."""
    return time.process_time() if cpu else time.perf_counter()


def matmul_peak(dtype: torch.dtype, cpu: bool, sizes=(1024, 2048), repeats: int = 5) -> float:
    """Best GFLOP/s of ``torch.mm`` on square matrices (after a warm-up call)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(a, b)
        for _ in range(repeats):
            started = clock(cpu)
            torch.mm(a, b)
            best = max(best, 2 * n**3 / max(clock(cpu) - started, 1e-9) / 1e9)
    return best


def use_old_settings(trainer: Trainer) -> Trainer:
    """The trainer as it was before issue 12: fp32 and AdamW's default (on CPU: one tensor at a time)."""
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    trainer.optimizer = torch.optim.AdamW(params, lr=trainer.config.lr, weight_decay=trainer.config.weight_decay)
    trainer.precision = "fp32"
    return trainer


def flops_per_step(model: torch.nn.Module, batch: int) -> tuple[float, float]:
    """(6PB, exact): the exact count skips the first linear layer's input gradient."""
    params = sum(p.numel() for p in model.parameters())
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 6.0 * params * batch, (6.0 * params - 2.0 * first.weight.numel()) * batch


def build_variants(args: argparse.Namespace) -> dict[str, Trainer]:
    data = load_dataset("mnist", args.data_root, download=False)
    split = train_val_split(data)
    n = len(split.train)
    g = torch.Generator().manual_seed(0)
    cached = [(torch.randn(n, 10, generator=g), torch.rand(n, 256, generator=g))]
    kd = dict(teachers=(TeacherRef("cnn_1", 2500),), loss=LeveledKDConfig(s_kl=1.0, s_fm=0.0))
    variants = {}
    for run, extra, outputs in (("no KD", {}, []), ("KD (cached)", kd, cached)):
        spec = RunSpec(student=args.student, epochs=10**6, **extra)
        for setting in ("old fp32", "new fp32", "new bf16"):
            precision = "bf16" if setting.endswith("bf16") else "fp32"
            trainer = build_trainer(spec, data, split, outputs, device="cpu")
            trainer.precision = precision
            variants[f"{run} | {setting}"] = use_old_settings(trainer) if setting.startswith("old") else trainer
    return variants


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--student", default="mlp_1")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=30, help="steps per variant per round")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (0: torch's default, all cores); with 1 thread CPU time is the work done")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: process CPU time (robust to other jobs on a shared machine; meaningful with 1 thread, "
                        "where no thread waits for another); wall: elapsed time")
    p.add_argument("--json", default="benchmarks/results/student_step.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    variants = build_variants(args)
    for trainer in variants.values():  # warm-up: oneDNN primitive creation, allocator
        trainer.config.max_steps = trainer.step + 3
        trainer.fit()
    cpu = args.clock == "cpu"
    peaks_fp32, times = [], {name: [] for name in variants}
    for _ in range(args.rounds):
        peaks_fp32.append(matmul_peak(torch.float32, cpu))
        for name, trainer in variants.items():
            trainer.config.max_steps = trainer.step + args.steps
            started = clock(cpu)
            trainer.fit()
            times[name].append((clock(cpu) - started) / args.steps)
    peak = max(peaks_fp32)
    peak_bf16 = matmul_peak(torch.bfloat16, cpu)
    batch = next(iter(variants.values())).config.batch_size
    flops, exact = flops_per_step(next(iter(variants.values())).model, batch)

    rows = []
    for name, values in times.items():
        step_s = statistics.median(values)
        rows.append({"variant": name, "median_step_ms": 1000 * step_s, "gflops_6pb": flops / step_s / 1e9,
                     "gflops_exact": exact / step_s / 1e9, "ratio_to_fp32_peak": flops / step_s / 1e9 / peak,
                     "steps_ms": [1000 * v for v in values]})
    by = {r["variant"]: r for r in rows}
    for r in rows:
        run = r["variant"].split(" | ")[0]
        r["speedup_vs_old"] = by[f"{run} | old fp32"]["median_step_ms"] / r["median_step_ms"]
        setting = r["variant"].split(" | ")[1]
        r["vs_no_kd_same_setting"] = r["median_step_ms"] / by[f"no KD | {setting}"]["median_step_ms"]

    print(f"{args.student}, batch {batch}, {torch.get_num_threads()} thread(s), {args.clock} time; "
          f"fp32 matmul peak {peak:.0f} GFLOP/s "
          f"(bf16 {peak_bf16:.0f}); flops/step 6PB = {flops / 1e9:.2f} GFLOP (exact {exact / 1e9:.2f})")
    print_table(rows, [("variant", "variant", "{}"), ("step ms", "median_step_ms", "{:.2f}"),
                       ("GFLOP/s", "gflops_6pb", "{:.1f}"), ("/ fp32 peak", "ratio_to_fp32_peak", "{:.0%}"),
                       ("vs old", "speedup_vs_old", "{:.2f}x"), ("vs no KD", "vs_no_kd_same_setting", "{:.3f}")])
    record = {"benchmark": "student_step", "command": "python " + " ".join(sys.argv), "student": args.student,
              "batch": batch, "threads": torch.get_num_threads(), "clock": args.clock, "rounds": args.rounds,
              "steps": args.steps,
              "fp32_peak_gflops": peak, "fp32_peaks_per_round": peaks_fp32, "bf16_peak_gflops": peak_bf16,
              "flops_per_step_6pb": flops, "flops_per_step_exact": exact,
              "flops_formula": "6 * params * batch (exact: (6P - 2*P_first_layer_weight) * batch)",
              "cpu_flags": sorted({"avx512_bf16", "amx_bf16", "avx512f"} & cpu_flags()),
              "load_avg": os.getloadavg(), "rows": rows}
    write_result(record, args.json)


if __name__ == "__main__":
    main()
