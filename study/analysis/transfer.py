"""The transfer ratio: how much of its teacher's robustness advantage a student carries.

    transfer = (student - no-KD student) / (teacher - no-KD student)

for a robustness metric (``translated``, ``small_shift``), all three scored by the same evaluator on
the same test images and shifts (the teacher by :meth:`study.teachers.bank.TeacherBank.evaluation`,
saved beside the study as ``predictions/teachers/*.npz``). 0 is no KD's robustness, 1 the
teacher's. An effect in accuracy points says whether KD helped; the ratio says how much of what
was there to carry got carried, which is what a KD scheme that "transfers the inductive bias"
should raise.

The interval is a paired, hierarchical bootstrap like :func:`study.analysis.stats.bootstrap_difference`:
teacher seeds, student seeds within them, and one image resample per replicate shared by the
student, its no-KD partner and its teacher, so the numerator and the denominator are resampled
*together* and their correlation is kept. A ratio is unstable where the teacher is barely better
than no KD; replicates whose denominator is not positive are dropped and counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np

from study.analysis.stats import EXACT_LIMIT, Unit, _image_means, _unit_weights, pair_units
from study.train.predictions import PerImage

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Metrics a transfer ratio is reported for (plain means over shifts; a ratio of ratios is not).
TRANSFER_METRICS = ("translated", "small_shift")


@dataclass(frozen=True)
class Transfer:
    """A transfer ratio with its bootstrap interval and the three means it is made of."""

    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    student: float
    baseline: float
    teacher: float
    n_units: int
    n_images: int
    n_boot: int
    #: bootstrap replicates left out because the teacher was not above no KD in them
    dropped: int = 0

    def format(self, digits: int = 3) -> str:
        """``0.123 [0.081, 0.166]``."""
        if math.isnan(self.estimate):
            return "n/a"
        return f"{self.estimate:.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"


def transfer_ratio(arm: Mapping[Unit, PerImage], baseline: Mapping[Unit, PerImage],
                   teachers: Mapping[int | None, PerImage], metric: str = "translated", *, n_boot: int = 10_000,
                   seed: int = 0, confidence: float = 0.95,
                   images: Literal["auto", "exact", "normal"] = "auto") -> Transfer:
    """The transfer ratio of ``arm``'s students (units ``(teacher_seed, student_seed)``) against the
    no-KD students of ``baseline`` (paired by student seed) and ``teachers`` (one per teacher seed)."""
    if metric not in TRANSFER_METRICS:
        raise ValueError(f"no transfer ratio for {metric!r}; valid: {', '.join(TRANSFER_METRICS)}")
    pairs = pair_units(list(arm), list(baseline))
    missing = sorted({ua[0] for ua, _ in pairs if ua[0] not in teachers}, key=str)
    if missing:
        raise ValueError(f"no teacher evaluation for teacher seed(s) {missing}")
    runs = [arm[ua] for ua, _ in pairs] + [baseline[ub] for _, ub in pairs] + [teachers[ua[0]] for ua, _ in pairs]
    if any(not np.array_equal(runs[0].indices, r.indices) for r in runs[1:]):
        raise ValueError("the student, its no-KD partner and its teacher were not evaluated on the same images")
    n_units = len(pairs)
    columns = np.stack([np.asarray(r.scores(metric), dtype=float) for r in runs], axis=1)  # [N, 3U]
    n_images = columns.shape[0]
    rng = np.random.default_rng(seed)
    mode = images if images != "auto" else ("exact" if n_boot * n_images <= EXACT_LIMIT else "normal")
    image_means = _image_means(columns, n_boot, rng, mode).reshape(n_boot, 3, n_units)
    weights = _unit_weights(np.array([-1 if ua[0] is None else int(ua[0]) for ua, _ in pairs]), n_boot, rng)
    means = np.einsum("bu,bku->bk", weights, image_means) / weights.sum(-1)[:, None]  # [B, 3]
    gap = means[:, 2] - means[:, 1]
    kept = gap > 0
    ratios = (means[kept, 0] - means[kept, 1]) / gap[kept]
    student, base, teacher = columns.mean(axis=0).reshape(3, n_units).mean(axis=1)
    estimate = point_ratio(float(student), float(base), float(teacher))
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail]) if len(ratios) else (float("nan"), float("nan"))
    return Transfer(metric=metric, estimate=float(estimate), ci_low=float(low), ci_high=float(high),
                    student=float(student), baseline=float(base), teacher=float(teacher), n_units=n_units,
                    n_images=n_images, n_boot=n_boot, dropped=int((~kept).sum()))


def arm_transfers(predictions: Any, rows: "pd.DataFrame", no_kd: "pd.DataFrame",
                  n_boot: int = 10_000) -> tuple[dict[int | None, PerImage], dict[str, Transfer]]:
    """The teachers of ``rows`` (an arm, or one trial, with one teacher snapshot) and its transfer ratios
    per metric against the no-KD runs ``no_kd``, from a study's :class:`~study.analysis.studies.Predictions`;
    ``({}, {})`` when the arm has no single teacher or the study kept no teacher evaluations."""
    from study.analysis.studies import Skip

    try:
        teachers = predictions.teachers(rows)
        (arm, _), (base, _) = predictions.arm(rows), predictions.arm(no_kd)
    except (Skip, ValueError):
        return {}, {}
    ratios = {}
    for metric in TRANSFER_METRICS:
        try:
            ratios[metric] = transfer_ratio(arm, base, teachers, metric, n_boot=n_boot)
        except ValueError:
            continue
    return teachers, ratios


def point_ratio(student: float, baseline: float, teacher: float) -> float:
    """``(student - baseline) / (teacher - baseline)``; NaN when the teacher is not above no KD."""
    return (student - baseline) / (teacher - baseline) if teacher > baseline else float("nan")


def trial_transfers(table: "pd.DataFrame", study_dir: Path | Sequence[Path]) -> "pd.DataFrame":
    """Per completed KD trial with one teacher: its teacher's test accuracies (same images) and its
    transfer ratios against the no-KD student of its own student and seed (point estimates: the
    intervals are the arms tables' and the summary's). Columns ``trial_id``, ``teacher_test_<m>_acc``,
    ``test_transfer_<m>``; empty when nothing qualifies."""
    import pandas as pd

    from study.analysis.studies import Predictions, Skip
    from study.analysis.tables import baseline_of

    done = table[(table.get("state") == "completed")] if "state" in table else table
    predictions = Predictions(study_dir, "test")
    rows = []
    for _, trial in done.iterrows():
        if trial.get("variant") == "no_kd" or not isinstance(trial.get("teachers"), str):
            continue
        base = baseline_of(done, trial.get("student"))
        base = base[base["seed"] == trial["seed"]] if "seed" in base else base
        try:
            teacher = next(iter(predictions.teachers(trial.to_frame().T).values()))
            student, no_kd = predictions(str(trial["trial_id"])), predictions(str(base["trial_id"].iloc[0]))
        except (Skip, StopIteration, IndexError, KeyError):
            continue
        if not (np.array_equal(student.indices, teacher.indices) and np.array_equal(student.indices, no_kd.indices)):
            continue
        row = {"trial_id": trial["trial_id"],
               **{f"teacher_test_{m}_acc": teacher.accuracy(m) for m in ("clean", *TRANSFER_METRICS)}}
        for m in TRANSFER_METRICS:
            row[f"test_transfer_{m}"] = point_ratio(student.accuracy(m), no_kd.accuracy(m), teacher.accuracy(m))
        rows.append(row)
    return pd.DataFrame(rows)
