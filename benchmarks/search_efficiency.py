"""Search efficiency: wall time for TPE+ASHA to come within 0.5 pt of the best validation translated
accuracy, against random search without pruning, on the same budget, over repetitions.

    python -m benchmarks.search_efficiency --data-root data                    # 2 arms x 3 reps, leveled_kd
    python -m benchmarks.search_efficiency --data-root data --arms random --reps 1 --max-epochs 5
    python -m benchmarks.search_efficiency --tiny                                # seconds-scale (the test)

Arms, each a real ``run_study.py`` study (through :func:`benchmarks.trial_efficiency.run_study`):

- ``tpe_asha``: the space as it is (its sampler must be ``tpe`` and its scheduler ``asha``);
- ``random``: the same space file with ``sampler: random`` and ``scheduler: none`` (a derived YAML
  written to the output directory, everything else identical), plus ``--no-asha``.

Both arms get the same budget flags (``--num-samples``, ``--max-epochs``, ``--train-subset``, ...)
and ``--seed REP``. ``--seed`` seeds the Optuna sampler (``TPESampler``/``RandomSampler``) and
``OptunaSearch``, and also picks the training subset (``--train-subset``, seeded by ``seed + 1``):
within a repetition both arms train on the same images; the validation images are fixed
(``study.train.data.VAL_SEED``) in every run, so validation accuracies compare across all runs. Student
initialisation is the space's ``seed`` (0 unless the space says otherwise), not ``--seed``.
TPE draws its first 4 trials (``n_startup_trials``) with a random sampler of the same seed: they are
the random arm's first 4 configurations, so the arms differ by TPE from the 5th trial on, and by ASHA.
Both arms run with ``--no-baseline``: the no-KD baseline trials are not part of either search, and
would only add the same fixed cost to both. ``--keep-best 0``: logging the best students as MLflow
models happens after the search and is not measured. Each study has its own output directory
(its own MLflow and Optuna stores); the teacher banks are shared (``--bank-dir``, default
``OUTPUT_DIR/teachers``), so only the first study trains them, in its stage 1, which is never timed.
The arms alternate which one runs first from one repetition to the next.

What is measured, per study, from its ``reports/trials.csv`` (search trials only):

- **TARGET** = the best ``val_translated_acc`` over all trials of all runs of both arms, completed or
  pruned (a pruned trial's value is its last reported one, which is what the searcher was told).
  One target for every run, so "reached" means the same accuracy in each arm; it is the best the
  whole benchmark found, the closest available stand-in for the space's optimum on this budget.
- **time to target** = ``t_hit - t0``. ``t0`` = the first search trial's start, min over trials of
  ``ended_at - time_trial_s`` (``ended_at``: Tune's unix timestamp of the trial's last result, whole
  seconds; ``time_trial_s``: the trial's own clock from entering the trainable to that result).
  ``t_hit`` = the first ``ended_at``, in order of ``ended_at``, at which the best-so-far
  ``val_translated_acc`` of finished trials is >= TARGET - 0.005. A trial counts when it ends (its
  final value, as the study reports it), not at its intermediate epochs. Resolution: about 1 s.
  Ray's worker start-up before the first trial is the same for both arms and is not counted; it is
  recorded as ``startup_s`` (``t0`` minus stage 2's start in ``study.json``, rounded to 1 s).
  Not reached: ``null`` in the JSON (infinite for the medians), "not reached" in the table.
- **compute** = the optimizer-step seconds (``time_train_s``) summed over the search trials.

Per arm: the median and each repetition's time to target, the fraction of repetitions that reached
the target, the mean compute; and the ratio random / tpe_asha of the median times to target.
Prints a table and writes JSON (``--json``, default ``benchmarks/results/search_efficiency.json``).

The published numbers come from ``python -m benchmarks.search_efficiency --data-root data`` (the
defaults above: leveled_kd, 12 search trials of at most 3 epochs, 5,000 training images, 1,000
validation and test images, teachers to step 1,000, fp32, 3 repetitions); numbers: see docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import yaml

from benchmarks.common import ROOT, print_table, write_result
from benchmarks.trial_efficiency import run_study

ARMS = ("tpe_asha", "random")
WITHIN = 0.005  # 0.5 pt of accuracy
OBJECTIVE = "val_translated_acc"
#: run_study.py budget flags: the published runs' and --tiny's (any one can be given explicitly)
BUDGETS = {
    "full": {"num_samples": 12, "max_epochs": 3, "train_subset": 5000, "val_images": 1000, "test_images": 1000,
             "teacher_steps": 1000, "teacher_eval_images": 300, "precision": "fp32", "reps": 3},
    # two epochs, not one: with one epoch the study runs FIFO (make_scheduler) and the arms differ only by sampler
    "tiny": {"num_samples": 2, "max_epochs": 2, "train_subset": 300, "val_images": 100, "test_images": 100,
             "teacher_steps": 50, "teacher_eval_images": 50, "precision": "fp32", "reps": 1},
}


def space_file(space: str) -> Path:
    """The YAML file of ``--space`` (a name in ``study/spaces`` or a path), as :func:`study.search.space.load_space` finds it."""
    from study.search.space import SPACES_DIR

    return Path(space) if Path(space).suffix in (".yaml", ".yml") else SPACES_DIR / f"{space}.yaml"


def arm_spaces(space: str, out: Path) -> dict[str, str]:
    """The ``--space`` of each arm: the space itself for tpe_asha, a derived random / no-scheduler copy."""
    from study.search.space import load_space

    base = load_space(space)
    if (base.sampler, base.scheduler) != ("tpe", "asha"):
        raise SystemExit(f"space {space!r} has sampler {base.sampler!r} and scheduler {base.scheduler!r}; "
                         f"the tpe_asha arm needs tpe and asha")
    raw = yaml.safe_load(space_file(space).read_text())
    raw.update(sampler="random", scheduler="none")
    derived = out / f"{base.name}_random.yaml"
    derived.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_space(str(derived))  # the same checks run_study.py makes, before any study starts
    return {"tpe_asha": str(space_file(space).resolve()), "random": str(derived)}


def budget_flags(args: argparse.Namespace) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in BUDGETS["full"] if k != "reps"]
    return [*flags, "--no-baseline", "--keep-best", "0"]


def run_arm(arm: str, rep: int, space: str, out: Path, args: argparse.Namespace) -> dict:
    """One study of ``arm`` with ``--seed rep`` in its own output directory; what it measured."""
    name = f"search-{arm}-r{rep}"
    extra = [*budget_flags(args), "--seed", str(rep), "--study-name", name, *(["--no-asha"] if arm == "random" else [])]
    study_args = argparse.Namespace(**{**vars(args), "space": space})
    print(f"{name}: running", flush=True)
    run = run_study(ROOT, out / name, study_args, extra)
    state = json.loads((out / name / "studies" / name / "study.json").read_text())
    table = run["table"]
    search = table[~table["baseline"].astype(bool)].dropna(subset=["ended_at", OBJECTIVE])
    t0 = float((search["ended_at"] - search["time_trial_s"]).min())
    return {"arm": arm, "rep": rep, "study": name, "sampler": state["plan"]["sampler"],
            "scheduler": state["plan"]["scheduler"], "stage2_s": run["trials_s"], "study_s": round(run["wall_s"], 1),
            "startup_s": round(t0 - (state["started"] + state["teachers_seconds"]), 1),
            "search_s": round(float(search["ended_at"].max()) - t0, 1),
            "trials": int(len(table)), **{s: int((table["state"] == s).sum()) for s in ("completed", "pruned", "failed")},
            "epochs": int(table["epochs_done"].sum()), "best_val_translated": float(search[OBJECTIVE].max()),
            "compute_s": round(float(table["time_train_s"].fillna(0).sum()), 1),
            "timeline": [[round(float(end - t0), 1), float(acc)] for end, acc in
                         search.sort_values("ended_at")[["ended_at", OBJECTIVE]].itertuples(index=False)]}


def time_to_target(timeline: list[list[float]], target: float, within: float = WITHIN) -> float:
    """Seconds from the first trial's start until the best-so-far value is within ``within`` of ``target``."""
    return next((t for t, acc in timeline if acc >= target - within - 1e-12), math.inf)


