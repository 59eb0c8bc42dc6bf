"""Finished studies on disk, as the analysis reads them: a study's ``study.json`` (plan, times,
banks), its trials table, its per-image results, and pooling (studies of one design that differ
only in their seeds, analysed as one).

Nothing here judges: :mod:`study.analysis.findings` and :mod:`study.analysis.reports` do, from
what this module reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from study.analysis.stats import Unit
from study.train.predictions import PerImage, load_predictions


class Skip(Exception):
    """A cell cannot be computed from what the study directory holds (reported as a note)."""



#: Plan entries that must agree for studies to be pooled: the same design and budget, so that
#: pooling only adds seeds. (Entries a plan lacks, from older studies, are not compared; that the
#: test images are the same is checked per cell, by :func:`study.analysis.stats.paired_effect`.)
POOL_KEYS = ("space", "dataset", "train_subset", "max_epochs", "patience", "min_epochs", "teacher_steps",
             "teacher_snapshots_used", "fixed", "searched")
#: The design's seed axes: pooled studies may differ in these alone, whether a study searched them,
#: fixed them or left them at their defaults (a study of teacher seeds 1 and 2 pools with one of
#: teacher seed 0, which never named the key).
SEED_KEYS = ("seed", "teacher_seed")


def _design(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's :data:`POOL_KEYS`, with the seed axes taken out of ``fixed`` and ``searched``."""
    design = {k: plan[k] for k in POOL_KEYS if k in plan}
    if isinstance(design.get("fixed"), Mapping):
        design["fixed"] = {k: v for k, v in design["fixed"].items() if k not in SEED_KEYS}
    if isinstance(design.get("searched"), (list, tuple)):
        design["searched"] = sorted(k for k in design["searched"] if k not in SEED_KEYS)
    return design


def as_dirs(study_dirs: Path | str | Sequence[Path | str]) -> list[Path]:
    """One study directory, or several pooled ones, as a list of paths."""
    if isinstance(study_dirs, (str, Path)):
        return [Path(study_dirs)]
    return [Path(d) for d in study_dirs]


def study_state(study_dir: Path | str) -> dict[str, Any]:
    """A study's ``study.json`` (its plan, status, wall times, banks); raises ``OSError`` or
    ``ValueError`` when there is none or it cannot be read."""
    import json

    return json.loads((Path(study_dir) / "study.json").read_text())


def study_plan(study_dir: Path) -> dict[str, Any]:
    """The plan a study recorded in its ``study.json`` (empty when it has none)."""
    try:
        return study_state(study_dir).get("plan") or {}
    except (OSError, ValueError):
        return {}


def searched_parameters(study_dirs: Path | Sequence[Path]) -> list[str]:
    """The parameters a study searched (the first one's, when studies are pooled: they share the
    design), seeds aside: what tells its configurations apart."""
    return list(_design(study_plan(as_dirs(study_dirs)[0])).get("searched", []))


def check_poolable(study_dirs: Sequence[Path]) -> None:
    """Raise :class:`Skip` unless every study ran the same design and budget as the first
    (:data:`POOL_KEYS`): pooled studies may differ in their seeds only (student and teacher
    seeds, :data:`SEED_KEYS`)."""
    first, *others = [Path(d) for d in study_dirs]
    reference = _design(study_plan(first))
    for other in others:
        plan = _design(study_plan(other))
        differ = [k for k in POOL_KEYS if k in reference and k in plan and reference[k] != plan[k]]
        if differ:
            raise Skip(f"cannot pool {other.name} with {first.name}: they differ in "
                       + ", ".join(f"{k} ({plan[k]} vs {reference[k]})" for k in differ))


def load_trials(study_dirs: Path | Sequence[Path]) -> pd.DataFrame:
    """Completed trials of a study, or of several pooled studies (the same design run with other
    seeds: checked by :func:`check_poolable`), with the no-KD rows made uniform: ``variant``
    ``no_kd``, ``teachers`` ``none``, ``teacher_step`` NaN, ``teacher_seed`` None; KD rows without
    a ``teacher_seed`` (older studies) get 0, the seed every bank used before teacher seeds existed."""
    dirs = as_dirs(study_dirs)
    if len(dirs) > 1:
        check_poolable(dirs)
    tables = []
    for study_dir in dirs:
        path = study_dir / "reports" / "trials.csv"
        if not path.is_file():
            raise Skip(f"no trials table at {path}")
        tables.append(pd.read_csv(path))
    return normalise(pd.concat(tables, ignore_index=True))


