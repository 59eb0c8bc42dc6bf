"""Paired effects between two arms of a study, with a hierarchical bootstrap over seeds and images.

Why not "gap of means > larger std of 3 seeds": that rule has a false-positive rate near one in ten,
ignores that all runs are scored on the *same* test images, and has no correction for testing many
findings at once. Here an effect is the difference of an accuracy metric between arm A and arm B
(A minus B), and its uncertainty comes from resampling every source of variation the design has:

1. **teacher seeds** (with replacement),
2. **student seeds within each drawn teacher seed** (with replacement),
3. **test images**: images are *crossed* with seeds (every run is scored on the same images), so one
   image resample is drawn per replicate and applied to every unit of both arms.

A *unit* is one trained student, keyed ``(teacher_seed, student_seed)``. Units of the two arms are
paired where the design pairs them: the same key in both arms; an arm without a teacher (the no-KD
baseline, ``teacher_seed=None``) pairs with the other arm by student seed only, so the baseline
student of seed ``s`` is the partner of every KD student of seed ``s``. Units without a partner are
left out (the counts in :class:`Effect` say what was used).

Calibration, measured on simulated studies (200 per design, ``n_boot`` 400; ``tests/test_stats.py``
pins the balanced case): coverage of the 95% interval is 0.955-0.975 when seed-to-seed and per-run
image noise are of similar size (3 teacher x 3 student seeds, 200 images); 0.995 (conservative)
when per-run image noise dominates, because the student-by-image interaction enters through both
the seed and the image resampling (as in Owen's "pigeonhole" bootstrap for crossed designs); 0.90
(too narrow) with 3 x 3 seeds when seed variation dominates, since a level with ``k`` units
contributes ``(k-1)/k`` of the usual variance; 0.97 for the same with 8 x 4 seeds. With a single
teacher seed the teacher's own variation is not measured at all: conclusions hold for that teacher. Per-image robustness scores come from
:mod:`study.train.predictions` (``PerImage.scores``).

Speed: for ``n_boot * n_images <= EXACT_LIMIT`` the image level is resampled exactly (multinomial
counts built from index matrices, in chunks of replicates, no Python loop per replicate). Above that
(10,000 replicates x 10,000 images would need 10^8 random draws, seconds on a small machine) it is
replaced by its Gaussian limit: the vector of per-unit image means under a multinomial resample has
exactly the mean and covariance used here (``mean`` and ``cov / n_images``), and with thousands of
images the remaining (skewness) difference is negligible. ``images="exact"`` forces exact resampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal, Mapping, Sequence

import numpy as np

Unit = tuple[int | None, int]
"""A trained student: ``(teacher_seed, student_seed)``; ``teacher_seed`` is ``None`` without a teacher."""

METRICS = ("translated", "small_shift", "clean", "translated_over_clean")
RATIO_METRICS = {"translated_over_clean": ("translated", "clean")}
EXACT_LIMIT = 10_000_000
_CHUNK_ELEMENTS = 2_000_000  # replicates x images per chunk of exact resampling (16 MB of counts)


@dataclass(frozen=True)
class Effect:
    """A paired difference ``metric(A) - metric(B)`` with its bootstrap uncertainty.

    ``p_value`` is two-sided and the inversion of the percentile interval: twice the smaller of the
    fractions of replicates at or below zero and at or above zero, capped at 1 and floored at
    ``1/n_boot`` (the resolution of ``n_boot`` replicates; a p-value of 0 would claim more than the
    bootstrap can show). A ``(1 - a)`` percentile interval excludes 0 exactly when ``p_value < a``
    (up to quantile interpolation), so a p-value and its interval never disagree on a verdict.

    ``mde`` is the minimum detectable effect: the true difference that a two-sided test at
    ``alpha = 0.05`` detects with 80% power when the estimate is normal with standard error ``se``,
    ``(z_0.975 + z_0.80) * se`` (about ``2.80 * se``). It is for the unadjusted level; after a Holm
    correction over several cells the detectable effect is larger.
    """

    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    se: float
    mde: float
    mean_a: float
    mean_b: float
    n_teacher_seeds: int
    n_student_seeds: int
    n_units: int
    n_images: int
    n_boot: int
    confidence: float = 0.95

    def format(self, adjusted_p: float | None = None, digits: int = 3) -> str:
        """``+0.031 [+0.022, +0.040], p_holm < 0.001`` (``p = ...`` when no adjusted p is given)."""
        label, p = ("p_holm", adjusted_p) if adjusted_p is not None else ("p", self.p_value)
        return (f"{self.estimate:+.{digits}f} [{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}], "
                f"{label} {format_p(p)}")

    @property
    def n(self) -> str:
        """``teacher seeds x student seeds x images``, plus the number of paired runs when the
        design is not a full grid (studies pooled with other student seeds per teacher seed):
        ``3x3x10000 (5 runs)``."""
        text = f"{self.n_teacher_seeds}x{self.n_student_seeds}x{self.n_images}"
        grid = max(self.n_teacher_seeds, 1) * self.n_student_seeds
        return text if self.n_units == grid else f"{text} ({self.n_units} runs)"


def format_p(p: float) -> str:
    """``< 0.001`` or ``= 0.023``."""
    if math.isnan(p):
        return "= nan"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def minimum_detectable_effect(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """``(z_{1-alpha/2} + z_power) * se``: the effect a two-sided level-``alpha`` test finds with ``power``."""
    z = NormalDist().inv_cdf
    return (z(1 - alpha / 2) + z(power)) * se


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Sorted ascending, the ``i``-th (0-based) of ``m`` p-values is multiplied by ``m - i``; a running
    maximum keeps the adjusted values monotone in the raw ones, and they are capped at 1. Rejecting
    where the adjusted p is below ``alpha`` controls the family-wise error rate at ``alpha``. NaNs
    (cells that could not be computed) are not counted in ``m`` and stay NaN.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


Verdict = Literal["reproduced", "contradicted", "inconclusive"]


def verdict(effect: Effect, adjusted_p: float, direction: int, alpha: float = 0.05) -> Verdict:
    """``reproduced`` when the corrected test rejects 0 and the estimate has the claimed sign
    (``direction`` +1: A > B, -1: A < B); ``contradicted`` when it rejects 0 with the other sign;
    else ``inconclusive`` (read it with ``effect.mde``: effects below it could not be seen).

    Because ``p_value`` inverts the percentile interval, "adjusted p < alpha" is "the interval at
    the Holm-corrected level excludes 0".
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    if math.isnan(adjusted_p) or adjusted_p >= alpha or effect.estimate == 0:
        return "inconclusive"
    return "reproduced" if math.copysign(1, effect.estimate) == direction else "contradicted"


