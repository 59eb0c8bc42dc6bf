"""What each KD scheme of the ``transfer`` space costs per student epoch, against normal KD and no KD.

    python -m benchmarks.scheme_cost --data-root data --bank-dir runs/teachers            # every arm
    python -m benchmarks.scheme_cost --data-root data --bank-dir runs/teachers --arms kd,fm_erase,aug_erase --subset 10000

Each arm is built as a trial builds it: its configuration from the space (``run_spec``), its teacher
outputs from the banks (``teacher_outputs``: a view set's or a trajectory's caches are computed on
first use, and that one-off time is reported apart, as ``cache_s``), and the one shared trainer
(``build_trainer``). The students' epochs then alternate, arm after arm, for ``--rounds`` rounds, so
a load that drifts hits every arm alike; the table gives median seconds per epoch and the ratio to
normal KD (``kd``) and to no KD. Evaluation is not timed: it is the same for every arm. Needs the
banks the arms name, up to their snapshot step (``cnn_1``, ``cnn_1_maxpool``, ``mlp_1`` at 2,500 for
the ``transfer`` space). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from benchmarks.common import ROOT, alternate_epochs, print_table, write_result
from study.distill.config import run_spec
from study.distill.outputs import teacher_outputs
from study.distill.spec import build_trainer
from study.search.space import load_space
from study.train.data import load_dataset, train_val_split
from study.train.runtime import PRECISION_ENV


def arm_configs(space_name: str, arms: list[str] | None, teacher_steps: int) -> dict[str, dict]:
    """``{arm: config}`` of the space's arms (all, or those named), plus its no-KD baseline first."""
    space = load_space(space_name).resolve_steps(teacher_steps)
    names = arms or list(space.arms)
    unknown = [a for a in names if a not in space.arms and a != "no_kd"]
    if unknown:
        raise SystemExit(f"scheme_cost: unknown arm(s) {', '.join(unknown)}; arms of {space_name}: "
                         f"{', '.join(space.arms)}")
    from optuna.trial import FixedTrial

    # each arm through the searcher's own define-by-run function, every other searched key at its first choice
    first = {name: param.values()[0] for name, param in space.params.items()}
    configs = {"no_kd": space.baseline_config(0)}
    for name in names:
        if name != "no_kd":
            trial = FixedTrial({**first, "arm": name})
            constants = space.suggest(trial)
            configs[name] = {**trial.params, **constants}
    return configs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--bank-dir", required=True, help="the teacher banks the arms name (mnist/<arch>/seed-0)")
    p.add_argument("--space", default="transfer")
    p.add_argument("--arms", default="", help="comma-separated arms (default: every arm of the space)")
    p.add_argument("--teacher-steps", type=int, default=2500)
    p.add_argument("--subset", type=int, default=10000, help="student training images (0: the whole split)")
    p.add_argument("--epochs", type=int, default=20, help="the schedule an arm is built for (trajectory stages)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--label", default="default", help="the record's name in the JSON file")
    p.add_argument("--json", default="benchmarks/results/scheme_cost.json")
    args = p.parse_args(argv)
    os.environ[PRECISION_ENV] = args.precision
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = arm_configs(args.space, [a for a in args.arms.split(",") if a] or None, args.teacher_steps)
    data = load_dataset("mnist", args.data_root, download=False)
    split = train_val_split(data, args.subset or None, seed=0)
    trainers, cache_s = {}, {}
    for name, config in configs.items():
        spec = run_spec(config, dataset="mnist", epochs=args.epochs, train_subset=args.subset or None)
        started = time.perf_counter()
        outputs = teacher_outputs(spec, data, split, args.bank_dir, device="cpu")
        cache_s[name] = time.perf_counter() - started
        trainers[name] = build_trainer(spec, data, split, outputs, device="cpu", precision=args.precision)
    times = alternate_epochs(trainers, args.rounds)
    median = {name: statistics.median(values) for name, values in times.items()}
    rows = [{"arm": name, "epoch_s": round(median[name], 3),
             "vs_kd": round(median[name] / median["kd"], 3) if "kd" in median else None,
             "vs_no_kd": round(median[name] / median["no_kd"], 3), "cache_s": round(cache_s[name], 2),
             "epochs_s": [round(v, 3) for v in times[name]]} for name in trainers]
    print(f"{len(split.train)} training images, batch 128, {torch.get_num_threads()} threads, {args.precision}, "
          f"{args.rounds} alternating rounds (cache s: reading or computing the arm's teacher outputs, once)")
    print_table(rows, [("arm", "arm", "{}"), ("epoch s", "epoch_s", "{:.2f}"),
                       ("x kd", lambda r: r["vs_kd"] if r["vs_kd"] is not None else float("nan"), "{:.2f}"),
                       ("x no KD", "vs_no_kd", "{:.2f}"), ("cache s", "cache_s", "{:.1f}")])
    path = ROOT / args.json
    record = json.loads(path.read_text()) if path.is_file() else {}
    record[args.label] = {"space": args.space, "images": len(split.train), "precision": args.precision,
                          "threads": torch.get_num_threads(), "rounds": args.rounds, "epochs_planned": args.epochs,
                          "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                      "load_avg": os.getloadavg()}, "rows": rows}
    write_result(record, args.json)

if __name__ == "__main__":
    main()