def normalise(table: pd.DataFrame) -> pd.DataFrame:
    table = table[table["state"] == "completed"].copy()
    baseline = table["baseline"].astype(str).str.lower().isin(["true", "1", "1.0"]) if "baseline" in table \
        else pd.Series(False, index=table.index)
    no_kd = baseline | (table["variant"] == "no_kd")
    table["baseline"] = baseline
    table.loc[no_kd, "variant"] = "no_kd"
    if "teachers" in table:
        table["teachers"] = table["teachers"].astype(object)
        table.loc[no_kd, "teachers"] = "none"
    table["teacher_step"] = pd.to_numeric(table.get("teacher_step"), errors="coerce").astype(float)
    table.loc[no_kd, "teacher_step"] = np.nan
    seeds = pd.to_numeric(table["teacher_seed"], errors="coerce") if "teacher_seed" in table \
        else pd.Series(np.nan, index=table.index)
    table["teacher_seed"] = pd.Series([None if is_base else (0 if pd.isna(s) else int(s))
                                       for s, is_base in zip(seeds, no_kd)], index=table.index, dtype=object)
    table["seed"] = pd.to_numeric(table["seed"]).astype(int)
    return table


#: Where a study keeps its teachers' per-image test results, beside its trials' (``predictions/``).
TEACHER_PREDICTIONS = "teachers"


def teacher_predictions_name(arch: str, label_smoothing: float, seed: int, step: int) -> str:
    """``cnn_1-seed0-step2500.npz`` (``cnn_2-ls0.1-seed1-step250.npz``): one teacher snapshot's
    per-image test results, on the study's test images."""
    ls = f"-ls{label_smoothing:g}" if label_smoothing else ""
    return f"{arch}{ls}-seed{seed}-step{step}.npz"


class Predictions:
    """Test (or validation) per-image results of the trials of a study, or of pooled studies, read
    once each. Trial ids are unique across studies (random); one found in two pooled studies is
    refused rather than guessed."""

    def __init__(self, study_dirs: Path | Sequence[Path], split: str = "test"):
        self.folders = [d / "predictions" for d in as_dirs(study_dirs)]
        self.split, self._cache = split, {}

    def __call__(self, trial_id: str) -> PerImage:
        if trial_id not in self._cache:
            paths = [folder / f"{trial_id}.npz" for folder in self.folders if (folder / f"{trial_id}.npz").is_file()]
            if not paths:
                raise Skip(f"no per-image results for trial {trial_id} (in {', '.join(map(str, self.folders))})")
            if len(paths) > 1:
                raise Skip(f"trial {trial_id} is in two pooled studies: {paths[0]} and {paths[1]}")
            results = load_predictions(paths[0])
            if self.split not in results:
                raise Skip(f"{paths[0]} has no {self.split!r} split")
            self._cache[trial_id] = results[self.split]
        return self._cache[trial_id]

    def teachers(self, rows: pd.DataFrame) -> dict[int | None, PerImage]:
        """The per-image test results of the one teacher snapshot each teacher seed of ``rows`` (an
        arm with a single teacher and step) distilled from; :class:`Skip` when the arm has several
        teachers or steps, or a study did not keep its teachers' results."""
        arch = set(rows["teachers"].astype(str)) if "teachers" in rows else set()
        steps = set(rows["teacher_step"].dropna().astype(int)) if "teacher_step" in rows else set()
        if len(arch) != 1 or len(steps) != 1 or "+" in next(iter(arch)) or "none" in arch:
            raise Skip("a transfer ratio needs an arm with one teacher at one snapshot")
        smoothing = float(rows["teacher_label_smoothing"].fillna(0).iloc[0]) if "teacher_label_smoothing" in rows else 0.0
        out: dict[int | None, PerImage] = {}
        for seed in sorted(set(rows["teacher_seed"].dropna().astype(int))):
            name = teacher_predictions_name(next(iter(arch)), smoothing, seed, next(iter(steps)))
            paths = [f / TEACHER_PREDICTIONS / name for f in self.folders if (f / TEACHER_PREDICTIONS / name).is_file()]
            if not paths:
                raise Skip(f"no teacher evaluation {name} in {', '.join(map(str, self.folders))}")
            if paths[0] not in self._cache:  # read once: every KD trial of a snapshot asks for it
                self._cache[paths[0]] = load_predictions(paths[0])[self.split]
            out[seed] = self._cache[paths[0]]
        return out

    def arm(self, rows: pd.DataFrame) -> tuple[dict[Unit, PerImage], int]:
        """The arm's units and how many replicate trials were left out.

        Two trials of one configuration and one (teacher seed, student seed) are replicates of
        one unit (a grid that lists a configuration twice, or pooled studies that both trained
        it: the no-KD student of seed 0 in a teacher-seed-0 study and in a study of teacher seeds
        1 and 2): the first by trial id is kept, so a unit is never counted twice, and the count
        is reported with the cell.
        """
        arm: dict[Unit, PerImage] = {}
        dropped = 0
        for t, s, trial in sorted(zip(rows["teacher_seed"], rows["seed"], rows["trial_id"].astype(str)),
                                  key=lambda r: r[2]):
            unit = (None if t is None or pd.isna(t) else int(t), int(s))
            if unit in arm:
                dropped += 1
                continue
            arm[unit] = self(trial)
        return arm, dropped