def paired_by_rep(runs: list[dict]) -> list[dict]:
    """Per repetition (same ``--seed``, same training subset): the random arm's best on the full budget,
    how long random took to find it, how long tpe_asha took to reach it, and tpe_asha's own best.
    A second view when the global TARGET is one lucky run: "as good as random search, how much sooner?"
    """
    rows = []
    for rep in sorted({r["rep"] for r in runs}):
        arms = {r["arm"]: r for r in runs if r["rep"] == rep}
        if {"random", "tpe_asha"} <= set(arms):
            ref = arms["random"]["best_val_translated"]
            rows.append({"rep": rep, "random_best": ref, "tpe_asha_best": arms["tpe_asha"]["best_val_translated"],
                         "best_difference": arms["tpe_asha"]["best_val_translated"] - ref,
                         "random_time_to_its_best_s": finite(time_to_target(arms["random"]["timeline"], ref, 0.0)),
                         "tpe_asha_time_to_it_s": finite(time_to_target(arms["tpe_asha"]["timeline"], ref, 0.0)),
                         "compute_ratio_tpe_asha_over_random": round(arms["tpe_asha"]["compute_s"]
                                                                     / max(arms["random"]["compute_s"], 1e-9), 3)})
    return rows


def finite(x: float) -> float | None:
    return round(x, 1) if math.isfinite(x) else None


