"""Model registry: every architecture is one decorated class (or factory function), built by name.

Every model's ``forward`` returns :class:`ModelOutput` (logits and the penultimate
feature vector), so feature-matching losses can use any teacher/student pair
without knowing the architecture. A model that returns logits only is registered
with ``outputs="logits"`` and adapted when built (:mod:`models.adapters`).

Models are plug-ins: a user's module (named by ``--import`` or a space's ``imports:``)
registers its own with the same decorator, without editing this package.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn


class ModelOutput(NamedTuple):
    """Logits for the loss and accuracy, features for feature matching."""

    logits: torch.Tensor
    features: torch.Tensor


#: ``factory(input_shape, num_classes) -> nn.Module``: a model class, or a function that builds one.
Factory = Callable[[tuple[int, int, int], int], nn.Module]
OUTPUTS = ("model_output", "logits", "auto")

_MODELS: dict[str, Factory] = {}
_ROLES: dict[str, frozenset[str]] = {}
_ADAPT: dict[str, str | None] = {}  # name -> the feature layer of a logits-only model ("" = its last Linear)
ROLES = ("teacher", "student")


def register_model(name: str, roles: Sequence[str] = ROLES, outputs: str = "model_output",
                   features: str | None = None) -> Callable[[Factory], Factory]:
    """Decorator (of a class or a factory function): make ``build_model(name, ...)`` construct it as
    ``factory(input_shape, num_classes)``.

    ``roles`` says what the model may be in a run (its configuration, not its name):
    the CNN and involution teachers are teachers only; MLPs are students *and* teachers,
    because an MLP teacher distilling into an MLP student is the control that tells an
    inductive-bias transfer apart from generic KD.

    ``outputs="logits"``: the model's forward returns logits only; the built model is adapted
    (:func:`models.adapters.as_model_output`) to also return its features: the output of its layer
    ``features`` (a dotted submodule name), else the input of its last ``nn.Linear``.
    ``outputs="auto"``: adapted when one forward pass shows that it returns logits only (a class
    named by ``module:Class``). Registering the same class or function again under its name (a module
    imported twice) is harmless.
    """
    unknown = set(roles) - set(ROLES)
    if unknown or not roles or isinstance(roles, str):
        raise ValueError(f"model {name!r}: roles must be a non-empty subset of {ROLES}, got {list(roles)}")
    if outputs not in OUTPUTS:
        raise ValueError(f"model {name!r}: outputs must be one of {OUTPUTS}, got {outputs!r}")
    if not isinstance(name, str) or not name or any(c in name for c in "+/ ,"):
        raise ValueError(f"a model name must be a non-empty string without '+', '/', ',' or spaces, got {name!r}")

    def decorate(factory: Factory) -> Factory:
        known = _MODELS.get(name)
        if known is not None and _origin(known) != _origin(factory):
            raise ValueError(f"model {name!r} is registered twice ({_origin(known)} and {_origin(factory)}); "
                             f"give one of them another name")
        _MODELS[name] = factory
        _ROLES[name] = frozenset(roles)
        _ADAPT[name] = {"logits": features or "", "auto": f"auto:{features or ''}"}.get(outputs)
        return factory

    return decorate


def _origin(factory: Factory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


def unregister_model(name: str) -> None:
    """Forget ``name`` (tests; a pretrained teacher registered again with another source)."""
    for table in (_MODELS, _ROLES, _ADAPT):
        table.pop(name, None)


def model_roles(name: str) -> frozenset[str]:
    """The roles ``name`` may take (empty when it is not registered)."""
    return _ROLES.get(name, frozenset())


def model_names(role: str | None = None) -> list[str]:
    """Registered models, or those that may take ``role`` (``teacher`` / ``student``)."""
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return sorted(n for n in _MODELS if role is None or role in _ROLES[n])


def build_model(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Build a registered model for images of ``input_shape`` = (C, H, W)."""
    if name not in _MODELS and ":" in name:  # torchvision:resnet18, timm:..., my_pkg.models:Net
        from .hub import resolve_model

        resolve_model(name)
    try:
        cls = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(model_names())}") from None
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
    model = cls(tuple(int(d) for d in input_shape), num_classes)
    adapt = _ADAPT.get(name)
    if adapt is not None:
        from .adapters import as_model_output, probe

        if adapt.startswith("auto:"):
            adapt = adapt.removeprefix("auto:")
            if not isinstance(probe(model, input_shape), torch.Tensor):
                return model
        model = as_model_output(model, adapt or None, input_shape)
    return model


def feature_dim(model: nn.Module) -> int:
    """Size of the feature vector a registered model returns."""
    return int(model.feature_dim)
