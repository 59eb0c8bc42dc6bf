"""Jacobian matching (losses/jacobian.py, study/train/directions.py): fixed random directions, the
teacher's exact derivatives along them cached in its bank, the student's from its own forward pass."""
from __future__ import annotations

import pytest
import torch

from losses import LeveledKDConfig, LeveledKDLoss
from losses.jacobian import relative_mse
from study.distill.config import ConfigError, run_spec
from study.distill.outputs import teacher_outputs
from study.distill.spec import build_trainer
from study.teachers.bank import TeacherBank, TeacherSpec
from study.train.data import train_val_split
from study.train.directions import INDEX_KEY, DirectionBatches, DirectionSet


@pytest.fixture
def bank(tmp_path, mnist):
    bank = TeacherBank(tmp_path / "teachers", TeacherSpec("mnist", "tiny_cnn"), eval_images=50)
    bank.ensure(mnist, max_steps=50, device="cpu")
    return bank


def test_directions_are_fixed_unit_rms_and_never_move_the_images():
    directions = DirectionSet(k=3, seed=5)
    index, bank = directions.draw(10, (1, 8, 8))
    again, bank_again = directions.draw(10, (1, 8, 8))
    assert torch.equal(index, again) and torch.equal(bank, bank_again) and index.shape == (10, 3)
    assert torch.allclose(bank.flatten(1).pow(2).mean(1), torch.ones(len(bank)), atol=1e-5)
    assert not torch.equal(DirectionSet(k=3, seed=6).draw(10, (1, 8, 8))[0], index)
    x = torch.randn(10, 1, 8, 8)
    batch = {"x": x, "y": torch.zeros(10, dtype=torch.long), INDEX_KEY: index, "teacher_jvp": [torch.randn(10, 3, 4)]}
    out = DirectionBatches(directions, bank)(batch, 0, torch.Generator().manual_seed(0))
    assert out["x"] is x  # the student trains on the images themselves: a direction is a tangent, not an input
    assert out["direction"].shape == x.shape and out["teacher_jvp"][0].shape == (10, 4)
    picked = [int((bank.flatten(1) == d.flatten()).all(1).nonzero()) for d in out["direction"]]
    assert all(p in index[i].tolist() for i, p in enumerate(picked))  # one of each image's own K


def test_the_teachers_cached_derivatives_are_its_exact_directional_derivatives(bank, mnist, monkeypatch):
    directions = DirectionSet(k=2, seed=0)
    rows = torch.arange(40)
    jvp = bank.directional(50, mnist, rows, directions, device="cpu")
    assert jvp.shape == (40, 2, mnist.num_classes) and jvp.dtype == torch.float32
    teacher = bank.load(50, mnist).eval().double()
    index, dirs = directions.draw(40, mnist.input_shape)
    h, x = 1e-4, mnist.train_x[rows].double()
    for k in range(2):  # central differences in float64 agree with the forward-mode derivatives
        v = dirs[index[:, k]].double()
        with torch.no_grad():
            finite = (teacher(x + h * v)[0] - teacher(x - h * v)[0]) / (2 * h)
        error = (jvp[:, k].double() - finite).abs()
        # equal up to fp32 rounding, except where a difference step straddles a ReLU kink (a few elements)
        assert error.norm() / finite.norm() < 1e-2 and (error < 1e-4).double().mean() > 0.9
    monkeypatch.setattr(TeacherBank, "load", lambda *a, **k: pytest.fail("the teacher was run again"))
    assert torch.equal(bank.directional(50, mnist, rows, directions, device="cpu"), jvp)


def test_the_term_is_zero_when_the_student_matches_and_about_one_when_it_is_flat():
    teacher = torch.randn(32, 10)
    assert relative_mse(teacher.clone(), teacher).item() == pytest.approx(0.0)
    assert relative_mse(torch.zeros(32, 10), teacher).item() == pytest.approx(1.0)
    assert relative_mse(torch.zeros(32, 10), 100 * teacher).item() == pytest.approx(1.0)  # scale-free
    loss = LeveledKDLoss(LeveledKDConfig(alpha=0.5, s_kl=0.0, s_jacobian=1.0), 8, [8], [1.0])
    student = torch.randn(32, 10, requires_grad=True)
    parts = loss((torch.randn(32, 10), torch.randn(32, 8)), torch.zeros(32, dtype=torch.long),
                 [torch.randn(32, 10)], [torch.randn(32, 8)], student_jvp=student, teacher_jvp=[teacher])
    parts["total"].backward()
    assert parts["jacobian"] > 0 and student.grad is not None and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="directional derivatives"):
        loss((torch.randn(4, 10), torch.randn(4, 8)), torch.zeros(4, dtype=torch.long), [torch.randn(4, 10)],
             [torch.randn(4, 8)])


def test_a_student_learns_to_follow_the_teachers_derivatives(bank, mnist):
    """KL + Jacobian matching end to end through the shared trainer: the student's derivatives (from
    forward-mode AD through its own training forward pass) move towards the teacher's."""
    spec = run_spec({"teachers": "tiny_cnn", "step_tiny_cnn": 50, "alpha": 0.5, "s_kl": 1.0, "s_jacobian": 1.0,
                     "jacobian_k": 2}, dataset="mnist", epochs=10, train_subset=1024)
    assert spec.directions == DirectionSet(k=2, seed=0) and spec.loss_config.variant == "kl+jacobian"
    split = train_val_split(mnist, 1024, seed=0)
    outputs = teacher_outputs(spec, mnist, split, bank.dir.parents[2], device="cpu")
    assert len(outputs[0]) == 3 and outputs[0][2].shape == (1024, 2, 10)
    trainer = build_trainer(spec, mnist, split, outputs, device="cpu", precision="fp32")
    trainer.config.max_steps = trainer.steps_per_epoch
    trainer.fit()
    first = trainer.last_losses["jacobian"]
    trainer.config.max_steps = None  # the run's 10 epochs
    trainer.fit()
    assert 0 < trainer.last_losses["jacobian"] < 0.5 * first


@pytest.mark.parametrize("extra, message", [
    ({"views": "erase"}, "does not combine with views"),
    ({"trajectory": "bank"}, "does not combine with a trajectory"),
    ({"jacobian_k": 2.5}, "jacobian_k=2.5 must be a whole number"),
])
def test_jacobian_matching_refuses_what_it_cannot_cache_in_one_line(extra, message):
    with pytest.raises(ConfigError, match=message):
        run_spec({"teachers": "cnn_1", "step_cnn_1": 2500, "s_jacobian": 1.0, **extra}, dataset="mnist", epochs=2,
                 train_subset=None)
