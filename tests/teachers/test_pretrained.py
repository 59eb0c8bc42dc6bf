"""Pretrained teachers as banks without training (study/teachers/pretrained.py): a checkpoint file,
an ordered snapshot series and an MLflow model URI each become a bank whose snapshots are imported,
hash-checked and scored, and then serve outputs and evaluations like a trained bank's."""
from __future__ import annotations

import json

import pytest
import torch

from models import build_model
from models.registry import unregister_model
from study.teachers import bank as bank_module
from study.teachers import pretrained as pretrained_module
from study.teachers.bank import TeacherBank, TeacherSpec, sha256
from study.teachers.pretrained import (PretrainedBank, PretrainedError, bank_for, parse_pretrained,
                                       register_pretrained)


@pytest.fixture
def registered():
    """Pretrained teachers registered by a test are forgotten afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        unregister_model(name)
        pretrained_module._PRETRAINED.pop(name, None)


def checkpoint(path, seed=0, arch="tiny_cnn", shape=(1, 28, 28)):
    """A state dict of ``arch`` as a training script elsewhere would save it."""
    torch.manual_seed(seed)
    torch.save(build_model(arch, shape, 10).state_dict(), path)
    return path


def bank_of(tmp_path, name, raw, registered):
    teacher = register_pretrained(parse_pretrained(name, raw, base=tmp_path))
    registered.append(name)
    bank = bank_for(tmp_path / "teachers", TeacherSpec("mnist", name), eval_images=100)
    assert isinstance(bank, PretrainedBank) and bank.teacher == teacher
    return bank


def test_a_checkpoint_is_a_one_snapshot_bank_and_nothing_trains(tmp_path, mnist, registered, monkeypatch):
    monkeypatch.setattr(bank_module.Trainer, "fit", lambda *a, **k: pytest.fail("a pretrained teacher trained"))
    checkpoint(tmp_path / "teacher.pt")
    bank = bank_of(tmp_path, "lkd_ckpt", {"arch": "tiny_cnn", "checkpoint": "teacher.pt", "step": 7}, registered)
    assert bank.ensure(mnist, device="cpu") == [7]
    manifest = json.loads(bank.manifest_path.read_text())
    record = manifest["snapshots"]["7"]
    assert record["source"] == str(tmp_path / "teacher.pt") and record["source_digest"] == sha256(tmp_path / "teacher.pt")
    assert record["sha256"] == sha256(bank.snapshot_path(7)) and 0 <= record["clean_acc"] <= 1
    assert manifest["pretrained"] == {"name": "lkd_ckpt", "kind": "checkpoint", "arch": "tiny_cnn"}
    # the bank's snapshot holds exactly the checkpoint's weights, and serves like a trained bank
    weights = torch.load(tmp_path / "teacher.pt", weights_only=True)
    loaded = TeacherBank(tmp_path / "teachers", bank.spec).load(7, mnist)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in weights.items())
    logits, features = bank.outputs(7, mnist, torch.arange(20), device="cpu")
    assert logits.shape == (20, 10) and features.shape == (20, 8)
    mtime = bank.manifest_path.stat().st_mtime_ns
    assert bank.ensure(mnist, device="cpu") == [7] and bank.manifest_path.stat().st_mtime_ns == mtime  # unchanged


def test_a_series_is_swept_by_step_and_follows_its_files(tmp_path, mnist, registered):
    for step in (100, 300):
        checkpoint(tmp_path / f"s{step}.pt", seed=step)
    raw = {"arch": "tiny_cnn", "snapshots": {300: "s300.pt", 100: "s100.pt"}}
    bank = bank_of(tmp_path, "lkd_series", raw, registered)
    assert bank.ensure(mnist, device="cpu") == [100, 300]
    first = sha256(bank.snapshot_path(300))
    checkpoint(tmp_path / "s300.pt", seed=5)  # the file was replaced: imported again
    bank.ensure(mnist, device="cpu")
    assert sha256(bank.snapshot_path(300)) != first
    bank = bank_of(tmp_path, "lkd_series", {"arch": "tiny_cnn", "snapshots": {100: "s100.pt"}}, registered)
    assert bank.ensure(mnist, device="cpu") == [100] and bank.steps() == [100]  # dropped from the series


def test_an_mlflow_model_uri_is_a_bank(tmp_path, mnist, registered):
    from models.export import logits_only
    from study.tracking.logged_models import log_student
    from study.tracking.runs import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "teachers")
    run = tracker.client.create_run(tracker.experiment_id)
    torch.manual_seed(0)
    student = build_model("mlp_2", mnist.input_shape, 10)
    logged = log_student(tracker.client, tracker.experiment_id, run.info.run_id,
                         logits_only(student, mnist.input_shape, mnist.mean, mnist.std), mnist)
    bank = bank_of(tmp_path, "lkd_mlflow", {"model_uri": logged.run_uri, "tracking_uri": uri}, registered)
    assert bank.ensure(mnist, device="cpu") == [1]
    assert json.loads(bank.manifest_path.read_text())["pretrained"]["kind"] == "mlflow"
    rows = torch.arange(50)
    logits, features = bank.outputs(1, mnist, rows, device="cpu")
    with torch.no_grad():
        expected = student.eval()(mnist.train_x[rows])
    assert torch.allclose(logits, expected.logits, atol=1e-5)  # the logged module, adapted to give features
    assert features.shape == (50, student.feature_dim)


@pytest.mark.parametrize("raw, message", [
    ({"arch": "tiny_cnn"}, "needs exactly one of checkpoint:, snapshots: or model_uri:, got none"),
    ({"arch": "tiny_cnn", "checkpoint": "a.pt", "model_uri": "models:/x/1"}, "needs exactly one of"),
    ({"checkpoint": "a.pt"}, "needs arch:"),
    ({"arch": "tiny_cnn", "checkpoint": "a.pt", "weights": 1}, r"unknown option\(s\) \['weights'\]"),
    ({"arch": "tiny_cnn", "snapshots": {"late": "a.pt"}}, "snapshot step 'late' is not a positive integer"),
    ({"arch": "tiny_cnn", "checkpoint": "a.pt", "step": 0}, "step must be a positive integer"),
    ({"model_uri": "teacher.pt"}, "is not an MLflow model URI"),
], ids=["no-source", "two-sources", "no-arch", "unknown-option", "bad-step-key", "bad-step", "not-a-uri"])
def test_a_malformed_entry_is_one_line(raw, message):
    with pytest.raises(PretrainedError, match=message):
        parse_pretrained("t", raw)


def test_unusable_weights_are_one_line(tmp_path, mnist, registered):
    with pytest.raises(PretrainedError, match="unknown arch 'resnet_9000'"):
        register_pretrained(parse_pretrained("lkd_x", {"arch": "resnet_9000", "checkpoint": "a.pt"}))
    with pytest.raises(PretrainedError, match="has the name of a registered model"):
        register_pretrained(parse_pretrained("cnn_1", {"arch": "tiny_cnn", "checkpoint": "a.pt"}))
    bank = bank_of(tmp_path, "lkd_missing", {"arch": "tiny_cnn", "checkpoint": "gone.pt"}, registered)
    with pytest.raises(PretrainedError, match=r"checkpoint .*gone.pt does not exist"):
        bank.ensure(mnist, device="cpu")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    bank = bank_of(tmp_path, "lkd_list", {"arch": "tiny_cnn", "checkpoint": "list.pt"}, registered)
    with pytest.raises(PretrainedError, match="holds a list, not a state dict of tensors"):
        bank.ensure(mnist, device="cpu")
    checkpoint(tmp_path / "cnn.pt", arch="mlp_2")
    bank = bank_of(tmp_path, "lkd_misfit", {"arch": "tiny_cnn", "checkpoint": "cnn.pt"}, registered)
    with pytest.raises(PretrainedError, match=r"does not fit its architecture built for mnist \(1x28x28, 10 classes\): "
                                              r"missing keys \['body.0.weight'"):
        bank.ensure(mnist, device="cpu")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in build_model("tiny_cnn", (1, 28, 28), 10).state_dict().items()}}
    torch.save(wrapped, tmp_path / "wrapped.pt")  # a training script's habits: a wrapper key, DataParallel's prefix
    bank = bank_of(tmp_path, "lkd_wrapped", {"arch": "tiny_cnn", "checkpoint": "wrapped.pt"}, registered)
    assert bank.ensure(mnist, device="cpu") == [1]


def test_a_trained_bank_is_not_overwritten(tmp_path, mnist, registered):
    checkpoint(tmp_path / "teacher.pt")
    trained = TeacherBank(tmp_path / "teachers", TeacherSpec("mnist", "lkd_clash"), eval_images=50)
    trained.dir.mkdir(parents=True)
    trained.manifest_path.write_text(json.dumps({"format": 3, "snapshots": {"50": {"sha256": "0"}}}))
    bank = bank_of(tmp_path, "lkd_clash", {"arch": "tiny_cnn", "checkpoint": "teacher.pt"}, registered)
    with pytest.raises(PretrainedError, match="holds a bank the study trained"):
        bank.ensure(mnist, device="cpu")


def test_a_checkpoint_for_other_classes_says_so(tmp_path, mnist, registered):
    torch.save(build_model("tiny_cnn", (1, 28, 28), 5).state_dict(), tmp_path / "five.pt")
    bank = bank_of(tmp_path, "lkd_five", {"arch": "tiny_cnn", "checkpoint": "five.pt"}, registered)
    with pytest.raises(PretrainedError, match=r"five.pt was trained for 5 classes \(head.weight\), but mnist has 10"):
        bank.teacher.check(mnist)
