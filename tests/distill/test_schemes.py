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


# ----------------------------------------------------------------------------- trajectory

def test_trajectory_keys_resolve_to_snapshots_ending_at_the_teacher_step():
    def refs(trajectory, step=500):
        return spec_of({"teachers": "tiny_cnn", "step_tiny_cnn": step, "trajectory": trajectory}).teachers[0]

    assert refs("none").trajectory == ()
    assert refs("bank").trajectory == tuple(range(50, 501, 50))
    assert refs([100, 250]).trajectory == (100, 250, 500) == refs("100,250").trajectory  # ends at the teacher step
    assert refs([100, 500]).trajectory == (100, 500) and refs(250).trajectory == (250, 500)
    ref = refs("bank", step=1000)
    assert ref.schedule(3) == [50, 300, 1000] and ref.snapshots_used(3) == [50, 300, 1000]  # the middle snapshot
    for bad, message in [([500, 100], "must increase"), ("1000", "after the teacher's snapshot 500"),
                         ("soon", "none, bank or snapshot steps"), ([0, 50], "positive")]:
        with pytest.raises(ConfigError, match=message):
            refs(bad)
    params = spec_of({"teachers": "tiny_cnn", "step_tiny_cnn": 150, "trajectory": "bank"}).params()
    assert params["trajectory"] == "50,100,150" and params["teacher_0_trajectory"] == "50,100,150"


@pytest.mark.parametrize("views", ["none", "noise"])
def test_the_kd_terms_read_the_snapshot_of_the_epoch(views, mnist, bank_root):
    """Three epochs over the snapshots 50, 100, 150: every batch of epoch e carries the outputs of the
    e-th snapshot on the images the student sees (with views too); one cache per snapshot used."""
    epochs = 3
    spec = spec_of({"teachers": "tiny_cnn", "step_tiny_cnn": 150, "trajectory": "bank", "alpha": 0.5,
                    "views": views, "views_k": 2}, epochs=epochs, train_subset=120)
    split = train_val_split(mnist, 120, seed=0)
    outputs = teacher_outputs(spec, mnist, split, bank_root, device="cpu")
    assert outputs[0][0].shape == ((120, 3, 2, 10) if views != "none" else (120, 3, 10))
    trainer = build_trainer(spec, mnist, split, outputs, device="cpu", precision="fp32")
    bank = TeacherBank(bank_root, TeacherSpec("mnist", "tiny_cnn"))
    precision = bank.manifest()["precision"]
    teachers = {step: inference_model(bank.load(step, mnist), "cpu", precision) for step in (50, 100, 150)}
    batches = capture_batches(trainer, steps=epochs * trainer.steps_per_epoch)
    assert len(batches) == 3
    for epoch, (batch, step) in enumerate(zip(batches, (50, 100, 150))):
        with torch.inference_mode():
            expected = {s: t(batch["x"]).logits.float() for s, t in teachers.items()}
        torch.testing.assert_close(batch["teacher_logits"][0], expected[step], rtol=1e-4, atol=1e-4)
        assert not torch.allclose(batch["teacher_logits"][0], expected[50 if step != 50 else 150], atol=1e-3)


def test_a_short_run_reads_only_the_snapshots_its_epochs_use(mnist, tmp_path):
    root = tmp_path / "banks"
    bank = TeacherBank(root, TeacherSpec("mnist", "tiny_cnn"), eval_images=50)
    bank.ensure(mnist, max_steps=150, device="cpu")
    spec = spec_of({"teachers": "tiny_cnn", "step_tiny_cnn": 150, "trajectory": "bank"}, epochs=2, train_subset=100)
    teacher_outputs(spec, mnist, train_val_split(mnist, 100, seed=0), root, device="cpu")
    assert sorted(p.name[:11] for p in bank.dir.glob("*.outputs*.pt")) == ["step-000050", "step-000150"]


def test_trajectory_from_the_command_line(mnist_root, tmp_path, capsys):
    args = ["--data-root", str(mnist_root), "--no-download", "--output-dir", str(tmp_path), "--teacher", "tiny_cnn",
            "--teacher-step", "100", "--epochs", "2", "--train-subset", "200", "--json"]
    assert main([*args, "--trajectory", "bank"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trajectory"] == "50,100" and report["teacher_0_step"] == 100
    from study.errors import InputError

    with pytest.raises(InputError, match="--trajectory 75 is not a snapshot step"):
        main([*args, "--trajectory", "75"])


# ----------------------------------------------------------------------------- patient training

def test_lr_schedule_is_a_run_key_that_reaches_the_trainer(mnist, mnist_root, tmp_path, capsys):
    spec = spec_of({"teachers": "none", "alpha": 1.0, "lr_schedule": "cosine"}, epochs=2)
    assert spec.lr_schedule == "cosine" and spec.params()["lr_schedule"] == "cosine"
    trainer = build_trainer(spec, mnist, train_val_split(mnist, 200, seed=0), [], device="cpu", precision="fp32")
    assert trainer.scheduler is not None and trainer.scheduler.T_max == trainer.total_steps == 2 * 2
    assert spec_of({"teachers": "none"}).lr_schedule == "constant"
    with pytest.raises(ConfigError, match="lr_schedule='linear'"):
        validate_run({"lr_schedule": "linear"})
    assert main(["--data-root", str(mnist_root), "--no-download", "--output-dir", str(tmp_path), "--teacher", "none",
                 "--lr-schedule", "cosine", "--epochs", "1", "--train-subset", "200", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lr_schedule"] == "cosine"
