"""The KD schemes as run options (study/distill): views for function matching and their augmentation
control, from the validated configuration to the trainer, and from ``python -m study.distill``."""
from __future__ import annotations

import json

import pytest
import torch

from study.distill.cli import main
from study.distill.config import ConfigError, run_spec, validate_run
from study.distill.outputs import teacher_outputs
from study.distill.spec import build_trainer
from study.teachers.bank import TeacherBank, TeacherSpec
from study.train.data import train_val_split
from study.train.trainer import inference_model
from study.train.views import ViewBatches, ViewSet


def spec_of(config, epochs=1, train_subset=200):
    return run_spec(config, dataset="mnist", epochs=epochs, train_subset=train_subset)


@pytest.fixture(scope="module")
def bank_root(tmp_path_factory, mnist):
    root = tmp_path_factory.mktemp("banks")
    TeacherBank(root, TeacherSpec("mnist", "tiny_cnn"), eval_images=50).ensure(mnist, max_steps=150, device="cpu")
    return root


def capture_batches(trainer, steps=2):
    """Run ``steps`` optimizer steps and return the batches they trained on (after the transform)."""
    seen = []
    step = trainer.eager_step

    def spy(batch):
        seen.append({k: ([t.clone() for t in v] if isinstance(v, list) else v.clone()) for k, v in batch.items()})
        return step(batch)

    trainer.eager_step = spy
    trainer.config.max_steps = steps
    trainer.fit()
    return seen


# ----------------------------------------------------------------------------- views

def test_view_keys_are_validated_with_one_line_errors():
    for config, message in [({"views": "shift"}, "views='shift'"), ({"views_k": 0}, "views_k=0 is out of range"),
                            ({"views_k": 65}, r"out of range \[1, 64\]"), ({"noise_std": 0.0}, "noise_std=0.0"),
                            ({"mixup_alpha": -1.0}, "mixup_alpha"), ({"erase_min": 0.5, "erase_max": 0.2},
                                                                    "erase_min .* must be <= erase_max")]:
        with pytest.raises(ConfigError, match=message) as info:
            validate_run(config)
        assert "\n" not in str(info.value)
    spec = spec_of({"teachers": "tiny_cnn", "step_tiny_cnn": 100, "views": "noise", "views_k": 2, "noise_std": 0.3,
                    "mixup_alpha": 0.4})
    assert spec.views == ViewSet.create("noise", k=2, noise_std=0.3)  # mixup_alpha is not a noise parameter
    assert spec_of({"teachers": "none"}).views is None
    params = spec.params()
    assert (params["views"], params["views_k"], params["noise_std"]) == ("noise", 2, 0.3) and "mixup_alpha" not in params


@pytest.mark.parametrize("name", ["mixup", "noise", "erase"])
def test_kd_terms_read_the_teachers_outputs_on_the_view_the_student_sees(name, mnist, bank_root):
    spec = spec_of({"teachers": "tiny_cnn", "step_tiny_cnn": 100, "alpha": 0.5, "s_kl": 1.0, "s_fm": 1.0,
                    "views": name, "views_k": 3})
    split = train_val_split(mnist, 200, seed=0)
    outputs = teacher_outputs(spec, mnist, split, bank_root, device="cpu")
    assert outputs[0][0].shape == (200, 3, 10)
    trainer = build_trainer(spec, mnist, split, outputs, device="cpu", precision="fp32")
    assert isinstance(trainer.batch_transform, ViewBatches)
    bank = TeacherBank(bank_root, TeacherSpec("mnist", "tiny_cnn"))
    teacher = inference_model(bank.load(100, mnist), "cpu", bank.manifest()["precision"])
    for batch in capture_batches(trainer):
        with torch.inference_mode():
            out = teacher(batch["x"])
        torch.testing.assert_close(batch["teacher_logits"][0], out.logits.float(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(batch["teacher_features"][0], out.features.float(), rtol=1e-4, atol=1e-4)
        assert ("y_soft" in batch) == (name == "mixup")
    assert trainer.last_losses["kl"] > 0 and trainer.last_losses["fm"] > 0


def test_the_augmentation_control_is_ce_on_the_views_with_mixed_labels(mnist, tmp_path):
    """No teacher, the same views: CE on the mixed labels only; no bank is read."""
    spec = spec_of({"teachers": "none", "variant": "no_kd", "alpha": 1.0, "views": "mixup", "views_k": 2})
    split = train_val_split(mnist, 200, seed=0)
    assert teacher_outputs(spec, mnist, split, tmp_path / "no-banks") == [] and not (tmp_path / "no-banks").exists()
    trainer = build_trainer(spec, mnist, split, [], device="cpu", precision="fp32")
    batches = capture_batches(trainer)
    images = mnist.train_x[split.train]
    for batch in batches:
        assert "teacher_logits" not in batch and batch["y_soft"].shape == (len(batch["x"]), 10)
        assert not any(torch.equal(batch["x"][0], image) for image in images)  # a mix, never a plain image
        assert torch.allclose(batch["y_soft"].sum(1), torch.ones(len(batch["x"])))
    assert trainer.last_losses["kl"] == 0 and trainer.last_losses["ce"] > 0
    assert spec.params()["variant"] == "no_kd" and spec.params()["views"] == "mixup"


def test_views_from_the_command_line(mnist_root, tmp_path, capsys):
    code = main(["--data-root", str(mnist_root), "--no-download", "--output-dir", str(tmp_path), "--teacher",
                 "tiny_cnn", "--teacher-step", "50", "--alpha", "0", "--views", "erase", "--views-k", "2",
                 "--erase-max", "0.2", "--epochs", "1", "--train-subset", "200", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["views"], report["views_k"], report["erase_max"]) == ("erase", 2, 0.2)
    views = ViewSet.create("erase", k=2, erase_max=0.2)
    assert list((tmp_path / "teachers" / "mnist" / "tiny_cnn" / "seed-0").glob(f"step-000050.outputs-*-{views.tag}.pt"))
