"""A study's plotly figures: Optuna's own where they exist (optimization history, parallel
coordinates, parameter importances, Pareto front), and two of the study's (robustness vs teacher
snapshot step, and accuracy vs shift of the best trials against the no-KD baseline), drawn with
plotly express on the trials table."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from study.analysis.tables import baseline_rows, best_trials, kd_columns
from study.train.predictions import PerImage

SHIFT_COLUMN = re.compile(r"^(val|test)_acc_shift/dx_(-?\d+)_dy_(-?\d+)$")


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


def per_image_curve(result: PerImage) -> pd.DataFrame:
    """Accuracy vs shift magnitude (mean over the 8 directions) of one per-image evaluation."""
    points = pd.DataFrame({"shift_px": [max(abs(dx), abs(dy)) for dx, dy in result.shifts],
                           "accuracy": result.correct.mean(axis=1)})
    return points.groupby("shift_px", as_index=False)["accuracy"].mean()


def figure_shift_curves(table: pd.DataFrame, teachers: Mapping[str, PerImage] | None = None,
                        metric: str = "val_translated_acc") -> go.Figure:
    """Test accuracy vs shift of the best trials, the no-KD baseline and (``teachers``: label ->
    per-image evaluation on the same test images) the teachers they learned from, so the gap a
    student closes between no KD and its teacher shows at a glance."""
    curves = []
    for label, rows in (("no KD (baseline)", baseline_rows(table)), ("best", best_trials(table, metric))):
        for _, row in rows.iterrows():
            curve = shift_curve(row)
            name = label if label.startswith("no KD") else f"{row['variant']} {row['teachers']} ({row['trial_id']})"
            curves.append(curve.assign(trial=f"{name} seed {row.get('seed', '')}"))
    for label, result in (teachers or {}).items():
        curves.append(per_image_curve(result).assign(trial=f"teacher {label}"))
    data = pd.concat(curves) if curves else pd.DataFrame(columns=["shift_px", "accuracy", "trial"])
    fig = px.line(data, x="shift_px", y="accuracy", color="trial", markers=True,
                  title="Test accuracy vs translation (mean over 8 directions): best trials, their teachers, no KD")
    fig.update_traces(line_dash="dash", selector=lambda trace: str(trace.name).startswith("teacher "))
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
