"""Architectures from elsewhere by name: torchvision's, timm's, any ``module:Class`` or ``module:function``.

Why: a teacher or a student need not be written for this study. A model name of the form

- ``torchvision:resnet18`` is torchvision's ResNet-18 (``torchvision.models.get_model``),
- ``timm:convnext_atto`` is timm's (an optional extra),
- ``my_pkg.models:TinyNet`` is a class or function ``f(input_shape, num_classes)`` of an importable module,

and is registered the first time it is named (in a space, ``--set``, a run's config), built for the
dataset's channels and classes, and adapted to return its features (:mod:`models.adapters`): the
input of its last ``nn.Linear``, or the output of the layer a space's ``models:`` entry names
(``features: layer4``). :func:`register_torchvision_model` and :func:`register_timm_model` do the
same under a name of your choosing. Weights are never downloaded here: a study trains the teacher,
or a pretrained bank loads your checkpoint into it (:mod:`study.teachers.pretrained`).

timm is an optional extra: it is imported when such a model is first built, and a missing timm is
one line (``pip install timm``), not a traceback at import time.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

import importlib

from .adapters import as_model_output
from .registry import ROLES, model_names, register_model

#: The name schemes :func:`resolve_model` knows, besides ``module:attribute``.
SCHEMES = ("torchvision", "timm")


class MissingExtra(ImportError):
    """An optional package (timm) is not installed; the message says how to install it."""


class ToChannels(nn.Module):
    """Feed a model that expects ``channels`` input channels with 1-channel images (repeated)."""

    def __init__(self, model: nn.Module, channels: int) -> None:
        super().__init__()
        self.model = model
        self.channels = channels

    def forward(self, x):
        return self.model(x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x)


def register_torchvision_model(name: str, architecture: str, roles: Sequence[str] = ("teacher",),
                               features: str | None = None, **kwargs: Any) -> str:
    """Register torchvision's ``architecture`` (``torchvision.models.get_model`` name) as ``name``,
    untrained (``weights=None``), with the dataset's number of classes. Grayscale images are repeated
    to the 3 channels torchvision's models expect. Returns ``name``."""

    def build(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        from torchvision.models import get_model

        try:
            model = get_model(architecture, weights=None, num_classes=num_classes, **kwargs)
        except ValueError as error:  # an unknown architecture name
            raise ValueError(f"torchvision has no model {architecture!r} ({error})") from None
        model = as_model_output(model, features, (3, *input_shape[1:]))
        if input_shape[0] == 1:
            wrapped = ToChannels(model, 3)
            wrapped.feature_dim = model.feature_dim
            return wrapped
        return model

    build.__qualname__ = f"torchvision:{architecture}"
    register_model(name, roles=roles)(build)
    return name


def register_timm_model(name: str, architecture: str, roles: Sequence[str] = ROLES, features: str | None = None,
                        **kwargs: Any) -> str:
    """Register timm's ``architecture`` (``timm.create_model`` name) as ``name``, untrained, with the
    dataset's channels (``in_chans``) and classes. timm is imported when the model is first built."""

    def build(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        try:
            import timm
        except ImportError:
            raise MissingExtra(f"model {name!r} needs timm, which is not installed: pip install timm") from None
        model = timm.create_model(architecture, pretrained=False, num_classes=num_classes,
                                  in_chans=input_shape[0], **kwargs)
        return as_model_output(model, features, input_shape)

    build.__qualname__ = f"timm:{architecture}"
    register_model(name, roles=roles)(build)
    return name


def register_attribute_model(name: str, spec: str, roles: Sequence[str] = ROLES, features: str | None = None,
                             outputs: str = "auto") -> str:
    """Register ``module.path:Attribute`` (a class or a function ``f(input_shape, num_classes)``) as
    ``name``; the module is imported now (an ImportError or a missing attribute says which)."""
    module_name, _, attribute = spec.rpartition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(f"model {spec!r}: cannot import module {module_name!r} ({error})") from None
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise ImportError(f"model {spec!r}: module {module_name!r} has no class or function {attribute!r}")
    register_model(name, roles=roles, outputs=outputs, features=features)(factory)
    return name


def register_model_spec(name: str, spec: str, roles: Sequence[str] = ROLES, features: str | None = None,
                        outputs: str = "auto") -> str:
    """Register the model ``spec`` names (``torchvision:ARCH``, ``timm:ARCH`` or ``module:Attribute``)
    as ``name`` (what a space's ``models:`` entry does)."""
    scheme, _, rest = spec.partition(":")
    if not rest:
        raise ValueError(f"model {spec!r}: expected torchvision:ARCH, timm:ARCH or module.path:Attribute")
    if scheme == "torchvision":
        return register_torchvision_model(name, rest, roles, features)
    if scheme == "timm":
        return register_timm_model(name, rest, roles, features)
    return register_attribute_model(name, spec, roles, features, outputs)


def resolve_model(name: str) -> bool:
    """Register a model named by a scheme (``torchvision:resnet18``, ``timm:...``, ``pkg.mod:Net``)
    under that very name, as a teacher and a student, if it is not registered yet. Returns whether
    ``name`` is registered now (False for a plain name nobody registered)."""
    if name in model_names():
        return True
    if ":" not in name:
        return False
    register_model_spec(name, name)
    return True
