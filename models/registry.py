"""Model registry: every architecture is one decorated class, built by name.

Every model's ``forward`` returns :class:`ModelOutput` (logits and the penultimate
feature vector), so feature-matching losses can use any teacher/student pair
without knowing the architecture.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn


class ModelOutput(NamedTuple):
    """Logits for the loss and accuracy, features for feature matching."""

    logits: torch.Tensor
    features: torch.Tensor


_MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make ``build_model(name, ...)`` construct this class."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = cls
        return cls

    return decorate


def model_names() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Build a registered model for images of ``input_shape`` = (C, H, W)."""
    try:
        cls = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(model_names())}") from None
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
    return cls(tuple(input_shape), num_classes)


def feature_dim(model: nn.Module) -> int:
    """Size of the feature vector a registered model returns."""
    return int(model.feature_dim)