def summarize(runs: list[dict]) -> tuple[float, dict]:
    target = max(r["best_val_translated"] for r in runs)
    arms = {}
    for run in runs:
        run["time_to_target_s"] = finite(time_to_target(run["timeline"], target))
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        times = [math.inf if r["time_to_target_s"] is None else r["time_to_target_s"] for r in mine]
        arms[arm] = {"median_time_to_target_s": finite(statistics.median(times)),
                     "time_to_target_s": [r["time_to_target_s"] for r in mine],
                     "reached": sum(map(math.isfinite, times)) / len(times),
                     "mean_compute_s": round(statistics.mean(r["compute_s"] for r in mine), 1)}
    return target, arms


def ratio(arms: dict) -> float | None:
    """random / tpe_asha of the median times to target (None when either is missing or not reached)."""
    medians = [arms.get(a, {}).get("median_time_to_target_s") for a in ("random", "tpe_asha")]
    return round(medians[0] / medians[1], 2) if None not in medians and medians[1] > 0 else None


def shown(seconds: float | None) -> str:
    return "not reached" if seconds is None else f"{seconds:.1f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="leveled_kd", help="a tpe + asha space (name or YAML path)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--reps", type=int, default=None, help="repetitions, seeds 0..REPS-1 (default 3; --tiny: 1)")
    p.add_argument("--tiny", action="store_true", help="a seconds-scale budget on a 2,000/500-image MNIST slice (tests)")
    for key, value in BUDGETS["full"].items():
        if key != "reps":
            p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                           help=f"run_study.py's (default {value}; --tiny: {BUDGETS['tiny'][key]})")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of each study's local Ray instance")
    p.add_argument("--data-root", default=None, help="MNIST root (default: data; --tiny: a slice written to OUTPUT_DIR)")
    p.add_argument("--no-download", action="store_true", help="do not download MNIST into --data-root when missing")
    p.add_argument("--bank-dir", default=None, help="teacher banks shared by every study (default: OUTPUT_DIR/teachers)")
    p.add_argument("--output-dir", default="runs/search_efficiency",
                   help="each invocation's studies go to a new timestamped folder under it")
    p.add_argument("--json", default=None,
                   help="default: benchmarks/results/search_efficiency.json (--tiny: search_efficiency_tiny.json)")
    p.add_argument("--reanalyse", metavar="JSON", default=None,
                   help="re-summarise the runs recorded in this benchmark's JSON (no studies run); writes --json or it")
    args = p.parse_args(argv)
    if args.reanalyse:
        record = json.loads(Path(args.reanalyse).read_text())
        runs = record.pop("runs")
        report(runs, {k: record[k] for k in ("space", "arms", "reps", "tiny", "budget", "num_cpus", "output_dir",
                                             "machine") if k in record}, args.json or args.reanalyse)
        return
    preset = BUDGETS["tiny" if args.tiny else "full"]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    base = Path(args.output_dir).resolve()
    out = base / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    args.bank_dir = str(Path(args.bank_dir).resolve() if args.bank_dir else base / "teachers")
    if args.data_root is None and args.tiny:
        from study.testing import write_tiny_mnist

        args.data_root = str(write_tiny_mnist(out / "data"))
    args.data_root = str(Path(args.data_root or "data").resolve())
    if not args.no_download:  # once here; the studies themselves run with --no-download
        from study.train.data import load_dataset

        load_dataset("mnist", args.data_root, download=True)
    spaces = arm_spaces(args.space, out)

    runs = []
    for rep in range(args.reps):
        order = args.arms if rep % 2 == 0 else args.arms[::-1]
        runs += [run_arm(arm, rep, spaces[arm], out, args) for arm in order]
    record = {"space": args.space, "arms": args.arms, "reps": args.reps, "tiny": args.tiny,
              "budget": budget_flags(args), "num_cpus": args.num_cpus, "output_dir": str(out),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()}}
    report(runs, record, args.json or f"benchmarks/results/search_efficiency{'_tiny' if args.tiny else ''}.json")


