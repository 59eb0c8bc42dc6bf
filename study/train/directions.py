"""Fixed random input directions for Jacobian matching (losses/jacobian.py).

Each training image gets ``K`` directions, drawn once from a seed (the run keys ``jacobian_k``,
``jacobian_seed``): indices into a bank of :data:`DIRECTION_BANK` random images, each scaled to a
root-mean-square of 1 per pixel in normalized units (the dataset's pixel std). A direction is a
*tangent*, never an input: the student trains on the unchanged image, and the direction only says
along which way its derivative is taken, so nothing a student sees is shifted, translated or
otherwise moved (``tests/train/test_directions.py`` checks that the batch's images are untouched).

The teacher's derivatives along every (image, direction) are computed once per snapshot with
forward-mode AD and cached in its bank (:meth:`study.teachers.bank.TeacherBank.directional`,
``K x [N, classes]``); in training, :class:`DirectionBatches` picks one of each sample's ``K``
directions per step (seeded by the trainer, so a resumed run picks the same) and hands the
trainer the batch's directions and the teacher's derivatives along them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from losses.jacobian import JACOBIAN_K

from study.train.cuda_graphs import Tensors

#: Random directions the per-(image, k) indices point into: enough that images rarely share one,
#: small enough to keep on the device (2048 x 784 floats: 6.4 MB on MNIST).
DIRECTION_BANK = 2048
#: The per-sample direction indices among the trainer's tensors.
INDEX_KEY = "direction:index"


@dataclass(frozen=True)
class DirectionSet:
    """``k`` fixed random directions per training image, drawn from ``seed``; hashable, it keys the
    teacher's derivative caches."""

    k: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not JACOBIAN_K.contains(self.k):
            raise ValueError(f"jacobian_k must be in {JACOBIAN_K.bounds_text}, got {self.k}")

    def describe(self) -> dict[str, Any]:
        return {"kind": "random", "k": self.k, "seed": self.seed, "bank": DIRECTION_BANK}

    @property
    def tag(self) -> str:
        """A short, stable name of the direction set (part of a derivative cache's file name)."""
        return "jvp" + hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:10]

    def draw(self, n: int, image_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices [n, k] into the bank, the bank [DIRECTION_BANK, *image_shape]): the same for the same
        set, image count and shape in every process (numpy's PCG64 stream from ``seed``)."""
        rng = np.random.default_rng(self.seed)
        bank = torch.from_numpy(rng.standard_normal((DIRECTION_BANK, *image_shape), dtype=np.float32))
        bank /= bank.flatten(1).pow(2).mean(dim=1).sqrt().view(-1, *([1] * len(image_shape)))
        index = torch.from_numpy(rng.integers(0, DIRECTION_BANK, size=(n, self.k)))
        return index, bank


class DirectionBatches:
    """The trainer's batch transform for Jacobian matching: each sample of a step gets one of its ``K``
    directions (``batch["direction"]``, [b, C, H, W]) and each teacher's cached derivative along it
    (``batch["teacher_jvp"]``, one [b, classes] per teacher). The images themselves are not touched."""

    def __init__(self, directions: DirectionSet, bank: torch.Tensor) -> None:
        self.directions, self.bank = directions, bank

    def to(self, device: torch.device | str) -> "DirectionBatches":
        self.bank = self.bank.to(device)
        return self

    def __call__(self, batch: Tensors, epoch: int, generator: torch.Generator) -> Tensors:
        x = batch["x"]
        rows = torch.arange(len(x), device=x.device)
        chosen = torch.randint(self.directions.k, (len(x),), generator=generator).to(x.device)
        out = {key: value for key, value in batch.items() if key not in (INDEX_KEY, "teacher_jvp")}
        out["direction"] = self.bank[batch[INDEX_KEY][rows, chosen].to(self.bank.device)].to(x.dtype)
        out["teacher_jvp"] = [value[rows, chosen] for value in batch["teacher_jvp"]]
        return out
