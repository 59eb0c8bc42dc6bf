"""The transfer ratio (student - no KD) / (teacher - no KD): known answers, the joint resampling of
its numerator and denominator, and its place in a study's arms table and trials."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.analysis.arms import arm_effects, arms_markdown
from study.analysis.studies import TEACHER_PREDICTIONS, normalise, teacher_predictions_name
from study.analysis.transfer import point_ratio, trial_transfers, transfer_ratio
from study.train.predictions import PerImage, save_predictions

SHIFTS = ((0, 0), (2, 0), (-2, 0), (0, 4), (6, 6), (8, -8))
N = 2000


def run(p: float, rng: np.random.Generator, n: int = N) -> PerImage:
    correct = rng.random((len(SHIFTS), n)) < p
    return PerImage(SHIFTS, np.arange(n), correct)


def test_known_ratio_is_recovered_with_an_interval_that_covers_it():
    rng = np.random.default_rng(0)
    arm = {(t, s): run(0.40, rng) for t in (0, 1) for s in (0, 1)}
    base = {(None, s): run(0.30, rng) for s in (0, 1)}
    teachers = {t: run(0.80, rng) for t in (0, 1)}
    ratio = transfer_ratio(arm, base, teachers, n_boot=2000)
    assert ratio.estimate == pytest.approx(0.2, abs=0.03)
    assert ratio.ci_low < 0.2 < ratio.ci_high and ratio.ci_high - ratio.ci_low < 0.1
    assert ratio.student == pytest.approx(0.40, abs=0.01) and ratio.teacher == pytest.approx(0.80, abs=0.01)
    assert ratio.n_units == 4 and ratio.n_images == N and ratio.dropped == 0
    same = transfer_ratio({k: base[(None, k[1])] for k in arm}, base, teachers, n_boot=2000)
    assert same.estimate == 0 and same.ci_low <= 0 <= same.ci_high  # the student is its no-KD partner


def test_numerator_and_denominator_are_resampled_together():
    """A student that is exactly halfway between no KD and its teacher *on every image* has transfer
    0.5 in every replicate: joint resampling gives a zero-width interval, independent resampling would not."""
    rng = np.random.default_rng(1)
    base_run, teacher_run = run(0.2, rng), run(0.9, rng)
    halfway = base_run.correct.astype(float) + 0.5 * (teacher_run.correct.astype(float) - base_run.correct)
    student = PerImage(SHIFTS, np.arange(N), halfway)  # scores need not be bools: a mean per image is enough
    ratio = transfer_ratio({(0, 0): student}, {(None, 0): base_run}, {0: teacher_run}, n_boot=500, images="exact")
    assert ratio.estimate == pytest.approx(0.5) and ratio.ci_high - ratio.ci_low < 1e-9


def test_bad_inputs_are_refused():
    rng = np.random.default_rng(2)
    arm, base = {(0, 0): run(0.4, rng)}, {(None, 0): run(0.3, rng)}
    with pytest.raises(ValueError, match="teacher seed"):
        transfer_ratio(arm, base, {1: run(0.8, rng)})
    with pytest.raises(ValueError, match="same images"):
        transfer_ratio(arm, base, {0: run(0.8, rng, n=N - 1)})
    with pytest.raises(ValueError, match="no transfer ratio"):
        transfer_ratio(arm, base, {0: run(0.8, rng)}, metric="translated_over_clean")
    assert np.isnan(point_ratio(0.4, 0.3, 0.3))  # a teacher no better than no KD: undefined, not infinite


def transfer_study(tmp_path, teacher_p=0.8):
    """A study with a no-KD arm (0.30), a KD arm (0.40) from cnn_1 @ 50 over two teacher seeds, and
    its teachers' evaluations (``teacher_p``)."""
    rng = np.random.default_rng(3)
    study = tmp_path / "study"
    rows = []
    for arm, variant, p, teachers in (("none", "no_kd", 0.30, (None,)), ("kd", "normal_kd", 0.40, (0, 1))):
        for t in teachers:
            for s in (0, 1):
                trial = f"{arm}-{t}-{s}"
                rows.append({"trial_id": trial, "state": "completed", "arm": arm if arm != "none" else None,
                             "variant": variant, "baseline": variant == "no_kd", "student": "mlp_1",
                             "teachers": "cnn_1" if t is not None else "none", "teacher_step": 50 if t is not None
                             else None, "teacher_seed": t, "teacher_label_smoothing": 0.0, "seed": s,
                             "val_translated_acc": p, "test_translated_acc": p})
                save_predictions(study / "predictions" / f"{trial}.npz", {"test": run(p, rng)})
    for t in (0, 1):
        save_predictions(study / "predictions" / TEACHER_PREDICTIONS / teacher_predictions_name("cnn_1", 0.0, t, 50),
                         {"test": run(teacher_p, rng)})
    return study, normalise(pd.DataFrame(rows))


