import json

import pytest

from study.analysis.figures import figure_shift_curves, shift_curve
from study.analysis.reports import summary
from study.analysis.tables import best_trials, trials_table
from study.search.tuning import WithBaselines


def row(trial_id, variant, val, test, baseline=False, state="completed", seed=0):
    """Validation and test accuracies differ on purpose (and rank the trials differently in the
    fixture), so a selection that read the test set instead of validation would fail the tests."""
    metrics = {f"test_acc_shift/dx_{m * ux}_dy_{m * uy}": test - 0.01 * m
               for m in (2, 4) for ux, uy in ((1, 0), (0, 1), (-1, 0), (0, -1))}
    return {"trial_id": trial_id, "state": state, "baseline": baseline, "variant": variant, "teachers": "cnn_1",
            "teacher_step": 100, "alpha": 0.5, "temperature": 4.0, "s_kl": 1.0, "s_fm": 0.0, "seed": seed,
            "val_clean_acc": 0.9, "val_translated_acc": val, "test_clean_acc": 0.95,
            "test_translated_acc": test, "test_acc_shift/dx_0_dy_0": 0.95, **metrics}


@pytest.fixture
def table():
    # by validation: k2 > k1; by test: k1 > k2 (and the pruned trial would win both)
    return trials_table([row("b", "no_kd", 0.31, 0.30, baseline=True), row("k1", "normal_kd", 0.40, 0.48),
                         row("k2", "type_1", 0.45, 0.42), row("p", "type_2", 0.99, 0.99, state="pruned")])


def test_best_ignores_baselines_and_pruned(table):
    assert best_trials(table, k=2)["trial_id"].tolist() == ["k2", "k1"]


def test_summary_reports_gain_over_no_kd(table):
    s = summary(table)
    assert s["best"]["trial_id"] == "k2"  # chosen on validation, although k1 is better on test
    assert s["gain_test_translated_acc"] == pytest.approx(0.42 - 0.30)  # then reported on test
    assert s["states"] == {"completed": 3, "pruned": 1}


def test_the_gain_is_over_the_no_kd_student_of_the_same_architecture():
    """A ViT is compared with a ViT trained without KD, not with the mean of every baseline."""
    rows = [{**row("bv", "no_kd", 0.30, 0.33, baseline=True), "student": "vit_1"},
            {**row("bm", "no_kd", 0.20, 0.24, baseline=True), "student": "mlp_1"},
            {**row("kv", "normal_kd", 0.36, 0.35), "student": "vit_1"},
            {**row("km", "normal_kd", 0.26, 0.27), "student": "mlp_1"}]
    s = summary(trials_table(rows))
    assert s["best"]["trial_id"] == "kv" and s["best"]["student"] == "vit_1"
    assert s["baseline"]["test_translated_acc"] == pytest.approx(0.33)
    assert s["gain_test_translated_acc"] == pytest.approx(0.35 - 0.33)


def test_shift_curve_averages_directions(table):
    curve = shift_curve(table.iloc[1])
    assert curve["shift_px"].tolist() == [0, 2, 4]
    assert curve["accuracy"].tolist() == pytest.approx([0.95, 0.46, 0.44])  # k1's test curve
    fig = figure_shift_curves(table)
    assert len(fig.data) == 3  # the baseline and the two completed KD trials (pruned ones are left out)


class FakeSearcher:
    metric, mode = "m", "max"

    def __init__(self):
        self.told = []

    def suggest(self, trial_id):
        return {"from": "optuna"}

    def on_trial_result(self, trial_id, result):
        self.told.append(("result", trial_id))

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append(("complete", trial_id))


def test_baselines_come_first_and_stay_out_of_optuna():
    inner = FakeSearcher()
    searcher = WithBaselines(inner, [{"baseline": True, "seed": 0}])
    assert searcher.suggest("t1") == {"baseline": True, "seed": 0}
    assert searcher.suggest("t2") == {"from": "optuna"}
    searcher.on_trial_result("t1", {})
    searcher.on_trial_complete("t1", {})
    searcher.on_trial_complete("t2", {})
    assert inner.told == [("complete", "t2")]
    restored = WithBaselines(FakeSearcher(), [{"baseline": True}])
    restored.set_state(searcher.get_state())
    assert restored.pending == [] and restored.baseline_ids == {"t1"}


