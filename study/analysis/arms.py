"""The arms table of a controlled study (spaces with ``arms``) and the configurations table of a
finding's study: each arm's means over seeds, its teachers' accuracies, and its paired effect
against the same student's no-KD baseline (or another arm), Holm-adjusted across arms."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from study.analysis.tables import baseline_of


#: Per-arm means of these trial columns (those present); ``epochs_done`` shows each arm converged
#: in about as many epochs as the no-KD students, the other metrics are :mod:`study.train.evaluation`'s.
ARM_MEANS = ("epochs_done", "val_translated_acc", "test_clean_acc", "test_translated_acc", "test_small_shift_acc",
             "test_translated_over_clean")


def arm_means(trials: pd.DataFrame) -> dict[str, Any]:
    """Means of one arm's trials, and the two spreads a reader needs to weigh them: across teacher
    seeds (std of each teacher seed's mean test translated accuracy: what a new teacher would
    change) and across student seeds (their std within a teacher seed, averaged)."""
    row: dict[str, Any] = {"trials": len(trials)}
    for column in ARM_MEANS:
        if column in trials:
            row[column] = float(pd.to_numeric(trials[column], errors="coerce").mean())
    if "test_translated_acc" in trials:
        seeds = trials["teacher_seed"] if "teacher_seed" in trials else pd.Series(0, index=trials.index)
        groups = trials.groupby(seeds.fillna(-1))["test_translated_acc"]
        means = groups.mean()
        row["teacher_seed_std"] = float(means.std()) if len(means) > 1 else float("nan")
        row["student_seed_std"] = float(groups.std().mean())
    return row


def teacher_accuracies(trials: pd.DataFrame, study_dir: Path | Sequence[Path]) -> dict[str, float]:
    """Mean clean and translated accuracy of the teacher snapshots an arm distilled from, over its
    teacher seeds, from the banks' manifests (each snapshot is scored there when it is saved, on
    the bank's ``eval_images`` test images). Empty for no-KD rows, several teachers, banks that
    are not where the study's ``study.json`` says (the first study's, when studies are pooled), and
    banks whose snapshots were scored on a prefix of the test set (before ``scoring`` was recorded;
    on a class-sorted dataset that prefix is one class): a wrong number is worse than none, and the
    next study that uses the bank rescores it."""
    from study.analysis.studies import as_dirs, study_plan
    from study.teachers.bank import SnapshotError, TeacherBank, TeacherSpec

    try:
        plan = study_plan(as_dirs(study_dir)[0])
        banks, dataset = Path(plan["teacher_banks"]), plan["dataset"]
    except (KeyError, TypeError):
        return {}
    snapshots = set()  # each teacher (architecture, seed, label smoothing) and step once: a mean over
    for row in trials.to_dict("records"):  # teachers, not over trials, and one manifest read each
        arch, step = row.get("teachers"), row.get("teacher_step")
        if not isinstance(arch, str) or arch == "none" or "+" in arch or pd.isna(step):
            return {}
        seed = row.get("teacher_seed")
        snapshots.add((TeacherSpec(dataset, arch, 0 if seed is None or pd.isna(seed) else int(seed),
                                   float(row.get("teacher_label_smoothing") or 0.0)), int(step)))
    clean, translated = [], []
    for spec, step in snapshots:
        try:
            bank = TeacherBank(banks, spec)
            if not bank.scored_as_now():
                return {}
            record = bank.manifest()["snapshots"][str(step)]
        except (OSError, SnapshotError, KeyError):
            return {}
        clean.append(record["clean_acc"])
        translated.append(record["translated_acc"])
    if not clean:
        return {}
    return {"teacher_clean_acc": sum(clean) / len(clean), "teacher_translated_acc": sum(translated) / len(translated)}


def transfer_columns(predictions: Any, trials: pd.DataFrame, no_kd: pd.DataFrame, n_boot: int) -> dict[str, Any]:
    """An arm's teacher, scored on the arm's own test images (mean over teacher seeds), and its
    transfer ratios with 95% intervals (:mod:`study.analysis.transfer`) against the same student's
    no-KD runs; empty when the arm has no single teacher or the study kept no teacher evaluations."""
    from study.analysis.transfer import arm_transfers

    teachers, ratios = arm_transfers(predictions, trials, no_kd, n_boot)
    if not teachers:
        return {}
    out: dict[str, Any] = {f"teacher_test_{m}_acc": float(np.mean([t.accuracy(m) for t in teachers.values()]))
                           for m in ("clean", "translated", "small_shift")}
    for metric, ratio in ratios.items():
        out.update({f"transfer_{metric}": ratio.estimate, f"transfer_{metric}_low": ratio.ci_low,
                    f"transfer_{metric}_high": ratio.ci_high})
    return out


def arm_effects(table: pd.DataFrame, study_dir: Path | Sequence[Path], n_boot: int = 10_000, versus: str | None = None) -> pd.DataFrame:
    """One row per arm of a controlled study (spaces with ``arms``): its means over seeds
    (:func:`arm_means`), and its paired effect on test translated accuracy against the no-KD
    baseline of the *same student* (hierarchical bootstrap over seeds and images, Holm-adjusted
    across arms), or against the arm named ``versus`` (e.g. the poster's ``kl``). The reference
    itself (each student's no-KD students, or ``versus``) is a row too, marked ``reference``, so
    that the table holds every number a results page quotes. ``chosen`` marks the arm with the
    best mean *validation* translated accuracy: the test columns report, they never choose.
    Empty when the study has no arms.
    """
    from study.analysis.studies import Predictions

    done = table[table.get("state", pd.Series(dtype=str)) == "completed"] if not table.empty else table
    if done.empty or "arm" not in done or done["arm"].isna().all():
        return pd.DataFrame()
    if versus is not None:
        if versus not in set(done["arm"].dropna()):
            raise ValueError(f"no arm {versus!r}; arms: {', '.join(map(str, done['arm'].dropna().unique()))}")
        versus_rows = done[done["arm"] == versus]
        if "student" in done:  # an arm is only compared with the reference when their students match
            done = done[done["arm"].isna() | (done["student"] == versus_rows["student"].iloc[0])]
    predictions = Predictions(study_dir, "test")

    def described(arm: str, trials: pd.DataFrame, reference: bool) -> dict[str, Any]:
        return {"arm": arm, "reference": reference,
                "student": trials["student"].iloc[0] if "student" in trials else None,
                "teachers": trials["teachers"].iloc[0] if "teachers" in trials else None,
                "variant": trials["variant"].iloc[0] if "variant" in trials else None, **arm_means(trials),
                **teacher_accuracies(trials, study_dir)}

    rows = []
    if versus is not None:
        rows.append(described(versus, versus_rows, True))
    else:
        students = done["student"].dropna().unique() if "student" in done else [None]
        for student in students:
            base = baseline_of(done, student)
            if not base.empty:
                rows.append(described("no KD", base, True))
    for arm, trials in done[done["arm"].notna() & (done["arm"] != versus)].groupby("arm", sort=False):
        row = described(arm, trials, False)
        no_kd = baseline_of(done, row["student"]).assign(teacher_seed=None)
        reference = versus_rows if versus is not None else no_kd
        row.update(_effect_columns(predictions, trials, predictions, reference, n_boot))
        row.update(transfer_columns(predictions, trials, no_kd, n_boot))
        rows.append(row)
    frame = _with_holm(pd.DataFrame(rows))
    arms = ~frame["reference"]
    frame["chosen"] = arms & (frame["val_translated_acc"] == frame.loc[arms, "val_translated_acc"].max())
    return frame


def against_effects(table: pd.DataFrame, study_dir: Path | Sequence[Path], other: pd.DataFrame,
                    other_dir: Path | Sequence[Path], n_boot: int = 10_000) -> pd.DataFrame:
    """Each arm of a study (and its no-KD baselines) against **the same arm of another study** of the
    same design under another budget (``--min-epochs``, more epochs, another precision): the paired
    effect of the budget change itself on test translated accuracy, unit by unit (the same teacher
    seed and student seed in both, hence the same teacher snapshot and data) and image by image,
    Holm-adjusted across arms, with each side's mean epochs and translated accuracy. An arm the
    other study lacks, or without per-image results, keeps its means only."""
    from study.analysis.studies import Predictions

    def completed(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["state"] == "completed"] if "state" in frame else frame

    here, there = completed(table), completed(other)
    mine, theirs = Predictions(study_dir, "test"), Predictions(other_dir, "test")

    def arms_of(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        out = {"no KD": baseline_of(frame, None).assign(teacher_seed=None)}
        if "arm" in frame:
            out.update({str(arm): rows for arm, rows in frame[frame["arm"].notna()].groupby("arm", sort=False)})
        return {name: rows for name, rows in out.items() if not rows.empty}

    rows = []
    others = arms_of(there)
    for name, trials in arms_of(here).items():
        row: dict[str, Any] = {"arm": name}
        for side, frame in (("", trials), ("other_", others.get(name))):
            if frame is not None:
                means = arm_means(frame)
                row.update({side + c: means[c] for c in ("epochs_done", "test_clean_acc", "test_translated_acc")
                            if c in means})
        if name in others:
            row.update(_effect_columns(mine, trials, theirs, others[name], n_boot))
        rows.append(row)
    return _with_holm(pd.DataFrame(rows))


def _effect_columns(predictions: Any, trials: pd.DataFrame, reference_predictions: Any, reference: pd.DataFrame,
                    n_boot: int) -> dict[str, Any]:
    """The paired effect of ``trials`` against ``reference`` on test translated accuracy as table columns
    (effect, ci_low, ci_high, p, n); empty without per-image results or a reference of the same units."""
    from study.analysis.studies import Skip
    from study.analysis.stats import paired_effect

    try:
        (arm_a, _), (arm_b, _) = predictions.arm(trials), reference_predictions.arm(reference)
        effect = paired_effect(arm_a, arm_b, metric="translated", n_boot=n_boot)
    except (Skip, ValueError):
        return {}
    return {"effect": effect.estimate, "ci_low": effect.ci_low, "ci_high": effect.ci_high, "p": effect.p_value,
            "n": effect.n}


def _with_holm(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``p_holm``: Holm's correction over the rows that were tested (those with a ``p``)."""
    from study.analysis.stats import holm

    if "p" in frame:
        tested = frame["p"].notna()
        frame.loc[tested, "p_holm"] = holm(frame.loc[tested, "p"].tolist())
    return frame


def against_markdown(frame: pd.DataFrame, this: str = "this study", other: str = "the other") -> str:
    """:func:`against_effects` as a markdown table."""
    from study.analysis.stats import format_p

    lines = [f"| arm | epochs ({this}) | epochs ({other}) | translated ({this}) | translated ({other}) | "
             f"{this} - {other} [95% CI] | Holm p | n |", "|---|---:|---:|---:|---:|---|---|---|"]
    for r in frame.to_dict("records"):
        effect = (f"{r['effect']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
                  if pd.notna(r.get("effect", float("nan"))) else "-")
        lines.append(f"| {r['arm']} | {_number(r.get('epochs_done'), '.1f')} | {_number(r.get('other_epochs_done'), '.1f')} "
                     f"| {_number(r.get('test_translated_acc'))} | {_number(r.get('other_test_translated_acc'))} "
                     f"| {effect} | {format_p(r['p_holm']) if pd.notna(r.get('p_holm', float('nan'))) else '-'} "
                     f"| {r['n'] if isinstance(r.get('n'), str) else '-'} |")
    return "\n".join(lines) + "\n"


def _number(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if pd.notna(value) else ""


def arms_markdown(frame: pd.DataFrame, versus: str = "no KD") -> str:
    """The arms table as Markdown: means over seeds (± the std across teacher seeds), then the
    effect [95% CI] and Holm p against the same student's no-KD baseline (or the arm ``versus``)."""
    from study.analysis.stats import format_p

    header = ("| arm | student | teacher clean / translated | trials | epochs | val translated | test clean "
              "| test translated | small shift | translated / clean | student-seed std "
              f"| vs {versus} [95% CI] | Holm p | transfer, translated [95% CI] | transfer, small shift [95% CI] |")
    lines = [header, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|"]
    for r in frame.to_dict("records"):
        effect = (f"{r['effect']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
                  if pd.notna(r.get("effect", float("nan"))) else ("reference" if r.get("reference") else "n/a"))
        p = format_p(r["p_holm"]) if pd.notna(r.get("p_holm", float("nan"))) else ""
        name = f"**{r['arm']}** (chosen on val)" if r.get("chosen") else r["arm"]
        translated = _number(r.get("test_translated_acc", float("nan")))
        if pd.notna(r.get("teacher_seed_std", float("nan"))):
            translated += f" ± {r['teacher_seed_std']:.4f}"
        if pd.notna(r.get("teacher_test_clean_acc", float("nan"))):  # on the students' own test images
            teacher = f"{r['teacher_test_clean_acc']:.3f} / {r['teacher_test_translated_acc']:.3f}"
        elif pd.notna(r.get("teacher_clean_acc", float("nan"))):  # the bank's scoring images (older studies)
            teacher = f"{r['teacher_clean_acc']:.3f} / {r['teacher_translated_acc']:.3f}*"
        else:
            teacher = ""
        transfer = [f"{r[f'transfer_{m}']:.3f} [{r[f'transfer_{m}_low']:.3f}, {r[f'transfer_{m}_high']:.3f}]"
                    if pd.notna(r.get(f"transfer_{m}", float("nan"))) else "" for m in ("translated", "small_shift")]
        lines.append(f"| {name} | {r.get('student')} | {teacher} | {r.get('trials', '')} "
                     f"| {_number(r.get('epochs_done', float('nan')), '.1f')} "
                     f"| {_number(r.get('val_translated_acc', float('nan')))} "
                     f"| {_number(r.get('test_clean_acc', float('nan')))} | {translated} "
                     f"| {_number(r.get('test_small_shift_acc', float('nan')))} "
                     f"| {_number(r.get('test_translated_over_clean', float('nan')))} "
                     f"| {_number(r.get('student_seed_std', float('nan')))} | {effect} | {p} "
                     f"| {transfer[0]} | {transfer[1]} |")
    lines.append("")
    lines.append("Teacher: the mean over the arm's teacher seeds of its snapshot's accuracy on the students' test "
                 "images, by the same evaluator (* where a study kept no teacher evaluations: the bank's "
                 "scoring images). Transfer: (student - no KD) / (teacher - no KD), 0 = no KD's robustness, "
                 "1 = the teacher's, with a 95% paired bootstrap interval over seeds and images. "
                 "± is the std across teacher seeds of each teacher seed's mean; the student-seed std is "
                 "averaged within teacher seeds; epochs and the metrics are means over the arm's trials; Holm's "
                 "correction is over the arms of this table.")
    return "\n".join(lines) + "\n"


def config_means(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per configuration of a study without named arms (a finding's space): the trials
    grouped by the searched parameters ``keys`` (seeds aside), with :func:`arm_means` and each
    teacher seed's mean test translated accuracy (``by_teacher_seed``), so that a result file
    shows where an effect comes from (one teacher, or all of them). A (configuration, teacher
    seed, student seed) that pooled studies both trained counts once, as in the paired analysis.
    The no-KD students are one row whatever their (absent) teacher parameters."""
    done = table[table.get("state", pd.Series("completed", index=table.index)) == "completed"]
    keys = [k for k in keys if k in done]
    if done.empty or not keys:
        return pd.DataFrame()
    done = done.copy()
    no_kd = done.get("variant", pd.Series("", index=done.index)) == "no_kd"
    label = pd.Series("no KD", index=done.index, dtype=object)
    label[~no_kd] = done.loc[~no_kd, keys].apply(
        lambda r: ", ".join(f"{k}={_short_value(r[k])}" for k in keys if pd.notna(r[k])), axis=1)
    done["config"] = label
    units = [c for c in ("config", "teacher_seed", "seed") if c in done]
    done = done.drop_duplicates(subset=units)
    rows = []
    for config, trials in done.groupby("config", sort=False):
        row = {"config": config, **{k: trials[k].iloc[0] for k in keys}, **arm_means(trials)}
        if "teacher_seed" in trials and trials["teacher_seed"].notna().any():
            row["by_teacher_seed"] = {int(s): float(m) for s, m in
                                      trials.groupby("teacher_seed")["test_translated_acc"].mean().items()}
        rows.append(row)
    frame = pd.DataFrame(rows)
    kd = frame["config"] != "no KD"  # no KD first, then the configurations by their values (250 before 1000)
    return pd.concat([frame[~kd], frame[kd].sort_values(keys)], ignore_index=True).drop(columns=keys)


def _short_value(value: Any) -> str:
    """A parameter value as a label: ``250`` not ``250.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def config_means_markdown(frame: pd.DataFrame) -> str:
    """:func:`config_means` as Markdown."""
    lines = ["| configuration | runs | epochs | test clean | test translated | by teacher seed | small shift "
             "| translated / clean | student-seed std |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in frame.to_dict("records"):
        translated = _number(r.get("test_translated_acc", float("nan")))
        if pd.notna(r.get("teacher_seed_std", float("nan"))):
            translated += f" ± {r['teacher_seed_std']:.4f}"
        seeds = r.get("by_teacher_seed")
        by_seed = " · ".join(f"{s}: {m:.4f}" for s, m in seeds.items()) if isinstance(seeds, dict) else ""
        lines.append(f"| {r['config']} | {r['trials']} | {_number(r.get('epochs_done', float('nan')), '.1f')} "
                     f"| {_number(r.get('test_clean_acc', float('nan')))} | {translated} | {by_seed} "
                     f"| {_number(r.get('test_small_shift_acc', float('nan')))} "
                     f"| {_number(r.get('test_translated_over_clean', float('nan')))} "
                     f"| {_number(r.get('student_seed_std', float('nan')))} |")
    lines.append("")
    lines.append("Means over the configuration's runs (each run weighs the same); by teacher seed: the mean test "
                 "translated accuracy of each teacher seed's students; ± is the std across teacher seeds of those "
                 "means; the student-seed std is averaged within teacher seeds. Descriptive: effects with their "
                 "intervals come from the paired analysis (scripts/reproduce.py).")
    return "\n".join(lines) + "\n"


def study_section(table: pd.DataFrame, study_dir: Path | Sequence[Path], n_boot: int = 10_000,
                  versus: str | None = None) -> tuple[str, str] | None:
    """A study's table for a result file or the terminal, with its kind: ``("Arms", ...)`` for a
    study with named arms (:func:`arm_effects`, against no KD or the arm ``versus``), else
    ``("Configurations", ...)`` (:func:`config_means` over the searched parameters, seeds aside;
    not when ``versus`` names an arm); None when there is neither."""
    from study.analysis.studies import searched_parameters

    frame = arm_effects(table, study_dir, n_boot, versus)
    if not frame.empty:
        return "Arms", arms_markdown(frame, versus or "no KD")
    if versus is None:
        means = config_means(table, searched_parameters(study_dir))
        if not means.empty:
            return "Configurations", config_means_markdown(means)
    return None