def test_arms_table_and_trials_carry_the_transfer_ratio(tmp_path):
    study, table = transfer_study(tmp_path)
    frame = arm_effects(table, study, n_boot=500).set_index("arm")
    kd = frame.loc["kd"]
    assert kd["transfer_translated"] == pytest.approx(0.2, abs=0.04)
    assert kd["transfer_translated_low"] < kd["transfer_translated"] < kd["transfer_translated_high"]
    assert kd["teacher_test_translated_acc"] == pytest.approx(0.8, abs=0.02)
    assert "transfer, translated [95% CI]" in arms_markdown(frame.reset_index())
    per_trial = trial_transfers(table, study).set_index("trial_id")
    assert set(per_trial.index) == {"kd-0-0", "kd-0-1", "kd-1-0", "kd-1-1"}  # every KD trial, no no-KD one
    assert per_trial["test_transfer_translated"].between(0.1, 0.3).all()
    (study / "predictions" / TEACHER_PREDICTIONS / teacher_predictions_name("cnn_1", 0.0, 1, 50)).unlink()
    assert "transfer_translated" not in arm_effects(table, study, n_boot=200)  # no teacher evaluation: no ratio


def test_transfer_findings_pair_each_scheme_with_normal_kd_and_its_controls(tmp_path):
    """Planted: fm_mixup 0.45 beats kd 0.40, its augmentation control 0.36 and the MLP teacher's
    mixup 0.33; aug_mixup is a control, never a scheme; the no-KD baseline (0.30) is kd's reference;
    fm_mixup_k16 (a variation of fm_mixup, as good) is compared with it too, and the tie is inconclusive."""
    from study.analysis.findings import analyse_study, decide, transfer_findings

    rng = np.random.default_rng(4)
    study = tmp_path / "transfer"
    rows = []
    arms = {None: ("no_kd", "none", 0.30), "kd": ("normal_kd", "cnn_1", 0.40), "fm_mixup": ("normal_kd", "cnn_1", 0.45),
            "aug_mixup": ("no_kd", "none", 0.36), "mlp_teacher_mixup": ("normal_kd", "mlp_1", 0.33),
            "trajectory": ("normal_kd", "cnn_1", 0.40), "fm_mixup_k16": ("normal_kd", "cnn_1", 0.45)}
    for arm, (variant, teachers, p) in arms.items():
        for s in (0, 1, 2):
            trial = f"{arm}-{s}"
            rows.append({"trial_id": trial, "state": "completed", "arm": arm, "variant": variant, "baseline": arm is None,
                         "student": "mlp_1", "teachers": teachers, "teacher_step": None if teachers == "none" else 2500,
                         "teacher_seed": None if teachers == "none" else 0, "teacher_label_smoothing": 0.0, "seed": s,
                         "alpha": 0.5, "val_translated_acc": p, "test_translated_acc": p})
            save_predictions(study / "predictions" / f"{trial}.npz", {"test": run(p, rng)})
    table = normalise(pd.DataFrame(rows))
    claims = {f.claim: (f.a.label, f.b.label) for f in transfer_findings(table)}
    assert claims == {
        "T0. Normal KD beats no KD": ("kd", "no KD"),
        "T1. fm_mixup beats normal KD": ("fm_mixup", "kd"),
        "T1. trajectory beats normal KD": ("trajectory", "kd"),
        "T2. fm_mixup beats its augmentation control (same views, no teacher)": ("fm_mixup", "aug_mixup"),
        "T3. fm_mixup: a CNN teacher beats an MLP teacher on the same views": ("fm_mixup", "mlp_teacher_mixup"),
        "T1. fm_mixup_k16 beats normal KD": ("fm_mixup_k16", "kd"),
        "T4. fm_mixup_k16 beats fm_mixup, the scheme it varies": ("fm_mixup_k16", "fm_mixup"),
    }
    (study / "reports").mkdir(parents=True)
    table.to_csv(study / "reports" / "trials.csv", index=False)
    cells = decide(analyse_study(study, transfer_findings(table), "mnist", metrics=["translated"], n_boot=400))
    verdicts = {c.finding.split(".")[0] + " " + c.comparison.split(" vs ")[0]: c.verdict for c in cells}
    assert verdicts["T0 kd"] == "reproduced" and verdicts["T1 fm_mixup"] == "reproduced"
    assert verdicts["T1 trajectory"] == "inconclusive" and verdicts["T4 fm_mixup_k16"] == "inconclusive"
    assert all(c.effect.n_images == N for c in cells)
    t0 = next(c for c in cells if c.finding.startswith("T0"))
    assert t0.effect.mean_b == pytest.approx(0.30, abs=0.01)  # the baselines, not the augmentation control
