"""A finished study's summary: its best trial (chosen on validation), the no-KD baseline, the
paired gain with confidence intervals and, for a controlled study, its arms; and
``python -m study.analysis.reports``, which prints a finished study's arms table again.

The table itself is :mod:`study.analysis.tables`, the figures :mod:`study.analysis.figures`, the
arms :mod:`study.analysis.arms`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from study.analysis.arms import arm_effects, arms_markdown, study_section
from study.analysis.tables import baseline_of, best_trials, kd_columns


#: Robustness metrics of the summary's paired gain (see study/train/evaluation.py for their definitions).
GAIN_METRICS = ("translated", "small_shift", "translated_over_clean")


def paired_gains(table: pd.DataFrame, study_dir: Path, n_boot: int = 10_000,
                 metric: str = "val_translated_acc") -> dict[str, dict[str, Any]]:
    """Gain of the validation-best trial over the no-KD baseline of the same student seed, on test,
    paired image by image, with a 95% bootstrap CI (:mod:`study.analysis.stats`).

    One student per arm: the interval covers test-image noise, not seed-to-seed variation (the
    reproduction's grids measure that); an empty dict when the predictions are missing.
    """
    from study.analysis.studies import Predictions, Skip
    from study.analysis.stats import paired_effect

    best = best_trials(table, metric, k=1)
    if best.empty:
        return {}
    base = baseline_of(table, best["student"].iloc[0] if "student" in best else None)
    if base.empty:
        return {}
    predictions = Predictions(study_dir, "test")
    gains = {}
    for metric in GAIN_METRICS:
        try:
            (arm_a, _), (arm_b, _) = predictions.arm(best), predictions.arm(base.assign(teacher_seed=None))
            effect = paired_effect(arm_a, arm_b, metric=metric, n_boot=n_boot)
        except (Skip, ValueError):  # predictions missing, no baseline of the best trial's seed, or other images
            return {}
        gains[metric] = {"estimate": effect.estimate, "ci_low": effect.ci_low, "ci_high": effect.ci_high,
                         "p_value": effect.p_value, "mde": effect.mde, "n_images": effect.n_images,
                         "text": effect.format()}
    return gains


def best_transfer(table: pd.DataFrame, study_dir: Path, n_boot: int = 10_000,
                  metric: str = "val_translated_acc") -> dict[str, dict[str, Any]]:
    """The validation-best trial's transfer ratios (:mod:`study.analysis.transfer`) against its teacher
    and the no-KD student of its seed, on its test images: ``{metric: {estimate, ci_low, ci_high,
    student, baseline, teacher, text}}``; empty without a single teacher or its evaluation."""
    from study.analysis.studies import Predictions
    from study.analysis.transfer import arm_transfers

    best = best_trials(table, metric, k=1)
    base = baseline_of(table, best["student"].iloc[0] if not best.empty and "student" in best else None)
    if best.empty or base.empty:
        return {}
    _, ratios = arm_transfers(Predictions(study_dir, "test"), best, base.assign(teacher_seed=None), n_boot)
    return {m: {"estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high, "student": r.student,
                "baseline": r.baseline, "teacher": r.teacher, "text": r.format()} for m, r in ratios.items()}


def summary(table: pd.DataFrame, study_dir: Path | None = None, metric: str = "val_translated_acc") -> dict[str, Any]:
    """Best configuration (by validation), its test numbers, and the gain over the no-KD baseline
    (with paired confidence intervals when ``study_dir/predictions`` holds the trials' per-image results)."""
    best = best_trials(table, metric, k=1)
    base = baseline_of(table, best["student"].iloc[0] if not best.empty and "student" in best else None)
    out: dict[str, Any] = {"trials": int(len(table)), "chosen_on": metric,
                           "states": table["state"].value_counts().to_dict() if not table.empty else {}}
    if not best.empty:
        row = best.iloc[0]
        keep = ["trial_id", "variant", "student", "teachers", "teacher_step", "alpha", *kd_columns(), "teacher_weight",
                "seed", "val_clean_acc", "val_translated_acc", "test_clean_acc", "test_translated_acc",
                *([metric] if metric != "val_translated_acc" else [])]
        out["best"] = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in keep
                       if k in row and pd.notna(row[k])}
    if not base.empty:
        out["baseline"] = {k: float(base[k].mean()) for k in ("val_clean_acc", "val_translated_acc", "test_clean_acc",
                                                             "test_translated_acc") if k in base}
    if "best" in out and "baseline" in out:
        for k in ("test_translated_acc", "test_clean_acc"):
            if k in out["best"] and k in out["baseline"]:
                out[f"gain_{k}"] = out["best"][k] - out["baseline"][k]
    if "best" in out and study_dir is not None:
        gains = paired_gains(table, study_dir, metric=metric)
        if gains:
            out["paired_gain"] = gains
        transfer = best_transfer(table, study_dir, metric=metric)
        if transfer:
            out["transfer"] = transfer
        arms = arm_effects(table, study_dir)
        if not arms.empty:
            out["arms"] = arms.astype(object).where(arms.notna(), None).to_dict("records")  # JSON: null, not NaN
    return out


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"trials: {s['trials']} ({', '.join(f'{v} {k}' for k, v in s['states'].items())})"]
    if "best" in s:
        b = s["best"]
        config = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b.items()
                           if k not in ("val_clean_acc", "val_translated_acc", "test_clean_acc", "test_translated_acc"))
        chosen_on = {"val_translated_acc": "translated accuracy", "val_transfer_translated": "transfer ratio"}.get(
            s.get("chosen_on", "val_translated_acc"), s.get("chosen_on"))
        lines.append(f"best (by validation {chosen_on}): {config}")
        lines.append(f"  val  clean {b.get('val_clean_acc', float('nan')):.4f}  "
                     f"translated {b.get('val_translated_acc', float('nan')):.4f}")
        lines.append(f"  test clean {b.get('test_clean_acc', float('nan')):.4f}  "
                     f"translated {b.get('test_translated_acc', float('nan')):.4f}")
    if "baseline" in s:
        n = s["baseline"]
        lines.append(f"no KD baseline (same student): test clean {n.get('test_clean_acc', float('nan')):.4f}  "
                     f"translated {n.get('test_translated_acc', float('nan')):.4f}")
    if "gain_test_translated_acc" in s:
        lines.append(f"gain over no KD: translated {s['gain_test_translated_acc']:+.4f}, "
                     f"clean {s.get('gain_test_clean_acc', float('nan')):+.4f}")
    if "paired_gain" in s:
        n = next(iter(s["paired_gain"].values()))["n_images"]
        lines.append(f"paired gain over the same-seed no-KD student on {n} test images (95% CI; image noise only, "
                     f"one student each):")
        names = {"translated": "translated (32 shifts)", "small_shift": "small shifts (2-4 px)",
                 "translated_over_clean": "translated / clean"}
        for metric, gain in s["paired_gain"].items():
            lines.append(f"  {names.get(metric, metric):<24} {gain['text']}")
    if "transfer" in s:
        t = s["transfer"]["translated"]
        lines.append(f"transfer of the teacher's robustness (student - no KD) / (teacher - no KD), same images "
                     f"(teacher: translated {t['teacher']:.4f}):")
        names = {"translated": "translated (32 shifts)", "small_shift": "small shifts (2-4 px)"}
        for metric, ratio in s["transfer"].items():
            lines.append(f"  {names.get(metric, metric):<24} {ratio['text']}")
    if "arms" in s:
        lines.append("arms (means over seeds; effect on test translated vs the same student's no-KD baseline, "
                     "paired over seeds and images):")
        lines.append(arms_markdown(pd.DataFrame(s["arms"])).rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m study.analysis.reports STUDY_DIR [STUDY_DIR ...] [--versus ARM | --against DIR ...]``: a
    finished study's arms table again (several directories: pooled studies of one design), against its no-KD
    baselines or against one of its arms; for a study without arms (a finding's), its configurations by
    teacher seed. ``--against`` compares each arm with the same arm of another study of the same design
    under another budget (``--min-epochs``...): the budget change's own paired effect, arm by arm."""
    import argparse

    from study.analysis.studies import Skip, load_trials

    p = argparse.ArgumentParser(prog="python -m study.analysis.reports", description=main.__doc__.split("\n")[0])
    p.add_argument("study_dir", type=Path, nargs="+",
                   help="studies/<study>: holds reports/trials.csv and predictions/ (several: pooled)")
    p.add_argument("--versus", default=None, help="compare every arm with this arm instead of no KD")
    p.add_argument("--against", type=Path, nargs="+", default=None, metavar="DIR",
                   help="compare every arm with the same arm of this study (several: pooled), e.g. the same "
                        "design without --min-epochs: units matched by teacher and student seed")
    p.add_argument("--n-boot", type=int, default=10_000)
    args = p.parse_args(argv)
    if args.versus and args.against:
        p.error("--versus and --against are two different comparisons: give one")
    dirs = args.study_dir if len(args.study_dir) > 1 else args.study_dir[0]
    other = None if not args.against else args.against if len(args.against) > 1 else args.against[0]
    try:
        table = load_trials(dirs)
        other_table = load_trials(other) if other is not None else None
    except Skip as why:
        print(f"python -m study.analysis.reports: {why}", file=sys.stderr)
        return 2
    if other_table is not None:
        from study.analysis.arms import against_effects, against_markdown

        frame = against_effects(table, dirs, other_table, other, args.n_boot)
        print(against_markdown(frame, *_sides(args.study_dir, args.against)), end="")
        return 0
    section = study_section(table, dirs, args.n_boot, args.versus)
    if section is None:
        print(f"{args.study_dir[0]}: no arms or configurations (or no completed trials)")
        return 1
    print(section[1], end="")
    return 0


def _sides(these: list[Path], others: list[Path]) -> tuple[str, str]:
    """Column labels for ``--against``: the plan entries the two studies differ in (``min_epochs 8`` vs
    ``min_epochs 0``), which is what the comparison is about; the directory names when the plans agree."""
    from study.analysis.studies import POOL_KEYS, study_plan

    a, b = study_plan(these[0]), study_plan(others[0])
    differ = [key for key in POOL_KEYS if key in a and key in b and a[key] != b[key]]
    if not differ:
        return "+".join(d.name for d in these), "+".join(d.name for d in others)
    return tuple(", ".join(f"{key} {plan[key]}" for key in differ) for plan in (a, b))  # type: ignore[return-value]


if __name__ == "__main__":
    raise SystemExit(main())