def metric_scores(per_image, metric: str) -> np.ndarray:
    """Per-image scores of one :class:`study.train.predictions.PerImage` as ``[components, images]``:
    one row for a plain metric, (numerator, denominator) rows for a ratio metric."""
    parts = RATIO_METRICS.get(metric, (metric,))
    return np.stack([np.asarray(per_image.scores(part), dtype=float) for part in parts])


def paired_effect(arm_a: Mapping[Unit, object], arm_b: Mapping[Unit, object], metric: str = "translated",
                  **kwargs) -> Effect:
    """The effect of ``metric`` between two arms of :class:`study.train.predictions.PerImage` results
    (one per unit, all on the same images); keyword arguments go to :func:`bootstrap_difference`."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    indices = [np.asarray(r.indices) for r in (*arm_a.values(), *arm_b.values())]
    if any(not np.array_equal(indices[0], other) for other in indices[1:]):
        raise ValueError("the arms' units were not all evaluated on the same images")
    return bootstrap_difference({u: metric_scores(r, metric) for u, r in arm_a.items()},
                                {u: metric_scores(r, metric) for u, r in arm_b.items()}, metric=metric, **kwargs)


def pair_units(keys_a: Sequence[Unit], keys_b: Sequence[Unit]) -> list[tuple[Unit, Unit]]:
    """Pairs ``(unit of A, unit of B)`` the design matches: equal keys, or equal student seeds when
    one arm has no teacher. Sorted by (teacher seed, student seed) of the arm that has teachers."""
    def no_teacher(keys: Sequence[Unit]) -> bool:
        kinds = {k[0] is None for k in keys}
        if len(kinds) > 1:
            raise ValueError("an arm mixes units with and without a teacher seed")
        return kinds == {True}

    if not keys_a or not keys_b:
        raise ValueError("an arm has no units")
    none_a, none_b = no_teacher(keys_a), no_teacher(keys_b)
    if none_a == none_b:
        pairs = [(k, k) for k in sorted(set(keys_a) & set(keys_b), key=_order)]
    elif none_b:
        b_by_seed = {k[1]: k for k in keys_b}
        pairs = [(k, b_by_seed[k[1]]) for k in sorted(keys_a, key=_order) if k[1] in b_by_seed]
    else:
        a_by_seed = {k[1]: k for k in keys_a}
        pairs = [(a_by_seed[k[1]], k) for k in sorted(keys_b, key=_order) if k[1] in a_by_seed]
    if not pairs:
        raise ValueError(f"no paired units between {sorted(keys_a, key=str)} and {sorted(keys_b, key=str)}")
    return pairs


def bootstrap_difference(arm_a: Mapping[Unit, np.ndarray], arm_b: Mapping[Unit, np.ndarray], *,
                         metric: str = "translated", n_boot: int = 10_000, seed: int = 0,
                         confidence: float = 0.95, images: Literal["auto", "exact", "normal"] = "auto") -> Effect:
    """Hierarchical paired bootstrap of ``metric(A) - metric(B)`` from per-image scores.

    ``arm_a[unit]`` is ``[images]`` (or ``[components, images]``; with two components the arm's
    metric is the ratio of the component means, computed inside every replicate, as for
    ``translated_over_clean``). All arrays cover the same images in the same order. The arm metric
    is the mean over the arm's units of each unit's mean over images.
    """
    pairs = pair_units(list(arm_a), list(arm_b))
    a = np.stack([np.atleast_2d(np.asarray(arm_a[ua], dtype=float)) for ua, _ in pairs])  # [U, C, N]
    b = np.stack([np.atleast_2d(np.asarray(arm_b[ub], dtype=float)) for _, ub in pairs])
    if a.shape != b.shape:
        raise ValueError(f"arm shapes differ: {a.shape} vs {b.shape}")
    n_units, n_comp, n_images = a.shape
    if n_comp not in (1, 2):
        raise ValueError("scores need one component (a mean) or two (a ratio of means)")
    # the unit hierarchy comes from the arm with teachers (A's keys are B's when both have them)
    hier = [ua if ua[0] is not None else ub for ua, ub in pairs]
    teacher_of = np.array([_teacher_code(h[0]) for h in hier])

    columns = np.concatenate([a, b], axis=0).reshape(2 * n_units * n_comp, n_images).T  # [N, K]
    rng = np.random.default_rng(seed)
    mode = images if images != "auto" else ("exact" if n_boot * n_images <= EXACT_LIMIT else "normal")
    image_means = _image_means(columns, n_boot, rng, mode).reshape(n_boot, 2, n_units, n_comp)
    weights = _unit_weights(teacher_of, n_boot, rng)  # [B, U]

    def arm_metric(means: np.ndarray, w: np.ndarray) -> np.ndarray:  # means [..., U, C], w [..., U]
        pooled = np.einsum("...u,...uc->...c", w, means)
        return pooled[..., 0] / pooled[..., 1] if n_comp == 2 else pooled[..., 0] / w.sum(-1)

    replicates = arm_metric(image_means[:, 0], weights) - arm_metric(image_means[:, 1], weights)
    full = columns.mean(axis=0).reshape(2, n_units, n_comp)
    ones = np.ones(n_units)
    mean_a, mean_b = float(arm_metric(full[0], ones)), float(arm_metric(full[1], ones))
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    se = float(replicates.std(ddof=1)) if n_boot > 1 else float("nan")
    p = min(1.0, 2 * float(min(np.mean(replicates <= 0), np.mean(replicates >= 0))))
    return Effect(metric=metric, estimate=mean_a - mean_b, ci_low=float(low), ci_high=float(high),
                  p_value=max(p, 1 / n_boot), se=se, mde=minimum_detectable_effect(se), mean_a=mean_a,
                  mean_b=mean_b, n_teacher_seeds=len({h[0] for h in hier if h[0] is not None}),
                  n_student_seeds=len({h[1] for h in hier}), n_units=n_units, n_images=n_images, n_boot=n_boot,
                  confidence=confidence)


def _teacher_code(teacher_seed: int | None) -> int:
    return -1 if teacher_seed is None else int(teacher_seed)


def _order(unit: Unit) -> tuple[int, int]:
    return _teacher_code(unit[0]), unit[1]


def _image_means(columns: np.ndarray, n_boot: int, rng: np.random.Generator, mode: str) -> np.ndarray:
    """``[n_boot, K]``: each column's mean over one image resample per replicate (shared by all columns)."""
    n_images, k = columns.shape
    if mode == "normal":
        mean = columns.mean(axis=0)
        cov = np.atleast_2d(np.cov(columns, rowvar=False, bias=True)) / n_images
        values, vectors = np.linalg.eigh(cov)
        root = vectors * np.sqrt(np.clip(values, 0, None))  # cov = root @ root.T, also when singular
        return mean + rng.standard_normal((n_boot, k)) @ root.T
    if mode != "exact":
        raise ValueError(f"images must be 'auto', 'exact' or 'normal', got {mode!r}")
    out = np.empty((n_boot, k))
    chunk = max(1, _CHUNK_ELEMENTS // n_images)
    for start in range(0, n_boot, chunk):  # a loop over chunks of replicates, not over replicates
        size = min(chunk, n_boot - start)
        draws = rng.integers(0, n_images, size=(size, n_images))
        draws += np.arange(size)[:, None] * n_images
        counts = np.bincount(draws.ravel(), minlength=size * n_images).reshape(size, n_images)
        out[start:start + size] = counts @ columns / n_images
    return out


def _unit_weights(teacher_of: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, U]``: how often each unit is drawn when teacher seeds are resampled, then student
    seeds within each drawn teacher seed (unequal numbers of student seeds per teacher are fine)."""
    n_units = len(teacher_of)
    teachers = np.unique(teacher_of)
    order = np.argsort(teacher_of, kind="stable")  # units grouped by teacher
    sizes = np.bincount(np.searchsorted(teachers, teacher_of), minlength=len(teachers))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    drawn = rng.integers(0, len(teachers), size=(n_boot, len(teachers)))  # teacher slots
    n_drawn = sizes[drawn]  # [B, T] students to draw in each slot
    uniform = rng.random((n_boot, len(teachers), sizes.max()))
    within = np.floor(uniform * n_drawn[..., None]).astype(np.int64)
    slot_units = order[starts[drawn][..., None] + np.minimum(within, n_drawn[..., None] - 1)]
    keep = np.arange(sizes.max()) < n_drawn[..., None]
    rows = np.broadcast_to(np.arange(n_boot)[:, None, None], slot_units.shape)
    flat = (rows * n_units + slot_units)[keep]
    return np.bincount(flat, minlength=n_boot * n_units).reshape(n_boot, n_units).astype(float)