def _budget_study(folder, soft_gain: float):
    """A no-KD baseline and two arms over teacher seeds 0 and 1 (student seed 0). The per-image results
    are one fixed draw, so two studies of it are the same runs; ``soft_gain`` turns that many of the
    ``soft`` arm's wrong answers right (what a longer budget would change in that arm alone)."""
    import numpy as np
    import pandas as pd

    from study.analysis.studies import normalise
    from study.train.predictions import PerImage, save_predictions

    shifts, n = ((0, 0), (2, 0), (0, -4)), 3000
    rows = []
    for i, (arm, p, teachers) in enumerate(((None, 0.30, (None,)), ("kd", 0.40, (0, 1)), ("soft", 0.42, (0, 1)))):
        for t in teachers:
            rng = np.random.default_rng([i, 9 if t is None else t])
            correct = rng.random((len(shifts), n)) < p
            if arm == "soft":
                correct |= rng.random((len(shifts), n)) < soft_gain
            trial = f"{folder.name}-{arm}-{t}"
            rows.append({"trial_id": trial, "state": "completed", "arm": arm, "variant": "normal_kd" if arm else "no_kd",
                         "baseline": arm is None, "student": "mlp_1", "teachers": "cnn_1" if arm else "none",
                         "teacher_step": 50 if arm else None, "teacher_seed": t, "teacher_label_smoothing": 0.0,
                         "seed": 0, "epochs_done": 8 if soft_gain and arm == "soft" else 5,
                         "val_translated_acc": p, "test_translated_acc": float(correct[1:].mean())})
            save_predictions(folder / "predictions" / f"{trial}.npz", {"test": PerImage(shifts, np.arange(n), correct)})
    table = normalise(pd.DataFrame(rows))
    (folder / "reports").mkdir(parents=True)
    table.to_csv(folder / "reports" / "trials.csv", index=False)
    return table


def test_against_compares_each_arm_with_the_same_arm_of_another_budget(tmp_path, capsys):
    """``--against``: the same design under two budgets, unit by unit. Arms the budget did not change
    (the same runs) differ by exactly 0; the arm it changed gains what was planted, with an interval."""
    from study.analysis.arms import against_effects
    from study.analysis.reports import main

    floor, plain = tmp_path / "floor", tmp_path / "plain"
    a, b = _budget_study(floor, soft_gain=0.1), _budget_study(plain, soft_gain=0.0)
    frame = against_effects(a, floor, b, plain, n_boot=500).set_index("arm")
    assert set(frame.index) == {"no KD", "kd", "soft"}
    for same in ("no KD", "kd"):
        assert frame.loc[same, "effect"] == 0 and frame.loc[same, "ci_low"] == frame.loc[same, "ci_high"] == 0
    soft = frame.loc["soft"]
    planted = 0.1 * (1 - 0.42)  # a tenth of the wrong answers turned right
    assert soft["ci_low"] > 0.03 and soft["effect"] == pytest.approx(planted, abs=0.01)
    assert soft["epochs_done"] == 8 and soft["other_epochs_done"] == 5 and soft["n"] == "2x1x3000"
    assert main([str(floor), "--against", str(plain), "--n-boot", "300"]) == 0
    out = capsys.readouterr().out
    assert "| soft | 8.0 | 5.0 |" in out and "floor - plain" in out  # no plans: the directories name the sides
    for folder, floor_epochs in ((floor, 8), (plain, 0)):
        (folder / "study.json").write_text(json.dumps({"plan": {"space": "s", "max_epochs": 10,
                                                                  "min_epochs": floor_epochs}}))
    assert main([str(floor), "--against", str(plain), "--n-boot", "300"]) == 0
    assert "min_epochs 8 - min_epochs 0 [95% CI]" in capsys.readouterr().out
