"""The Tune trainable outside Tune (its ``tune`` calls replaced by a recorder): a trial takes its
teacher outputs from the bank on first use, and a later trial reads them back without running the teacher."""
from __future__ import annotations

import pytest

from study.search import trainable as trainable_module
from study.search.trainable import StudySettings, train_student
from study.teachers.bank import TeacherBank, TeacherSpec


class RecordingTune:
    """Stands in for ``ray.tune`` inside :func:`train_student`: keeps the reports, has no checkpoint."""

    def __init__(self) -> None:
        self.reports: list[dict] = []

    def report(self, metrics, checkpoint=None) -> None:
        self.reports.append(dict(metrics))

    @staticmethod
    def get_checkpoint():
        return None

    class Checkpoint:
        @staticmethod
        def from_directory(path):
            return path


@pytest.fixture
def fake_tune(monkeypatch):
    tune = RecordingTune()
    monkeypatch.setattr(trainable_module, "tune", tune)
    return tune


@pytest.fixture
def bank(tmp_path, mnist):
    bank = TeacherBank(tmp_path / "banks", TeacherSpec("mnist", "tiny_cnn"), eval_images=50)
    bank.ensure(mnist, max_steps=100, device="cpu")
    return bank


def settings(bank: TeacherBank) -> StudySettings:
    return StudySettings(dataset="mnist", epochs=1, train_subset=200, val_images=50, test_images=50, device="cpu",
                         precision="fp32", bank_root=str(bank.dir.parents[2]))


def test_a_trial_computes_its_cache_on_first_use_and_the_next_trial_reads_it(fake_tune, bank, mnist, monkeypatch):
    assert not list(bank.dir.glob("*.outputs*.pt"))  # stage 1 computes no cache
    config = {"teachers": "tiny_cnn", "step_tiny_cnn": 100, "alpha": 0.5, "s_kl": 1.0}
    train_student(config, mnist, settings(bank))
    (cache,) = bank.dir.glob("*.outputs*.pt")  # the one snapshot this trial used, not step 50
    assert cache.name.startswith("step-000100.outputs-") and list(bank.record(100)["outputs"])
    assert fake_tune.reports[-1]["final"] == 1 and fake_tune.reports[-1]["loss_kl"] > 0

    monkeypatch.setattr(TeacherBank, "load", lambda *a, **k: pytest.fail("the teacher was run again"))
    train_student({**config, "seed": 1}, mnist, settings(bank))
    assert len(fake_tune.reports) == 2 and list(bank.dir.glob("*.outputs*.pt")) == [cache]


def test_a_trial_without_teachers_touches_no_bank(fake_tune, tmp_path, mnist):
    missing = TeacherBank(tmp_path / "nowhere", TeacherSpec("mnist", "tiny_cnn"))
    train_student({"teachers": "none", "alpha": 1.0}, mnist, settings(missing))
    assert fake_tune.reports[-1]["final"] == 1 and not (tmp_path / "nowhere").exists()


def test_a_family_objective_is_scored_on_validation_every_epoch_and_on_test_at_the_end(fake_tune, tmp_path, mnist):
    """``--objective rotation``: the study is scored on another robustness family, whose validation
    metric (the searcher's) is in every epoch's report, beside translation's, which stays reported."""
    from study.search.tuning import objective_metric
    from study.train.robustness import RobustnessError

    assert objective_metric("rotation") == "val_rotated_acc" and objective_metric("transfer") == "val_transfer_translated"
    with pytest.raises(RobustnessError, match="unknown robustness family 'blur'"):
        objective_metric("blur")
    missing = TeacherBank(tmp_path / "nowhere", TeacherSpec("mnist", "tiny_cnn"))
    study = StudySettings(**{**settings(missing).__dict__, "epochs": 2, "objective": "rotation",
                             "robustness": ("rotation",)})
    train_student({"teachers": "none", "alpha": 1.0}, mnist, study)
    assert len(fake_tune.reports) == 2
    for report in fake_tune.reports:
        assert 0.0 <= report["val_rotated_acc"] <= 1.0 and "val_acc_rotation/deg_45" in report
        assert "val_translated_acc" in report
    assert "test_rotated_acc" in fake_tune.reports[-1] and "test_rotated_acc" not in fake_tune.reports[0]
