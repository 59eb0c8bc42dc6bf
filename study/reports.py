"""Study results as a pandas table, plotly HTML reports and a printed summary.

Optuna's own plotly visualizations are used where they exist (optimization
history, parallel coordinates, parameter importances, Pareto front); the two
study-specific figures (robustness vs teacher snapshot step, accuracy vs shift
of the best trials against the no-KD baseline) are plotly express on the table.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def kd_columns() -> list[str]:
    """Report columns of the KD terms, from their registry: each term's scale, then the
    hyperparameters (``s_kl``, ``s_fm``, ``s_dkd``, ..., ``temperature``, ``dkd_beta``, ...)."""
    from losses import all_hyperparams, kd_terms, scale_key

    return [scale_key(n) for n in kd_terms()] + list(all_hyperparams())


SHIFT_COLUMN = re.compile(r"^(val|test)_acc_shift/dx_(-?\d+)_dy_(-?\d+)$")


def trials_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per trial: state, config, variant/teachers, final metrics (validation and test)."""
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    first = ["trial_id", "state", "baseline", "variant", "student", "teachers", "teacher_step", "alpha", *kd_columns(),
             "seed", "epochs_done", "val_clean_acc", "val_translated_acc", "test_clean_acc",
             "test_translated_acc"]
    ordered = [c for c in first if c in table.columns] + [c for c in table.columns if c not in first]
    return table[ordered]


