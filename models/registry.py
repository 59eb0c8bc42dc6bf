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
_ROLES: dict[str, frozenset[str]] = {}
ROLES = ("teacher", "student")


def register_model(name: str, roles: Sequence[str] = ROLES) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make ``build_model(name, ...)`` construct this class.

    ``roles`` says what the model may be in a run (its configuration, not its name):
    the CNN and involution teachers are teachers only; MLPs are students *and* teachers,
    because an MLP teacher distilling into an MLP student is the control that tells an
    inductive-bias transfer apart from generic KD.
    """
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"model {name!r}: roles must be a non-empty subset of {ROLES}, got {list(roles)}")

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = cls
        _ROLES[name] = frozenset(roles)
        return cls

    return decorate


def model_names(role: str | None = None) -> list[str]:
    """Registered models, or those that may take ``role`` (``teacher`` / ``student``)."""
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return sorted(n for n in _MODELS if role is None or role in _ROLES[n])


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