def report(runs: list[dict], record: dict, path: str) -> None:
    """Summarise, print the tables and write ``record`` with the results to ``path`` (JSON)."""
    target, arms = summarize(runs)
    runs.sort(key=lambda r: (ARMS.index(r["arm"]), r["rep"]))

    print(f"\nTARGET = best {OBJECTIVE} over all {len(runs)} runs = {target:.4f}; reached = within {WITHIN}")
    print_table(runs, [("arm", "arm", "{}"), ("rep", "rep", "{}"), ("stage 2 s", "stage2_s", "{}"),
                       ("search s", "search_s", "{:.1f}"), ("completed", "completed", "{}"), ("pruned", "pruned", "{}"),
                       ("best val transl.", "best_val_translated", "{:.4f}"),
                       ("time to target s", lambda r: shown(r["time_to_target_s"]), "{}"),
                       ("compute s", "compute_s", "{:.1f}")])
    print()
    print_table([{"arm": a, **s} for a, s in arms.items()], [
        ("arm", "arm", "{}"), ("median time to target s", lambda s: shown(s["median_time_to_target_s"]), "{}"),
        ("each rep", lambda s: ", ".join(map(shown, s["time_to_target_s"])), "{}"),
        ("reached", "reached", "{:.2f}"), ("mean compute s", "mean_compute_s", "{:.1f}")])
    speedup = ratio(arms)
    print(f"\nmedian time to target, random / tpe_asha: {'n/a' if speedup is None else f'{speedup:.2f}x'}")
    pairs = paired_by_rep(runs)
    if pairs:
        print("\nper repetition: the random arm's best on the full budget, and when each arm reached it")
        print_table(pairs, [("rep", "rep", "{}"), ("random best", "random_best", "{:.4f}"),
                            ("tpe_asha best", "tpe_asha_best", "{:.4f}"), ("difference", "best_difference", "{:+.4f}"),
                            ("random: s to its best", lambda r: shown(r["random_time_to_its_best_s"]), "{}"),
                            ("tpe_asha: s to it", lambda r: shown(r["tpe_asha_time_to_it_s"]), "{}"),
                            ("compute tpe/random", "compute_ratio_tpe_asha_over_random", "{:.2f}")])
    record.update(objective=OBJECTIVE, within=WITHIN, target=target, ratio_random_over_tpe_asha=speedup,
                  summary=arms, paired_by_rep=pairs, runs=runs)
    write_result(record, path)


if __name__ == "__main__":
    main()
