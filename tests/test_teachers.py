import json

import pytest
import torch

from study import teachers as teachers_module
from study.teachers import SnapshotError, TeacherBank, TeacherSpec, is_snapshot_step, sha256, snapshot_steps


def test_snapshot_schedule_exactly():
    assert snapshot_steps(500) == list(range(50, 501, 50))
    assert snapshot_steps(2600) == [50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 1000, 1500, 2000, 2500]
    assert snapshot_steps(120) == [50, 100]
    assert snapshot_steps(10) == []
    assert [s for s in range(1, 3001) if is_snapshot_step(s)] == snapshot_steps(3000)


@pytest.fixture
def bank(tmp_path, mnist):
    bank = TeacherBank(tmp_path / "teachers", TeacherSpec("mnist", "tiny_cnn"), eval_images=100)
    bank.ensure(mnist, max_steps=100, device="cpu")
    return bank


def test_bank_has_manifest_with_accuracy_and_hashes(bank):
    manifest = json.loads(bank.manifest_path.read_text())
    assert sorted(map(int, manifest["snapshots"])) == [50, 100]
    for step, record in manifest["snapshots"].items():
        assert record["sha256"] == sha256(bank.snapshot_path(int(step)))
        assert 0.0 <= record["clean_acc"] <= 1.0 and 0.0 <= record["translated_acc"] <= 1.0
    assert manifest["teacher"]["arch"] == "tiny_cnn"


def test_second_call_trains_nothing(bank, mnist, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the bank was retrained")

    monkeypatch.setattr(teachers_module.Trainer, "fit", no_training)
    assert bank.ensure(mnist, max_steps=100) == [50, 100]
    assert TeacherBank(bank.dir.parents[2], bank.spec).ensure(mnist, max_steps=80) == [50]


def test_extending_a_bank_continues_instead_of_retraining(bank, mnist, tmp_path):
    before = sha256(bank.snapshot_path(50))
    bank.ensure(mnist, max_steps=150, device="cpu")
    assert bank.steps() == [50, 100, 150]
    assert sha256(bank.snapshot_path(50)) == before
    fresh = TeacherBank(tmp_path / "fresh", bank.spec, eval_images=100)
    fresh.ensure(mnist, max_steps=150, device="cpu")
    a, b = bank.load(150, mnist), fresh.load(150, mnist)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb)


def test_corrupted_snapshot_is_refused(bank, mnist):
    path = bank.snapshot_path(50)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="sha256"):
        bank.load(50, mnist)
    with pytest.raises(SnapshotError, match="available: \\[50, 100\\]"):
        bank.load(75, mnist)


def test_output_cache_is_computed_once_and_matches_the_teacher(bank, mnist, monkeypatch):
    logits, features = bank.outputs(100, mnist, device="cpu")  # every training image
    assert logits.shape == (len(mnist.train_x), 10) and features.shape == (len(mnist.train_x), 8)
    teacher = bank.load(100, mnist)
    with torch.inference_mode():
        expected = teacher(mnist.train_x[:64])
    torch.testing.assert_close(logits[:64], expected.logits, rtol=1e-4, atol=1e-4)
    assert bank.outputs_path(100).is_file()
    subset = torch.arange(10, 50)
    sub_logits, _ = bank.outputs(100, mnist, subset, device="cpu")
    torch.testing.assert_close(sub_logits, logits[10:50])
    assert bank.outputs_path(100, subset) != bank.outputs_path(100) and bank.outputs_path(100, subset).is_file()
    assert not bank.outputs_path(50).exists()  # a snapshot no student used costs nothing

    monkeypatch.setattr(TeacherBank, "load", lambda *a, **k: pytest.fail("teacher was run again"))
    again, _ = bank.outputs(100, mnist, device="cpu")
    assert torch.equal(again, logits)


def test_label_smoothed_teacher_is_a_separate_bank(tmp_path):
    plain = TeacherBank(tmp_path, TeacherSpec("mnist", "cnn_1"))
    smooth = TeacherBank(tmp_path, TeacherSpec("mnist", "cnn_1", label_smoothing=0.1))
    assert plain.dir != smooth.dir and "ls0.1" in str(smooth.dir)
