"""A trained model as a plain classifier, for MLflow and anyone who only wants predictions.

Every registered model returns :class:`~models.registry.ModelOutput` (logits and
features) because the distillation losses need both. A served or downloaded
student should answer the one question a user asks, "which class?", with one
tensor: MLflow's signature describes a single output, and ``pyfunc`` can only
turn a tensor (not a NamedTuple) into a numpy array. :class:`LogitsOnly` wraps a
model to do that, and accepts images either as ``[N, C, H, W]`` or flattened to
``[N, C*H*W]`` (a 2-D array is what MLflow's tensor signature, JSON serving and
a CSV file carry most simply).

It lives in ``models/`` (not ``study/``) on purpose: MLflow pickles the module
with its class by reference and ships this package beside it (``code_paths``),
so loading needs only torch and this folder, never the study's dependencies.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class LogitsOnly(nn.Module):
    """``model`` with its logits as the only output; input normalized images, flat or not.

    ``mean`` / ``std`` (per channel) are the normalization the model was trained with;
    they are kept as attributes so that whoever loads the module can prepare raw
    images the same way (``(pixels / 255 - mean) / std``). They are not applied here:
    the study's data, tests and logged input examples are already normalized.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], mean: Sequence[float] = (),
                 std: Sequence[float] = ()) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
        self.model = model
        self.input_shape = tuple(int(d) for d in input_shape)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @property
    def input_size(self) -> int:
        """Length of one flattened image (C*H*W)."""
        return math.prod(self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            if x.shape[1] != self.input_size:
                raise ValueError(f"expected flattened images of {self.input_size} values "
                                 f"{self.input_shape}, got {x.shape[1]}")
            x = x.reshape(x.shape[0], *self.input_shape)
        return self.model(x)[0]


def logits_only(model: nn.Module, input_shape: Sequence[int], mean: Sequence[float] = (),
                std: Sequence[float] = ()) -> LogitsOnly:
    """An eval-mode :class:`LogitsOnly` around ``model`` (moved to the CPU in place, not copied)."""
    return LogitsOnly(model.cpu(), input_shape, mean, std).eval()
