"""Batch transforms: the trainer's one hook for turning a sliced batch into the batch a step trains on.

The trainer slices every per-sample tensor by the epoch's permutation, then, when it has a
``batch_transform``, calls ``transform(batch, epoch, generator)`` and trains on what it returns.
``generator`` is a CPU generator seeded by (run seed, step), so a transform that draws random
numbers from it makes the same choices when a run is resumed from a checkpoint. Schemes that change
what a step sees (views of the images, a teacher snapshot that follows the epoch) are transforms,
not branches inside the loop; they are built by :func:`study.distill.spec.build_trainer`.

A transform may read and drop keys the trainer slices for it (per-sample parameters) and may add
``y_soft`` (class probabilities the CE term reads instead of ``y``, e.g. mixup's mixed labels).
"""
from __future__ import annotations

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
