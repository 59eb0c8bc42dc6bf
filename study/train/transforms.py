"""Batch transforms: the trainer's one hook for turning a sliced batch into the batch a step trains on.

The trainer slices every per-sample tensor by the epoch's permutation, then, when it has a
``batch_transform``, calls ``transform(batch, epoch, generator)`` and trains on what it returns.
``generator`` is a CPU generator seeded by (run seed, step), so a transform that draws random
numbers from it makes the same choices when a run is resumed from a checkpoint. Schemes that change
what a step sees (views of the images, a teacher snapshot that follows the epoch) are transforms,
not branches inside the loop; they are built by :func:`study.distill.spec.build_trainer`.

A transform may read and drop keys the trainer slices for it (per-sample parameters) and may add
``y_soft`` (class probabilities the CE term reads instead of ``y``, e.g. mixup's mixed labels).
:class:`FollowTrajectory` (trajectory distillation) lives here; the views are study/train/views.py.
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence

import torch

from study.train.cuda_graphs import Tensors


class BatchTransform(Protocol):
    """``__call__(batch, epoch, generator) -> batch``; ``to(device)`` moves the tensors it holds
    itself (the trainer calls it once, after moving its own tensors)."""

    def __call__(self, batch: Tensors, epoch: int, generator: torch.Generator) -> Tensors: ...

    def to(self, device: torch.device | str) -> "BatchTransform": ...


class Compose:
    """Apply ``transforms`` in order (each with the same epoch and generator)."""

    def __init__(self, transforms: Sequence[BatchTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, batch: Tensors, epoch: int, generator: torch.Generator) -> Tensors:
        for transform in self.transforms:
            batch = transform(batch, epoch, generator)
        return batch

    def to(self, device: torch.device | str) -> "Compose":
        self.transforms = [t.to(device) for t in self.transforms]
        return self


def compose(transforms: Sequence[BatchTransform]) -> BatchTransform | None:
    """None for no transform, the transform itself for one, a :class:`Compose` for several."""
    if not transforms:
        return None
    return transforms[0] if len(transforms) == 1 else Compose(transforms)


def linear_schedule(count: int, epochs: int) -> list[int]:
    """Which of ``count`` ordered items (teacher snapshots) each of ``epochs`` epochs uses: epoch 0
    the first, the last epoch the last, the epochs between linearly in between (rounded to the
    nearest), so fewer epochs than items skip some and more epochs stay on some for several."""
    if count < 1 or epochs < 1:
        raise ValueError(f"a schedule needs at least one item and one epoch, got {count} and {epochs}")
    if epochs == 1:
        return [count - 1]
    return [int(math.floor(e * (count - 1) / (epochs - 1) + 0.5)) for e in range(epochs)]


class FollowTrajectory:
    """Each teacher's outputs come stacked over its snapshots (``[n, S, ...]``, in trajectory order);
    a batch of epoch ``e`` keeps those of snapshot ``positions[t][e]`` (the last one after the
    schedule's end). ``None`` for a teacher without a trajectory (its outputs pass unchanged)."""

    def __init__(self, positions: Sequence[Sequence[int] | None]) -> None:
        self.positions = [list(p) if p is not None else None for p in positions]

    def position(self, teacher: int, epoch: int) -> int | None:
        schedule = self.positions[teacher]
        return None if schedule is None else schedule[min(epoch, len(schedule) - 1)]

    def __call__(self, batch: Tensors, epoch: int, generator: torch.Generator) -> Tensors:
        out = dict(batch)
        for key in ("teacher_logits", "teacher_features"):
            if key in batch:
                out[key] = [value if self.position(t, epoch) is None else value[:, self.position(t, epoch)]
                            for t, value in enumerate(batch[key])]
        return out

    def to(self, device: torch.device | str) -> "FollowTrajectory":
        return self
