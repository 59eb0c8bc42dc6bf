"""Accuracy parity of bf16 vs fp32 training: CNN_1 teachers (and MLP students), several seeds.

    python benchmarks/bf16_parity.py --data-root /work/data [--steps 1000 2500] [--seeds 0 1 2] \
        [--test-images 2000] [--student-epochs 2]

Each (seed, precision) teacher is trained exactly as a teacher bank trains it
(same split, init, loss and TrainConfig; see study.teachers.bank.TeacherBank.ensure),
but without the bank's snapshots, whose evaluations would cost more than the
comparison needs. Every teacher is scored on the first ``--test-images`` test
images under all 33 shifts: fp32 teachers in fp32, bf16 teachers in fp32 and in
bf16 inference (what snapshot scoring and teacher-output caches use under
``--precision bf16``). ``--student-epochs N`` adds MLP students without KD, N epochs
on the 54k training split, trained and scored in each precision (``precision=auto``
applies to trials too).

Resumable: each teacher keeps a checkpoint every 500 steps and a result per
scored step count under ``--work-dir``; rerunning skips what is done and continues
the rest exactly. All teachers reach the first step count before any goes on to
the next, so an interrupted run still has a complete (smaller) comparison; several
processes can share the work (``--seeds`` / ``--precisions`` subsets, then one run
with everything to print the tables). Per-step cost is reported as CPU time (user +
sys), which other jobs on a shared machine do not inflate the way they do wall time.
Prints a table per step count and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from losses import LeveledKDConfig, LeveledKDLoss
from models import build_model
from study.train.data import ImageData, load_dataset, shift_grid, train_val_split
from study.distill.spec import RunSpec, build_trainer
from study.train.evaluation import translation_accuracy
from study.train.runtime import cpu_flags, inference_model
from study.train.trainer import AtSteps, TrainConfig, Trainer, seed_everything

ROOT = Path(__file__).resolve().parents[1]

CHECKPOINT_EVERY = 500


def machine_info() -> dict:
    """What the timings depend on: CPU flags that matter, threads, load."""
    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx2")
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "platform": platform.platform(),
            "cpu_flags": {f: f in cpu_flags() for f in wanted}, "load_avg": os.getloadavg()}


def teacher_trainer(data: ImageData, arch: str, seed: int, steps: int, precision: str) -> Trainer:
    """The trainer TeacherBank.ensure builds for (arch, seed), with the given precision."""
    seed_everything(seed)
    model = build_model(arch, data.input_shape, data.num_classes)
    loss = LeveledKDLoss(LeveledKDConfig(alpha=1.0))
    split = train_val_split(data)
    return Trainer(model, loss, {"x": data.train_x[split.train], "y": data.train_y[split.train]},
                   TrainConfig(epochs=10**9, max_steps=steps, seed=seed, device="cpu", precision=precision))


def run_one(data: ImageData, args: argparse.Namespace, seed: int, precision: str, steps: int) -> dict:
    """Train (or continue) one teacher to ``steps`` and score it; the result goes to the work dir.

    One checkpoint per (seed, precision) holds the latest state, so scoring at 1,000 and then at
    2,500 steps trains 2,500 steps in all (a resumed run continues exactly).
    """
    name = f"{args.arch}-seed{seed}-{precision}"
    result_path, ckpt_path = args.work_dir / f"{name}-{steps}.json", args.work_dir / f"{name}.pt"
    if result_path.is_file() or args.report_only:
        return json.loads(result_path.read_text()) if result_path.is_file() else None
    trainer = teacher_trainer(data, args.arch, seed, steps, precision)
    previous = {"train_s": 0.0, "user_s": 0.0, "sys_s": 0.0, "steps_timed": 0}
    if ckpt_path.is_file():
        saved = torch.load(ckpt_path, weights_only=False)
        if saved["trainer"]["step"] > steps:
            raise SystemExit(f"{ckpt_path} is past step {steps}: score step counts in increasing order")
        trainer.load_state_dict(saved["trainer"])
        previous = saved["timing"]
    start_step, clock = trainer.step, [time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)]

    def timing() -> dict:
        now, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        return {"train_s": previous["train_s"] + now - clock[0],
                "user_s": previous["user_s"] + usage.ru_utime - clock[1].ru_utime,
                "sys_s": previous["sys_s"] + usage.ru_stime - clock[1].ru_stime,
                "steps_timed": previous["steps_timed"] + trainer.step - start_step}

    def checkpoint(t: Trainer) -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"trainer": t.state_dict(), "timing": timing()}, tmp)
        os.replace(tmp, ckpt_path)
        print(f"  {name}: step {t.step}/{steps} ({timing()['train_s']:.0f}s)", file=sys.stderr, flush=True)

    trainer.callbacks = [AtSteps(lambda s: s % CHECKPOINT_EVERY == 0 or s == steps, checkpoint)]
    trainer.fit()
    spent = timing()
    x, y = data.test_x[:args.test_images], data.test_y[:args.test_images]
    scores = {}
    # fp32 teachers are scored in fp32; bf16 teachers in both (bf16 is what their bank's scoring uses)
    for inference in ("fp32", "bf16") if precision == "bf16" else ("fp32",):
        started = time.perf_counter()
        result = translation_accuracy(inference_model(trainer.model, "cpu", inference), x, y, shift_grid(), data.fill)
        scores[inference] = {"clean_acc": result.clean_acc, "translated_acc": result.translated_acc,
                             "eval_s": time.perf_counter() - started}
    record = {"arch": args.arch, "seed": seed, "precision": precision, "steps": steps,
              "ms_per_step": 1000 * spent["train_s"] / max(1, spent["steps_timed"]),
              "cpu_ms_per_step": 1000 * (spent["user_s"] + spent["sys_s"]) / max(1, spent["steps_timed"]),
              **spent, "eval": scores, "load_avg_end": os.getloadavg(), "torch_threads": torch.get_num_threads()}
    result_path.write_text(json.dumps(record, indent=2))
    return record


def student_run(data: ImageData, args: argparse.Namespace, seed: int, precision: str) -> dict:
    """An MLP student without KD for ``--student-epochs`` on the 54k training split, trained and scored
    in ``precision`` (what ``precision=auto`` does to every trial on a bf16 CPU)."""
    name = f"{args.student}-seed{seed}-{precision}-e{args.student_epochs}"
    result_path = args.work_dir / f"{name}.json"
    if result_path.is_file() or args.report_only:
        return json.loads(result_path.read_text()) if result_path.is_file() else None
    trainer = build_trainer(RunSpec(student=args.student, epochs=args.student_epochs, seed=seed), data,
                            train_val_split(data), device="cpu")
    trainer.precision = precision
    started, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    trainer.fit()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    result = trainer.evaluate(data.test_x[:args.test_images], data.test_y[:args.test_images], shift_grid(), data.fill)
    record = {"arch": args.student, "seed": seed, "precision": precision, "steps": trainer.step,
              "epochs": args.student_epochs, "train_s": time.perf_counter() - started,
              "ms_per_step": 1000 * (time.perf_counter() - started) / trainer.step,
              "cpu_ms_per_step": 1000 * cpu_s / trainer.step,
              "eval": {precision: {"clean_acc": result.clean_acc, "translated_acc": result.translated_acc}}}
    result_path.write_text(json.dumps(record, indent=2))
    return record


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(records: list[dict], precisions: list[str], steps: int, label: str = "") -> dict:
    """Mean +- std over seeds per (training precision, inference precision) at ``steps``; the verdict
    compares the bf16-vs-fp32 difference of means with the seed-to-seed spread."""
    rows = []
    at_steps = [r for r in records if r["steps"] == steps]
    # compare like with like: only seeds finished in every precision
    common = set.intersection(*({r["seed"] for r in at_steps if r["precision"] == p} for p in precisions))
    for precision in precisions:
        runs = [r for r in at_steps if r["precision"] == precision and r["seed"] in common]
        for inference in ("fp32", "bf16"):
            scored = [r for r in runs if inference in r["eval"]]
            if not scored:
                continue
            clean = [r["eval"][inference]["clean_acc"] for r in scored]
            shifted = [r["eval"][inference]["translated_acc"] for r in scored]
            rows.append({"steps": steps, "train": precision, "inference": inference,
                         "seeds": [r["seed"] for r in scored], "clean": mean_std(clean),
                         "translated": mean_std(shifted), "clean_per_seed": clean, "translated_per_seed": shifted,
                         "cpu_ms_per_step": statistics.median(r["cpu_ms_per_step"] for r in scored)})
    verdict: dict = {}
    by = {(r["train"], r["inference"]): r for r in rows}
    if ("fp32", "fp32") in by and ("bf16", "bf16") in by:
        a, b = by[("fp32", "fp32")], by[("bf16", "bf16")]
        for metric in ("clean", "translated"):
            diff = b[metric][0] - a[metric][0]
            noise = max(a[metric][1], b[metric][1])
            # both precisions of a seed share its init and batch order: the per-seed differences say more
            paired = [vb - va for va, vb in zip(a[f"{metric}_per_seed"], b[f"{metric}_per_seed"])]
            verdict[metric] = {"bf16_minus_fp32": diff, "seed_std": noise,
                               "within_seed_noise": abs(diff) <= 2 * noise if len(a["seeds"]) > 1 else None,
                               "paired_diffs": paired, "paired_std": mean_std(paired)[1]}
        verdict["train_cpu_time_ratio_fp32_over_bf16"] = a["cpu_ms_per_step"] / b["cpu_ms_per_step"]
    return {"model": label, "steps": steps, "rows": rows, "verdict": verdict}


def print_table(summary: dict, args: argparse.Namespace) -> None:
    print(f"\n{summary['model']} at {summary['steps']} steps, {args.test_images} test images x 33 shifts "
          f"(mean +- std over seeds; CPU ms/step = user+sys per step, robust to other load)")
    if not summary["rows"]:
        print("(no seed finished in every precision yet)")
        return
    header = f"{'train':>5} {'infer':>5} {'seeds':>7}  {'clean acc':>17}  {'translated acc':>17}  {'CPU ms/step':>11}"
    print(header)
    print("-" * len(header))
    for r in summary["rows"]:
        print(f"{r['train']:>5} {r['inference']:>5} {','.join(map(str, r['seeds'])):>7}  "
              f"{r['clean'][0]:.4f} +- {r['clean'][1]:.4f}  {r['translated'][0]:.4f} +- {r['translated'][1]:.4f}  "
              f"{r['cpu_ms_per_step']:>11.1f}")
    for metric, v in summary["verdict"].items():
        if isinstance(v, dict):
            verdict = {True: "within seed noise (|diff| <= 2 std)", False: "OUTSIDE seed noise (|diff| > 2 std)",
                       None: "one seed: no noise estimate"}[v["within_seed_noise"]]
            print(f"{metric}: bf16 - fp32 = {v['bf16_minus_fp32']:+.4f}, seed std {v['seed_std']:.4f} -> {verdict}; "
                  f"per seed: {', '.join(f'{d:+.4f}' for d in v['paired_diffs'])}")
    ratio = summary["verdict"].get("train_cpu_time_ratio_fp32_over_bf16")
    if ratio:
        print(f"training CPU time per step, fp32 / bf16: {ratio:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--arch", default="cnn_1")
    p.add_argument("--steps", type=int, nargs="+", default=[1000, 2500],
                   help="score every teacher at these step counts (in order; one continuing run per teacher)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--student", default="mlp_1")
    p.add_argument("--student-epochs", type=int, default=0,
                   help="also compare MLP students without KD trained this many epochs (0: no student comparison)")
    p.add_argument("--skip-teachers", action="store_true", help="only the student comparison")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: tables from the finished runs in --work-dir (unfinished ones are left out)")
    p.add_argument("--work-dir", type=Path, default=Path("runs/bf16_parity"), help="checkpoints and per-run results")
    p.add_argument("--json", default="benchmarks/results/bf16_parity.json")
    args = p.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)

    info = machine_info()
    data = load_dataset("mnist", args.data_root, download=False)
    records, summaries = [], []
    for seed in args.seeds if args.student_epochs else ():
        for precision in args.precisions:
            print(f"{args.student} seed {seed} {precision}, {args.student_epochs} epochs...", file=sys.stderr, flush=True)
            records.append(student_run(data, args, seed, precision))
    records = [r for r in records if r is not None]
    if records:
        summaries.append(summarize(records, args.precisions, records[0]["steps"],
                                   f"{args.student} (no KD, {args.student_epochs} epochs)"))
    for steps in [] if args.skip_teachers else sorted(args.steps):
        for seed in args.seeds:
            for precision in args.precisions:
                print(f"{args.arch} seed {seed} {precision} to {steps} steps...", file=sys.stderr, flush=True)
                records.append(run_one(data, args, seed, precision, steps))
    records = [r for r in records if r is not None]
    summaries += [summarize([r for r in records if r["arch"] == args.arch], args.precisions, steps,
                            f"{args.arch} teacher") for steps in ([] if args.skip_teachers else sorted(args.steps))]
    for summary in summaries:
        print_table(summary, args)
    out = ROOT / args.json
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "bf16_parity", "command": "python " + " ".join(sys.argv),
                               "machine": info, "load_avg_end": os.getloadavg(), "summaries": summaries,
                               "runs": records}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
