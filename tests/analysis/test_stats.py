"""study.analysis.stats: the hierarchical paired bootstrap, Holm's correction and the verdict rule, on data
with known answers (identical arms, planted effects, simulated designs with a known true effect)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from study.train.predictions import PerImage
from study.analysis.stats import (Effect, _unit_weights, bootstrap_difference, holm, minimum_detectable_effect,
                         paired_effect, pair_units, verdict)

SEEDS = [(t, s) for t in range(3) for s in range(3)]


def simulate(rng: np.random.Generator, n_teachers: int = 3, n_students: int = 3, n_images: int = 200,
             sd_teacher: float = 0.01, sd_student: float = 0.01, sd_image_arm: float = 0.05,
             sd_noise: float = 0.15, delta: float = 0.02) -> tuple[dict, dict]:
    """Two arms whose true (population) difference is ``delta``: a shared image difficulty, teacher
    and student seed effects per arm, an arm-by-image interaction and per-run image noise."""
    difficulty = rng.normal(0, 0.2, n_images)
    image_a, image_b = rng.normal(0, sd_image_arm, (2, n_images))
    a, b = {}, {}
    for t in range(n_teachers):
        teacher_a, teacher_b = rng.normal(0, sd_teacher, 2)
        for s in range(n_students):
            student_a, student_b = rng.normal(0, sd_student, 2)
            a[(t, s)] = 0.5 + delta + difficulty + teacher_a + student_a + image_a + rng.normal(0, sd_noise, n_images)
            b[(t, s)] = 0.5 + difficulty + teacher_b + student_b + image_b + rng.normal(0, sd_noise, n_images)
    return a, b


def test_identical_arms_give_zero_with_a_ci_around_it():
    a, _ = simulate(np.random.default_rng(0))
    effect = bootstrap_difference(a, dict(a), n_boot=2000)
    assert effect.estimate == 0 and effect.ci_low <= 0 <= effect.ci_high
    assert effect.p_value == 1.0
    assert verdict(effect, effect.p_value, +1) == "inconclusive"


def test_a_planted_effect_is_found_with_its_sign_and_size():
    rng = np.random.default_rng(1)
    a, b = simulate(rng, n_images=2000, delta=0.05)
    effect = bootstrap_difference(a, b, n_boot=4000, seed=3)
    assert effect.estimate == pytest.approx(0.05, abs=0.015)
    assert effect.ci_low > 0 and effect.ci_low < effect.estimate < effect.ci_high
    assert effect.p_value == pytest.approx(1 / 4000)  # every replicate above 0: the floor, not 0
    assert effect.mean_a - effect.mean_b == pytest.approx(effect.estimate)
    assert verdict(effect, effect.p_value, +1) == "reproduced"
    assert verdict(effect, effect.p_value, -1) == "contradicted"
    assert verdict(effect, 0.2, +1) == "inconclusive"  # the same effect, not significant after correction
    reverse = bootstrap_difference(b, a, n_boot=4000, seed=3)
    assert reverse.estimate == pytest.approx(-effect.estimate)
    assert effect.format(adjusted_p=0.0004).endswith("p_holm < 0.001")
    assert effect.format().startswith(f"{effect.estimate:+.3f} [")


def test_ci_coverage_is_near_95_percent_on_simulated_studies():
    """200 simulated 3x3-seed studies with a true difference of 0.02: the 95% CI should contain it
    about 95% of the time (binomial sd at 200 draws: 1.5 points)."""
    rng = np.random.default_rng(2024)
    hits = 0
    for i in range(200):
        a, b = simulate(rng)
        effect = bootstrap_difference(a, b, n_boot=400, seed=i)
        hits += effect.ci_low <= 0.02 <= effect.ci_high
    assert 0.90 <= hits / 200 <= 0.99, hits / 200


def test_exact_and_gaussian_image_resampling_agree():
    a, b = simulate(np.random.default_rng(5), n_images=1000)
    exact = bootstrap_difference(a, b, n_boot=3000, images="exact", seed=1)
    normal = bootstrap_difference(a, b, n_boot=3000, images="normal", seed=1)
    assert normal.se == pytest.approx(exact.se, rel=0.1)
    assert normal.ci_low == pytest.approx(exact.ci_low, abs=0.3 * exact.se)
    assert normal.ci_high == pytest.approx(exact.ci_high, abs=0.3 * exact.se)


def test_mde_shrinks_as_images_grow():
    """No seed variation: all uncertainty is image noise, so 10x the images is ~sqrt(10) less MDE."""
    kw = dict(sd_teacher=0.0, sd_student=0.0)
    small = bootstrap_difference(*simulate(np.random.default_rng(7), n_images=300, **kw), n_boot=2000)
    large = bootstrap_difference(*simulate(np.random.default_rng(7), n_images=3000, **kw), n_boot=2000)
    assert large.mde < small.mde / 2
    assert small.mde == pytest.approx(minimum_detectable_effect(small.se))
    assert minimum_detectable_effect(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert (small.n_images, large.n_images) == (300, 3000)


def test_a_no_teacher_arm_pairs_by_student_seed():
    """KD students of seed s share their initialisation (a large per-seed offset) with the no-KD
    student of seed s: paired, the offsets cancel and a 0.02 gain is clear."""
    rng = np.random.default_rng(11)
    offset = {s: rng.normal(0, 0.3) for s in range(3)}
    noise = lambda: rng.normal(0, 0.05, 500)  # noqa: E731
    kd = {(t, s): 0.52 + offset[s] + noise() for t, s in SEEDS}
    no_kd = {(None, s): 0.50 + offset[s] + noise() for s in range(3)}
    assert pair_units(list(kd), list(no_kd))[:3] == [((0, 0), (None, 0)), ((0, 1), (None, 1)), ((0, 2), (None, 2))]
    effect = bootstrap_difference(kd, no_kd, n_boot=2000)
    assert effect.ci_low > 0.01 and effect.ci_high < 0.03
    assert (effect.n_teacher_seeds, effect.n_student_seeds, effect.n_units) == (3, 3, 9)
    backwards = bootstrap_difference(no_kd, kd, n_boot=2000)
    assert backwards.estimate == pytest.approx(-effect.estimate)
    # an unpaired student seed is left out; an arm mixing both kinds of key is an error
    assert len(pair_units([(0, 0), (0, 5)], [(None, 0)])) == 1
    with pytest.raises(ValueError):
        pair_units([(0, 0), (None, 1)], [(None, 0)])
    with pytest.raises(ValueError):
        pair_units([(0, 7)], [(0, 8)])


def test_seed_resampling_keeps_students_within_their_teacher():
    teacher_of = np.array([0, 0, 0, 1])  # unequal: 3 students under teacher 0, 1 under teacher 1
    weights = _unit_weights(teacher_of, 5000, np.random.default_rng(0))
    assert weights.shape == (5000, 4)
    t0, t1 = weights[:, :3].sum(1), weights[:, 3]
    assert set(np.unique(t0)) <= {0, 3, 6} and set(np.unique(t1)) <= {0, 1, 2}
    assert np.all(t0 / 3 + t1 == 2)  # two teacher slots per replicate
    assert weights[:, :3].mean() == pytest.approx(weights[:, 3].mean(), rel=0.05)  # every unit equally likely


def test_ratio_metric_matches_clean_accuracy():
    """A student that is right on more clean images is not more *robust* for it: translated over clean."""
    shifts = ((0, 0), (2, 0), (0, 2), (8, 8))
    n = 100
    indices = np.arange(n)

    def run(clean: float, translated: float) -> PerImage:
        correct = np.zeros((len(shifts), n), dtype=bool)
        correct[0, : int(clean * n)] = True
        correct[1:, : int(translated * n)] = True
        return PerImage(shifts, indices, correct)

    a = {(0, s): run(0.8, 0.4) for s in range(3)}
    b = {(0, s): run(1.0, 0.4) for s in range(3)}
    assert paired_effect(a, b, "translated", n_boot=200).estimate == pytest.approx(0.0)
    ratio = paired_effect(a, b, "translated_over_clean", n_boot=500)
    assert ratio.estimate == pytest.approx(0.5 - 0.4)
    assert (ratio.mean_a, ratio.mean_b) == pytest.approx((0.5, 0.4))
    with pytest.raises(ValueError):
        paired_effect(a, b, "accuracy")
    moved = {(0, 0): PerImage(shifts, indices + 1, a[(0, 0)].correct)}
    with pytest.raises(ValueError, match="same images"):
        paired_effect(moved, b)


def test_holm_against_a_hand_computed_case():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.2, float("nan"), 0.01, 0.6])  # NaN: not a test, not counted in m
    assert np.isnan(adjusted[1]) and adjusted[[0, 2, 3]] == pytest.approx([0.4, 0.03, 0.6])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    p = np.random.default_rng(0).random(20)
    adjusted = holm(p)
    assert np.all(np.diff(adjusted[np.argsort(p)]) >= 0) and np.all(adjusted >= p)


def test_ten_thousand_replicates_of_nine_units_and_ten_thousand_images_are_fast():
    rng = np.random.default_rng(0)
    a = {u: rng.integers(0, 33, 10_000) / 32 for u in SEEDS}
    b = {u: rng.integers(0, 33, 10_000) / 32 for u in SEEDS}
    started = time.perf_counter()
    effect = bootstrap_difference(a, b)
    assert time.perf_counter() - started < 1.0
    assert isinstance(effect, Effect) and effect.n_boot == 10_000 and effect.n == "3x3x10000"


def test_verdict_needs_a_direction():
    effect = bootstrap_difference({(0, 0): np.ones(10)}, {(0, 0): np.zeros(10)}, n_boot=10)
    with pytest.raises(ValueError):
        verdict(effect, 0.001, 0)
