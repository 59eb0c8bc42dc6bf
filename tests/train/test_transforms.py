"""Batch transforms (study/train/transforms.py): the linear snapshot schedule and following a trajectory."""
from __future__ import annotations

import pytest
import torch

from study.train.transforms import Compose, FollowTrajectory, compose, linear_schedule


def test_the_linear_schedule_starts_first_ends_last_and_never_goes_back():
    assert linear_schedule(3, 3) == [0, 1, 2]
    assert linear_schedule(3, 1) == [2]  # one epoch: the run's own snapshot
    assert linear_schedule(2, 4) == [0, 0, 1, 1]
    assert linear_schedule(11, 5) == [0, 3, 5, 8, 10]  # fewer epochs than snapshots: some are skipped
    for count in range(1, 15):
        for epochs in range(1, 20):
            schedule = linear_schedule(count, epochs)
            assert len(schedule) == epochs and schedule[-1] == count - 1
            assert schedule == sorted(schedule) and (epochs == 1 or schedule[0] == 0)
    with pytest.raises(ValueError):
        linear_schedule(0, 3)


def test_follow_trajectory_keeps_the_snapshot_of_the_epoch_for_each_teacher():
    n = 6
    stacked = torch.arange(3).float().view(1, 3, 1).expand(n, 3, 4)  # snapshot s: value s
    plain = torch.full((n, 4), 9.0)
    transform = FollowTrajectory([[0, 1, 2, 2], None])
    batch = {"x": torch.zeros(n, 1), "teacher_logits": [stacked, plain], "teacher_features": [stacked, plain]}
    for epoch, expected in enumerate([0, 1, 2, 2, 2]):  # after the schedule's end: its last snapshot
        out = transform(batch, epoch, torch.Generator())
        assert torch.equal(out["teacher_logits"][0], torch.full((n, 4), float(expected)))
        assert out["teacher_logits"][1] is plain and torch.equal(out["teacher_features"][0], out["teacher_logits"][0])
    assert compose([]) is None and compose([transform]) is transform
    assert isinstance(compose([transform, transform]), Compose)
