"""Students as MLflow models, and the MLflow naming of a study's runs (issue 15), without Ray:

- the best trials' students are logged as self-contained ``mlflow.pytorch`` models on their
  trial runs (signature, input example), the best one is registered with its study's numbers
  as tags, and what loads back (``models:/name/version``, ``@best``, ``runs:/id/model``)
  reproduces the logged test accuracy;
- every run carries the study's tags, trial runs have one param per hyperparameter, teacher runs
  last as long as their bank's training did.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from mlflow.artifacts import download_artifacts
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from losses import LeveledKDConfig
from study.train.data import train_val_split
from study.distill.spec import RunSpec, build_trainer, evaluate_split
from study.analysis.reports import summary
from study.tracking.runs import Tracker, study_tags

STUDY = "unit-kd_types"
TAGS = study_tags(STUDY, "kd_types", "mnist", {"max_epochs": 1, "train_subset": 300})
CONFIG = {"teachers": "none", "student": "mlp_2", "alpha": 1.0, "s_kl": 0.0, "s_fm": 0.0, "temperature": 1.0,
          "seed": 0}


def accuracy(model, data) -> float:
    with torch.no_grad():
        return (model(data.test_x.flatten(1)).argmax(1) == data.test_y).float().mean().item()


@pytest.fixture(scope="module")
def trained(mnist, tmp_path_factory):
    """A student trained one epoch the way a trial is, its trial checkpoint and its test accuracy."""
    from ray import tune

    from study.search.trainable import CHECKPOINT_FILE

    spec = RunSpec(dataset="mnist", student="mlp_2", loss=LeveledKDConfig(alpha=1.0, s_kl=0.0), epochs=1, train_subset=300)
    split = train_val_split(mnist, 300, seed=0)
    trainer = build_trainer(spec, mnist, split, device="cpu")
    trainer.fit()
    acc = evaluate_split(trainer, mnist, split, "test", [(0, 0)]).clean_acc
    folder = tmp_path_factory.mktemp("checkpoint")
    torch.save(trainer.state_dict(), folder / CHECKPOINT_FILE)
    return tune.Checkpoint.from_directory(str(folder)), acc


@pytest.fixture(scope="module")
def logged(trained, mnist, tmp_path_factory):
    """``_log_best_models`` on a study of one completed search trial and one baseline, run twice
    (a resumed study calls it again)."""
    from study.search.stage import _log_best_models
    from study.search.trainable import StudySettings

    checkpoint, acc = trained
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    tracker = Tracker(uri, STUDY)
    tracker.run_tags = TAGS
    parent = tracker.study_run(STUDY, {})
    run_id = tracker.trial_run(parent, "t1", "trial t1", {})
    table = pd.DataFrame([
        {"trial_id": "t1", "state": "completed", "baseline": False, "variant": "no_kd", "teachers": "none",
         "val_clean_acc": 0.8, "val_translated_acc": 0.3, "test_clean_acc": acc, "test_translated_acc": 0.25},
        {"trial_id": "t0", "state": "completed", "baseline": True, "variant": "no_kd", "teachers": "none",
         "val_clean_acc": 0.7, "val_translated_acc": 0.2, "test_clean_acc": acc - 0.125, "test_translated_acc": 0.2},
    ])
    settings = StudySettings(dataset="mnist", epochs=1, train_subset=300)
    reports = tmp_path_factory.mktemp("reports")
    for _ in range(2):
        runs = tracker.trial_run_ids(parent)
        assert runs == {"t1": run_id}
        _log_best_models(table, {"t1": (checkpoint, CONFIG)}, tracker, runs, mnist, settings, reports, keep=3,
                         result_summary=summary(table))
    return SimpleNamespace(client=MlflowClient(uri), uri=uri, run_id=run_id, acc=acc, reports=reports,
                           experiment_id=tracker.experiment_id)


def load(uri: str, model_uri: str):
    import mlflow.pytorch

    from study.tracking.logged_models import tracking_uri_for_a_moment as _tracking_uri

    with _tracking_uri(uri):
        return mlflow.pytorch.load_model(model_uri)


def test_best_student_is_registered_with_the_study_numbers(logged):
    name = f"leveled-kd-{STUDY}"
    (version,) = logged.client.search_model_versions(f"name = '{name}'")  # once, though logged twice
    assert version.run_id == logged.run_id and str(version.version) == "1"
    tags = version.tags
    assert float(tags["test_clean_acc"]) == pytest.approx(logged.acc, abs=1e-6)
    assert float(tags["gain_test_clean_acc"]) == pytest.approx(0.125, abs=1e-6)
    assert float(tags["gain_test_translated_acc"]) == pytest.approx(0.05, abs=1e-6)
    assert {"val_clean_acc", "val_translated_acc", "test_translated_acc"} <= set(tags)
    assert tags["trial_id"] == "t1"
    assert str(logged.client.get_model_version_by_alias(name, "best").version) == "1"
    model = logged.client.get_registered_model(name)
    assert model.tags["leveled_kd.study"] == STUDY and model.tags["leveled_kd.space"] == "kd_types"
    assert "leveled_kd.budget" not in model.tags
    run = logged.client.get_run(logged.run_id)
    assert run.data.tags["leveled_kd.registered_model"] == f"{name}/1"


@pytest.mark.parametrize("model_uri", ["models:/leveled-kd-{study}/1", "models:/leveled-kd-{study}@best",
                                       "runs:/{run}/model"])
def test_loaded_student_reproduces_the_logged_test_accuracy(logged, mnist, model_uri):
    from models.export import LogitsOnly

    model = load(logged.uri, model_uri.format(study=STUDY, run=logged.run_id))
    assert isinstance(model, LogitsOnly) and not model.training  # pickled module, not a torch.export graph
    assert math.isclose(accuracy(model, mnist), logged.acc, abs_tol=1.5 / len(mnist.test_y))
    assert model(mnist.test_x[:3]).shape == (3, 10)  # images as [N, C, H, W] work too


def test_logged_model_is_self_contained_with_signature_and_example(logged, mnist):
    (found,) = logged.client.search_logged_models([logged.experiment_id],
                                                  filter_string=f"source_run_id = '{logged.run_id}'")
    assert found.name == "model" and found.tags["leveled_kd.trial_id"] == "t1"
    from study.tracking.logged_models import tracking_uri_for_a_moment as _tracking_uri

    with _tracking_uri(logged.uri):  # models:/ URIs resolve through the global tracking URI
        local = Path(download_artifacts(f"models:/{found.model_id}"))
    assert (local / "code" / "models" / "export.py").is_file()  # the architectures travel with the model
    assert not list(local.rglob("__pycache__"))
    meta = Model.load(str(local))
    inputs = meta.signature.inputs.to_dict()[0]["tensor-spec"]
    assert inputs["dtype"] == "float32" and list(inputs["shape"]) == [-1, 784]
    assert list(meta.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 10]
    assert meta.metadata["mean"] == list(mnist.mean) and meta.metadata["trial_id"] == "t1"
    example = json.loads((local / "input_example.json").read_text())
    assert len(example) == 4 and len(example[0]) == 784  # four flattened test images
    assert meta.flavors["pytorch"].get("serialization_format", "pickle") == "pickle"
    state = torch.load(logged.reports / "models" / "t1" / "student.pt", weights_only=True)
    assert set(state) == set(load(logged.uri, f"models:/{found.model_id}").model.state_dict())


# ----------------------------------------------------------------------------- naming of runs


def test_every_run_carries_the_study_tags_and_teacher_runs_their_real_duration(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", STUDY)
    tracker.run_tags = TAGS
    parent = tracker.study_run(STUDY, {})
    started = time.time() - 3600
    manifest = {"snapshots": {"50": {"clean_acc": 0.5, "translated_acc": 0.2}}, "started": started,
                "finished": started + 42.5}
    teacher = tracker.teacher_run(parent, "mnist/cnn_1/seed-0", {}, manifest)
    tracker.trial_run(parent, "t1", "trial t1", {})
    info = tracker.client.get_run(teacher).info
    assert info.start_time == int(started * 1000) and info.end_time - info.start_time == 42_500
    tracker.teacher_run(parent, "mnist/cnn_1/seed-0", {}, {**manifest, "started": time.time(),
                                                           "finished": time.time()})  # a resumed study
    assert tracker.client.get_run(teacher).info.end_time == info.end_time  # found again, times kept
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`leveled_kd.space` = 'kd_types'")
    assert sorted(r.data.tags["leveled_kd.kind"] for r in runs) == ["study", "teacher", "trial"]
    assert json.loads(runs[0].data.tags["leveled_kd.budget"]) == {"max_epochs": 1, "train_subset": 300}
    assert not tracker.client.search_runs([tracker.experiment_id], "tags.`leveled_kd.space` = 'leveled_kd'")
    clone = pickle_roundtrip(tracker)  # Tune pickles the callbacks that hold the tracker
    assert clone.run_tags == TAGS


def pickle_roundtrip(obj):
    import pickle

    return pickle.loads(pickle.dumps(obj))


def test_trial_runs_have_one_param_per_hyperparameter(tmp_path):
    from study.search.tuning import MLflowTrialLogger

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", STUDY)
    parent = tracker.study_run(STUDY, {})
    logger = MLflowTrialLogger(tracker, parent, 3, {"dataset": "mnist", "train_subset": 300, "max_epochs": 3,
                                                    "study": STUDY, "space": "leveled_kd"})
    config = {"teachers": "cnn_1+cnn_2", "step_cnn_1": 100, "step_cnn_2": 50, "teacher_weight": 0.7,
              "alpha": 0.25, "temperature": 3.0, "s_kl": 0.0, "s_kl_on": False, "s_fm": 0.5, "s_fm_on": True,
              "student": "mlp_1", "seed": 0, "arm": "b"}
    run_id = logger._run(SimpleNamespace(trial_id="abc", config=config))
    params = tracker.client.get_run(run_id).data.params
    assert not [k for k in params if k.startswith("config/")]
    assert not {"step_cnn_1", "step_cnn_2", "teacher_weight", "s_kl_on", "s_fm_on"} & set(params)
    assert params["teacher_0_step"] == "100" and params["teacher_1_step"] == "50"
    assert params["teacher_0_weight"] == "0.7" and params["s_fm"] == "0.5" and params["alpha"] == "0.25"
    assert params["arm"] == "b" and params["variant"] == "type_1"


def test_teacher_bank_task_reports_when_it_started_and_finished(mnist, tmp_path):
    from study.teachers.stage import _build_bank
    from study.teachers.bank import TeacherSpec

    before = time.time()
    manifest = _build_bank(TeacherSpec("mnist", "tiny_cnn", 0, 0.0), mnist, str(tmp_path), 50, 50, "cpu")
    after = time.time()
    assert before <= manifest["started"] < manifest["finished"] <= after
    assert "50" in manifest["snapshots"]


def test_pointing_mlflow_at_a_store_for_a_moment_leaves_no_trace(tmp_path, monkeypatch):
    """``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI``; left behind, it sent every later
    study of the process (and its subprocesses) to another store."""
    import os

    import mlflow

    from study.tracking.logged_models import tracking_uri_for_a_moment

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    with tracking_uri_for_a_moment(f"sqlite:///{tmp_path / 'a.db'}"):
        assert mlflow.get_tracking_uri().endswith("a.db")
    assert "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri() == before
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with tracking_uri_for_a_moment(f"sqlite:///{tmp_path / 'b.db'}"):
        pass
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