def write_table(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    csv, parquet = out_dir / "trials.csv", out_dir / "trials.parquet"
    table.to_csv(csv, index=False)
    table.astype({c: "string" for c in table.columns if table[c].dtype == object}).to_parquet(parquet, index=False)
    return [csv, parquet]


def best_trials(table: pd.DataFrame, metric: str = "val_translated_acc", k: int = 3) -> pd.DataFrame:
    """The top ``k`` completed, non-baseline trials by the validation objective."""
    if table.empty or metric not in table:
        return table.head(0)
    done = table[(table["state"] == "completed") & (~table["baseline"].astype(bool))]
    return done.sort_values(metric, ascending=False).head(k)


def baseline_rows(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    return table[table["baseline"].astype(bool) & (table["state"] == "completed")]


def shift_curve(row: pd.Series, split: str = "test") -> pd.DataFrame:
    """Accuracy vs shift magnitude (mean over the 8 directions) from a row's per-shift columns."""
    points = []
    for column, value in row.items():
        match = SHIFT_COLUMN.match(str(column))
        if match and match.group(1) == split and pd.notna(value):
            dx, dy = int(match.group(2)), int(match.group(3))
            points.append({"shift_px": max(abs(dx), abs(dy)), "accuracy": float(value)})
    if not points:
        return pd.DataFrame(columns=["shift_px", "accuracy"])
    return pd.DataFrame(points).groupby("shift_px", as_index=False)["accuracy"].mean()


def figure_shift_curves(table: pd.DataFrame) -> go.Figure:
    curves = []
    for label, rows in (("no KD (baseline)", baseline_rows(table)), ("best", best_trials(table))):
        for _, row in rows.iterrows():
            curve = shift_curve(row)
            name = label if label.startswith("no KD") else f"{row['variant']} {row['teachers']} ({row['trial_id']})"
            curves.append(curve.assign(trial=f"{name} seed {row.get('seed', '')}"))
    data = pd.concat(curves) if curves else pd.DataFrame(columns=["shift_px", "accuracy", "trial"])
    fig = px.line(data, x="shift_px", y="accuracy", color="trial", markers=True,
                  title="Test accuracy vs translation (mean over 8 directions): best trials vs no KD")
    fig.update_layout(xaxis_title="shift (pixels)", yaxis_title="test accuracy", yaxis_range=[0, 1])
    return fig


def figure_vs_teacher_step(table: pd.DataFrame) -> go.Figure:
    data = table[(table.get("state") == "completed") & table["teacher_step"].notna()] if not table.empty else table
    if not data.empty:
        data = data.assign(teacher_step=pd.to_numeric(data["teacher_step"], errors="coerce")).dropna(
            subset=["teacher_step"])
    fig = px.scatter(data, x="teacher_step", y="val_translated_acc", color="variant" if not data.empty else None,
                     symbol="teachers" if not data.empty else None, log_x=True,
                     hover_data=[c for c in ("trial_id", "alpha", *kd_columns()) if c in data],
                     title="Validation translated accuracy vs teacher snapshot step")
    for _, row in baseline_rows(table).iterrows():
        fig.add_hline(y=row["val_translated_acc"], line_dash="dot", annotation_text="no KD")
    fig.update_layout(xaxis_title="teacher snapshot step (iterations)", yaxis_title="val translated accuracy")
    return fig


def optuna_figures(study: Any, multi_objective: bool) -> dict[str, go.Figure]:
    """Optuna's own plotly figures; importances need at least two finished trials with varied params."""
    import optuna.visualization as vis
    from optuna.trial import TrialState

    figures: dict[str, go.Figure] = {}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return figures
    target = (lambda t: t.values[1]) if multi_objective else None
    name = "val_translated_acc"
    if multi_objective:
        figures["pareto_front"] = vis.plot_pareto_front(study, target_names=["val_clean_acc", name])
    figures["optimization_history"] = vis.plot_optimization_history(study, target=target, target_name=name)
    figures["parallel_coordinates"] = vis.plot_parallel_coordinate(study, target=target, target_name=name)
    try:
        figures["param_importances"] = vis.plot_param_importances(study, target=target, target_name=name)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:  # too few trials / no variation yet
        figures["param_importances"] = go.Figure().update_layout(title=f"parameter importances unavailable: {error}")
    return figures


def write_figures(figures: dict[str, go.Figure], out_dir: Path) -> list[Path]:
    """Self-contained HTML (plotly.js inlined), so reports open offline and inside the MLflow UI."""
    paths = []
    for name, fig in figures.items():
        path = out_dir / f"{name}.html"
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        paths.append(path)
    return paths


#: Robustness metrics of the summary's paired gain (see study/evaluation.py for their definitions).
GAIN_METRICS = ("translated", "small_shift", "translated_over_clean")


def baseline_of(table: pd.DataFrame, student: Any) -> pd.DataFrame:
    """The no-KD baseline rows of ``student`` (all baselines when the table has no student column):
    a ViT's gain is measured against a ViT trained without KD, never against an MLP."""
    base = baseline_rows(table)
    if "student" not in base or student is None or pd.isna(student):
        return base
    return base[base["student"] == student]


def paired_gains(table: pd.DataFrame, study_dir: Path, n_boot: int = 10_000) -> dict[str, dict[str, Any]]:
    """Gain of the validation-best trial over the no-KD baseline of the same student seed, on test,
    paired image by image, with a 95% bootstrap CI (:mod:`study.stats`).

    One student per arm: the interval covers test-image noise, not seed-to-seed variation (the
    reproduction's grids measure that); an empty dict when the predictions are missing.
    """
    from .findings import Predictions, Skip
    from .stats import paired_effect

    best = best_trials(table, k=1)
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


#: Per-arm means of these trial columns (those present); ``epochs_done`` shows each arm converged
#: in about as many epochs as the no-KD students, the other metrics are :mod:`study.evaluation`'s.
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
    from .findings import as_dirs, study_plan
    from .teachers import SnapshotError, TeacherBank, TeacherSpec

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
    from .findings import Predictions, Skip
    from .stats import holm, paired_effect

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
        reference = versus_rows if versus is not None else baseline_of(done, row["student"]).assign(teacher_seed=None)
        try:
            (arm_a, _), (arm_b, _) = predictions.arm(trials), predictions.arm(reference)
            effect = paired_effect(arm_a, arm_b, metric="translated", n_boot=n_boot)
            row.update(effect=effect.estimate, ci_low=effect.ci_low, ci_high=effect.ci_high, p=effect.p_value,
                       n=effect.n)
        except (Skip, ValueError):
            pass  # no per-image results or no baseline of this student: means only
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "p" in frame:
        tested = frame["p"].notna()
        frame.loc[tested, "p_holm"] = holm(frame.loc[tested, "p"].tolist())
    arms = ~frame["reference"]
    frame["chosen"] = arms & (frame["val_translated_acc"] == frame.loc[arms, "val_translated_acc"].max())
    return frame


def _number(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if pd.notna(value) else ""


def arms_markdown(frame: pd.DataFrame, versus: str = "no KD") -> str:
    """The arms table as Markdown: means over seeds (± the std across teacher seeds), then the
    effect [95% CI] and Holm p against the same student's no-KD baseline (or the arm ``versus``)."""
    from .stats import format_p

    header = ("| arm | student | teacher clean / translated | trials | epochs | val translated | test clean "
              "| test translated | small shift | translated / clean | student-seed std "
              f"| vs {versus} [95% CI] | Holm p |")
    lines = [header, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in frame.to_dict("records"):
        effect = (f"{r['effect']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
                  if pd.notna(r.get("effect", float("nan"))) else ("reference" if r.get("reference") else "n/a"))
        p = format_p(r["p_holm"]) if pd.notna(r.get("p_holm", float("nan"))) else ""
        name = f"**{r['arm']}** (chosen on val)" if r.get("chosen") else r["arm"]
        translated = _number(r.get("test_translated_acc", float("nan")))
        if pd.notna(r.get("teacher_seed_std", float("nan"))):
            translated += f" ± {r['teacher_seed_std']:.4f}"
        teacher = (f"{r['teacher_clean_acc']:.3f} / {r['teacher_translated_acc']:.3f}"
                   if pd.notna(r.get("teacher_clean_acc", float("nan"))) else "")
        lines.append(f"| {name} | {r.get('student')} | {teacher} | {r.get('trials', '')} "
                     f"| {_number(r.get('epochs_done', float('nan')), '.1f')} "
                     f"| {_number(r.get('val_translated_acc', float('nan')))} "
                     f"| {_number(r.get('test_clean_acc', float('nan')))} | {translated} "
                     f"| {_number(r.get('test_small_shift_acc', float('nan')))} "
                     f"| {_number(r.get('test_translated_over_clean', float('nan')))} "
                     f"| {_number(r.get('student_seed_std', float('nan')))} | {effect} | {p} |")
    lines.append("")
    lines.append("Teacher: the mean over the arm's teacher seeds of its snapshot's accuracy in the bank's "
                 "manifest (scored on the bank's evaluation images when saved). "
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
    from .findings import searched_parameters

    frame = arm_effects(table, study_dir, n_boot, versus)
    if not frame.empty:
        return "Arms", arms_markdown(frame, versus or "no KD")
    if versus is None:
        means = config_means(table, searched_parameters(study_dir))
        if not means.empty:
            return "Configurations", config_means_markdown(means)
    return None


def summary(table: pd.DataFrame, study_dir: Path | None = None) -> dict[str, Any]:
    """Best configuration (by validation), its test numbers, and the gain over the no-KD baseline
    (with paired confidence intervals when ``study_dir/predictions`` holds the trials' per-image results)."""
    best = best_trials(table, k=1)
    base = baseline_of(table, best["student"].iloc[0] if not best.empty and "student" in best else None)
    out: dict[str, Any] = {"trials": int(len(table)),
                           "states": table["state"].value_counts().to_dict() if not table.empty else {}}
    if not best.empty:
        row = best.iloc[0]
        keep = ["trial_id", "variant", "student", "teachers", "teacher_step", "alpha", *kd_columns(), "teacher_weight",
                "seed", "val_clean_acc", "val_translated_acc", "test_clean_acc", "test_translated_acc"]
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
        gains = paired_gains(table, study_dir)
        if gains:
            out["paired_gain"] = gains
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
        lines.append(f"best (by validation translated accuracy): {config}")
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
    if "arms" in s:
        lines.append("arms (means over seeds; effect on test translated vs the same student's no-KD baseline, "
                     "paired over seeds and images):")
        lines.append(arms_markdown(pd.DataFrame(s["arms"])).rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m study.reports STUDY_DIR [STUDY_DIR ...] [--versus ARM]``: a finished study's arms
    table again (several directories: pooled studies of one design), against its no-KD baselines or
    against one of its arms; for a study without arms (a finding's), its configurations by teacher seed."""
    import argparse

    from .findings import Skip, load_trials

    p = argparse.ArgumentParser(prog="python -m study.reports", description=main.__doc__.split("\n")[0])
    p.add_argument("study_dir", type=Path, nargs="+",
                   help="studies/<study>: holds reports/trials.csv and predictions/ (several: pooled)")
    p.add_argument("--versus", default=None, help="compare every arm with this arm instead of no KD")
    p.add_argument("--n-boot", type=int, default=10_000)
    args = p.parse_args(argv)
    dirs = args.study_dir if len(args.study_dir) > 1 else args.study_dir[0]
    try:
        table = load_trials(dirs)
    except Skip as why:
        print(f"python -m study.reports: {why}", file=sys.stderr)
        return 2
    section = study_section(table, dirs, args.n_boot, args.versus)
    if section is None:
        print(f"{args.study_dir[0]}: no arms or configurations (or no completed trials)")
        return 1
    print(section[1], end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
