"""Cost of one student epoch with cached teacher outputs vs without KD.

    python benchmarks/epoch_time.py --data-root data --output-dir runs [--rounds 3] [--student mlp_1]

Both trainers are built in one process and their epochs alternate, so a load that
drifts (other jobs on the machine) hits both alike; medians are reported. Needs
the CNN_1 bank (``python -m study.distill --teacher-step 2500`` builds it).
Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study.data import load_dataset, train_val_split  # noqa: E402
from study.distillation import RunSpec, TeacherRef, build_trainer  # noqa: E402
from study.teachers import TeacherBank, TeacherSpec, teacher_bank_root  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--output-dir", default="runs")
    p.add_argument("--teacher-step", type=int, default=2500)
    p.add_argument("--student", default="mlp_1")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default="benchmarks/results/epoch_time.json")
    args = p.parse_args()

    data = load_dataset("mnist", args.data_root, download=False)
    split = train_val_split(data)
    bank = TeacherBank(teacher_bank_root(args.output_dir), TeacherSpec("mnist", "cnn_1"))
    bank.ensure(data, args.teacher_step)
    outputs = [bank.outputs(args.teacher_step, data, split.train)]
    runs = {
        "no KD": (RunSpec(student=args.student, epochs=10**6), []),
        "normal KD (cached CNN_1 outputs)": (
            RunSpec(student=args.student, teachers=(TeacherRef("cnn_1", args.teacher_step),), s_kl=1.0, s_fm=0.0,
                    epochs=10**6), outputs),
        "Type 2 KD + FM (cached outputs)": (
            RunSpec(student=args.student, teachers=(TeacherRef("cnn_1", args.teacher_step),), s_kl=1.0, s_fm=1.0,
                    epochs=10**6), outputs),
    }
    trainers = {name: build_trainer(spec, data, split, outs, device="cpu") for name, (spec, outs) in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            trainer.config.max_steps = trainer.step + trainer.steps_per_epoch
            started = time.perf_counter()
            trainer.fit()
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["no KD"])
    print(f"{'run':<36} {'median epoch s':>14} {'vs no KD':>9}   ({len(split.train)} images, batch 128, "
          f"{torch.get_num_threads()} threads, {args.rounds} alternating rounds)")
    rows = []
    for name, values in times.items():
        med = statistics.median(values)
        rows.append({"run": name, "median_epoch_s": med, "ratio_vs_no_kd": med / base, "epochs_s": values})
        print(f"{name:<36} {med:>14.2f} {med / base:>9.3f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "threads": torch.get_num_threads(), "images": len(split.train),
                               "student": args.student}, indent=2))


if __name__ == "__main__":
    main()
