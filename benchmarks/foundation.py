"""Foundation evidence on real data: teacher snapshot accuracy, MLP_1 with and without KD
(epoch times are those of the two runs; benchmarks/epoch_time.py measures the cache's cost
with alternating epochs, robust to other load on the machine).

    python benchmarks/foundation.py --data-root data --output-dir runs [--epochs 5] [--json out.json]

Prints a table and writes JSON. Uses ``python -m study.distill`` for the student runs
(the same code path as users), so teacher banks and caches are reused when present.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from study.train.data import load_dataset, shift_grid
from study.train.evaluation import translation_accuracy
from study.teachers.bank import TeacherBank, TeacherSpec, teacher_bank_root

ROOT = Path(__file__).resolve().parents[1]


def distill(args, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "study.distill", "--data-root", args.data_root, "--output-dir", args.output_dir,
           "--student", "mlp_1", "--epochs", str(args.epochs), "--json", *extra]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--output-dir", default="runs")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--teacher-step", type=int, default=2500)
    p.add_argument("--json", default="benchmarks/results/foundation.json")
    args = p.parse_args()

    kd = distill(args, "--teacher", "cnn_1", "--teacher-step", str(args.teacher_step), "--alpha", "0.5",
                 "--temperature", "4", "--s-kl", "1", "--s-fm", "0")
    no_kd = distill(args, "--teacher", "none")

    data = load_dataset("mnist", args.data_root, download=False)
    bank = TeacherBank(teacher_bank_root(args.output_dir), TeacherSpec("mnist", "cnn_1"))
    started = time.perf_counter()
    teacher = translation_accuracy(bank.load(args.teacher_step, data), data.test_x, data.test_y, shift_grid(),
                                   data.fill)
    teacher_eval_s = time.perf_counter() - started

    rows = [
        {"model": f"CNN_1 teacher @ {args.teacher_step} it", "test_clean_acc": teacher.clean_acc,
         "test_translated_acc": teacher.translated_acc, "epoch_s": None},
        {"model": "MLP_1 no KD", "test_clean_acc": no_kd["test_clean_acc"],
         "test_translated_acc": no_kd["test_translated_acc"], "epoch_s": statistics.median(no_kd["epoch_seconds"])},
        {"model": f"MLP_1 normal KD (CNN_1 @ {args.teacher_step}, a=0.5, T=4)", "test_clean_acc": kd["test_clean_acc"],
         "test_translated_acc": kd["test_translated_acc"], "epoch_s": statistics.median(kd["epoch_seconds"])},
    ]
    print(f"{'model':<48} {'clean':>7} {'translated':>10} {'epoch s':>8}")
    for r in rows:
        epoch = f"{r['epoch_s']:.1f}" if r["epoch_s"] else "-"
        print(f"{r['model']:<48} {r['test_clean_acc']:>7.4f} {r['test_translated_acc']:>10.4f} {epoch:>8}")
    ratio = rows[2]["epoch_s"] / rows[1]["epoch_s"]
    print(f"student epoch with teacher cache / without KD: {ratio:.3f}  (threads: {torch.get_num_threads()})")
    print(f"teacher evaluation on the full 33-shift grid of 10k test images: {teacher_eval_s:.0f}s")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "epoch_ratio": ratio, "teacher_eval_s": teacher_eval_s,
                               "threads": torch.get_num_threads(), "epochs": args.epochs,
                               "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU",
                               "kd_epoch_seconds": kd["epoch_seconds"], "no_kd_epoch_seconds": no_kd["epoch_seconds"]},
                              indent=2))


if __name__ == "__main__":
    main()
