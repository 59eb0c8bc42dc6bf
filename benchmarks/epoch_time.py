"""Cost of one student epoch with cached teacher outputs vs without KD.

    python benchmarks/epoch_time.py --data-root data --output-dir runs [--rounds 3] [--student mlp_1]

Both trainers are built in one process and their epochs alternate, so a load that
drifts (other jobs on the machine) hits both alike; medians are reported. Needs
the CNN_1 bank (``python -m study.distill --teacher-step 2500`` builds it).
Prints a table and writes JSON.
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import torch

from benchmarks.common import alternate_epochs, mnist_with_teacher_outputs, student_benchmark_parser
from losses import LeveledKDConfig
from study.distill.spec import RunSpec, TeacherRef, build_trainer
from study.train.runtime import PRECISION_ENV


def main() -> None:
    p = student_benchmark_parser(__doc__, "benchmarks/results/epoch_time.json")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu (the figure docs/performance.md quotes), cuda or auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--step-mode", default="auto", choices=["auto", "eager", "graphs"], help="graphs: CUDA graphs")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    os.environ[PRECISION_ENV] = args.precision
    if args.threads:
        torch.set_num_threads(args.threads)

    data, split, outputs = mnist_with_teacher_outputs(args)
    runs = {
        "no KD": (RunSpec(student=args.student, epochs=10**6), []),
        "normal KD (cached CNN_1 outputs)": (
            RunSpec(student=args.student, teachers=(TeacherRef("cnn_1", args.teacher_step),),
                    loss=LeveledKDConfig(s_kl=1.0, s_fm=0.0),
                    epochs=10**6), outputs),
        "Type 2 KD + FM (cached outputs)": (
            RunSpec(student=args.student, teachers=(TeacherRef("cnn_1", args.teacher_step),),
                    loss=LeveledKDConfig(s_kl=1.0, s_fm=1.0),
                    epochs=10**6), outputs),
    }
    trainers = {name: build_trainer(spec, data, split, outs, device=args.device) for name, (spec, outs) in runs.items()}
    for trainer in trainers.values():
        trainer.config.step_mode = args.step_mode
    times = alternate_epochs(trainers, args.rounds)
    base = statistics.median(times["no KD"])
    device = next(iter(trainers.values())).device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"{'run':<36} {'median epoch s':>14} {'vs no KD':>9}   ({len(split.train)} images, batch 128, "
          f"{where}, {args.rounds} alternating rounds)")
    rows = []
    for name, values in times.items():
        med = statistics.median(values)
        rows.append({"run": name, "median_epoch_s": med, "ratio_vs_no_kd": med / base, "epochs_s": values})
        print(f"{name:<36} {med:>14.2f} {med / base:>9.3f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "device": where, "precision": next(iter(trainers.values())).precision,
                               "step_mode": args.step_mode, "threads": torch.get_num_threads(),
                               "images": len(split.train),
                               "student": args.student}, indent=2))


if __name__ == "__main__":
    main()
