"""Robustness families (study/train/robustness.py): translation is the default and matches the
study's own evaluator; rotation, scaling and noise have their own grids and metric names; a family of
one's own is one registration."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models import ModelOutput
from study.train import robustness
from study.train.data import shift_grid
from study.train.evaluation import translation_accuracy
from study.train.robustness import Family, RobustnessError, family_accuracy, get_family, register_family


class Brightest(nn.Module):
    """Classifies by which half (left/right) of the image is brighter: not translation invariant."""

    def forward(self, x):
        w = x.shape[-1]
        left, right = x[..., : w // 2].mean(dim=(1, 2, 3)), x[..., w // 2:].mean(dim=(1, 2, 3))
        logits = torch.stack([left, right], dim=1)
        return ModelOutput(logits, logits)


def halves(n=20, size=12):
    x = torch.zeros(n, 1, size, size)
    y = torch.arange(n) % 2
    for i, label in enumerate(y.tolist()):
        x[i, :, 3:9, (1 if label == 0 else 7):(1 if label == 0 else 7) + 4] = 1.0
    return x, y


def test_translation_is_the_study_s_own_probe():
    x, y = halves()
    family = get_family("translation")
    assert family.grid == tuple(shift_grid()) and family.metric == "translated_acc"
    ours = family_accuracy(Brightest(), x, y, family, (0.0,), (1.0,))
    theirs = translation_accuracy(Brightest(), x, y, shift_grid(), 0.0)
    assert ours.per_point == theirs.per_shift and ours.value == pytest.approx(theirs.translated_acc)
    assert ours.metrics("test_")["test_acc_translation/dx_2_dy_0"] == theirs.per_shift[(2, 0)]


@pytest.mark.parametrize("name, metric, point, label", [
    ("rotation", "rotated_acc", -30, "deg_-30"),
    ("scaling", "scaled_acc", 0.75, "scale_0.75"),
    ("noise", "noisy_acc", 0.2, "sigma_0.2"),
])
def test_each_family_has_its_grid_and_metric_names(name, metric, point, label):
    x, y = halves()
    family = get_family(name)
    result = family_accuracy(Brightest(), x, y, family, (0.5,), (0.5,))
    assert result.clean_acc == 1.0 and point in result.per_point and 0.0 <= result.value <= 1.0
    metrics = result.metrics("test_")
    assert set(metrics) == set(family.metric_names("test_")) and f"test_acc_{name}/{label}" in metrics
    assert metrics[f"test_{metric}"] == result.value
    views = family.views(x, family.grid, torch.tensor([0.5]), torch.tensor([0.5]))
    assert views.shape == (len(family.grid), *x.shape) and torch.equal(views[0], x)  # the identity first


def test_rotation_by_180_and_noise_are_what_they_say():
    x, _ = halves(4)
    half_turn = get_family("rotation").views(x, [180], torch.tensor([0.0]), torch.tensor([1.0]))[0]
    assert torch.allclose(half_turn, torch.flip(x, dims=(-2, -1)), atol=1e-5)
    noise = get_family("noise")
    a = noise.views(x, [0.1], torch.tensor([0.5]), torch.tensor([0.25]))[0] - x
    b = noise.views(x, [0.1], torch.tensor([0.5]), torch.tensor([0.25]))[0] - x
    assert torch.equal(a, b) and a.std().item() == pytest.approx(0.4, rel=0.1)  # seeded; 0.1 / 0.25 normalized


def test_a_family_of_one_s_own_is_one_registration(monkeypatch):
    monkeypatch.setattr(robustness, "_FAMILIES", dict(robustness._FAMILIES))
    flip = register_family(Family("flip", "flipped_acc", (False, True), False,
                                  lambda x, grid, mean, std: torch.stack([x.flip(-1) if f else x for f in grid]),
                                  lambda f: "flipped" if f else "none"))
    x, y = halves()
    result = family_accuracy(Brightest(), x, y, flip, (0.0,), (1.0,))
    assert result.metrics() == {"flipped_acc": 0.0, "acc_flip/none": 1.0, "acc_flip/flipped": 0.0}
    with pytest.raises(RobustnessError, match="unknown robustness family 'blur'; valid: translation, rotation"):
        get_family("blur")
    with pytest.raises(RobustnessError, match="registered twice"):
        register_family(Family("flip", "x", (0,), 0, flip.views, str))
