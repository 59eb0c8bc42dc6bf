"""A study's trials as one pandas table (one row per trial, one column per parameter, metric and
shift), and the rows a report picks from it: the best trials by validation and the no-KD baselines."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def kd_columns() -> list[str]:
    """Report columns of the KD terms, from their registry: each term's scale, then the
    hyperparameters (``s_kl``, ``s_fm``, ``s_dkd``, ..., ``temperature``, ``dkd_beta``, ...)."""
    from losses import all_hyperparams, kd_terms, scale_key

    return [scale_key(n) for n in kd_terms()] + list(all_hyperparams())


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


def baseline_of(table: pd.DataFrame, student: Any) -> pd.DataFrame:
    """The no-KD baseline rows of ``student`` (all baselines when the table has no student column):
    a ViT's gain is measured against a ViT trained without KD, never against an MLP."""
    base = baseline_rows(table)
    if "student" not in base or student is None or pd.isna(student):
        return base
    return base[base["student"] == student]
