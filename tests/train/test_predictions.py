"""Per-image results: the evaluation keeps which images each shift got right, files round-trip,
and the robustness metrics (translated, small-shift, translated/clean) are what the docs say."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models import ModelOutput
from study.train.data import shift_grid
from study.distill.spec import Patience
from study.train.evaluation import translation_accuracy
from study.train.predictions import PerImage, load_predictions, save_predictions


class PixelProbe(nn.Module):
    """Predicts class 1 when pixel (10, 10) is bright, else 0: right or wrong depends on the shift."""

    def forward(self, x):
        bright = (x[:, 0, 10, 10] > 0.5).float()
        logits = torch.stack([1 - bright, bright], dim=1)
        return ModelOutput(logits, logits)


def test_per_image_correctness_matches_per_shift_accuracy():
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(37, 1, 28, 28, generator=g) > 0.5).float()
    labels = (images[:, 0, 10, 10] > 0.5).long()  # right at (0, 0) by construction
    shifts = shift_grid()
    result = translation_accuracy(PixelProbe(), images, labels, shifts, max_batch=33 * 5, keep_per_image=True)
    assert result.correct.shape == (33, 37) and result.correct.dtype == torch.bool
    assert result.correct[0].all()  # clean: all right
    for row, (shift, acc) in enumerate(result.per_shift.items()):
        assert shift == shifts[row]
        assert result.correct[row].float().mean().item() == pytest.approx(acc)
    per_image = result.per_image(torch.arange(100, 137))
    assert per_image.accuracy("translated") == pytest.approx(result.translated_acc)
    assert per_image.accuracy("small_shift") == pytest.approx(result.small_shift_acc)
    assert per_image.accuracy("clean") == 1.0
    assert result.translated_over_clean == pytest.approx(result.translated_acc / result.clean_acc)
    assert 0.2 < result.translated_acc < 0.8  # the probe really is shift-sensitive


def test_metric_definitions_pick_the_declared_shifts():
    shifts = tuple(shift_grid())
    record = PerImage(shifts, np.arange(3), np.zeros((33, 3), dtype=bool))
    assert record.shift_mask("clean").sum() == 1
    assert record.shift_mask("translated").sum() == 32
    small = [s for s, keep in zip(shifts, record.shift_mask("small_shift")) if keep]
    assert len(small) == 16 and {max(abs(dx), abs(dy)) for dx, dy in small} == {2, 4}
    with pytest.raises(ValueError, match="unknown metric"):
        record.shift_mask("rotated")


def test_predictions_round_trip_with_packed_bits(tmp_path):
    rng = np.random.default_rng(0)
    shifts = tuple(shift_grid())
    val = PerImage(shifts, np.arange(0, 130, 10), rng.random((33, 13)) > 0.5)  # 13: not a multiple of 8
    test = PerImage(shifts, np.arange(1001), rng.random((33, 1001)) > 0.3)
    path = save_predictions(tmp_path / "p.npz", {"val": val, "test": test})
    assert path.stat().st_size < 33 * 1001 / 8 + 8 * 1001 + 3000  # bits + indices + zip headers, not bool bytes
    back = load_predictions(path)
    for split, original in (("val", val), ("test", test)):
        assert back[split].shifts == shifts
        np.testing.assert_array_equal(back[split].indices, original.indices)
        np.testing.assert_array_equal(back[split].correct, original.correct)
    assert not list(tmp_path.glob("*.tmp"))


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        PerImage(((0, 0), (2, 0)), np.arange(4), np.zeros((2, 5), dtype=bool))


def test_patience_stops_after_epochs_without_gain():
    rule = Patience(patience=2)
    assert [rule.update(v, e) for e, v in enumerate([0.5, 0.6, 0.6, 0.59], start=1)] == [False, False, False, True]
    assert (rule.best, rule.best_epoch) == (0.6, 2)
    never = Patience(patience=0)
    assert not any(never.update(0.1, e) for e in range(10))
    resumed = Patience(**{"patience": 2, "best": 0.6, "best_epoch": 2, "bad_epochs": 1})
    assert resumed.update(0.6, 4)  # a restored trial continues the count


def test_a_minimum_of_epochs_holds_off_early_stopping():
    """A noisy early peak stops a student at epoch 3 without a floor; with ``min_epochs`` 6 it trains
    on, and stops at the first epoch past the floor that patience allows."""
    values = [0.40, 0.45, 0.44, 0.43, 0.42, 0.41, 0.40, 0.39]
    plain, floored = Patience(patience=2), Patience(patience=2, min_epochs=6)
    assert [plain.update(v, e) for e, v in enumerate(values[:4], start=1)] == [False, False, False, True]
    assert [floored.update(v, e) for e, v in enumerate(values, start=1)] == [False] * 5 + [True, True, True]
    assert floored.best_epoch == 2  # the floor delays the stop, not what counts as the best epoch
