"""A registered model checked against the study's contract before any training, in one line.

Why: a plug-in model (a user's, torchvision's, timm's, a pretrained teacher's) that breaks the
contract would otherwise fail deep inside a Ray task or a trial, with a traceback from the trainer
or the loss: it must build for the dataset's (channels, height, width) and classes, and its forward
must return ``(logits [N, classes], features [N, D])``, with ``feature_dim = D`` on the model (the
feature-matching loss sizes its projection by it). :func:`check_model` builds it once and runs two
images through it, and says what is wrong and how to fix it.
"""
from __future__ import annotations

from typing import Sequence

import torch

from models import build_model
from models.registry import model_roles

from study.errors import UserError


class ModelError(UserError, ValueError):
    """A model does not build for the dataset, or its forward breaks the (logits, features) contract."""


def _first_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def check_model(name: str, input_shape: Sequence[int], num_classes: int, role: str | None = None,
                dataset: str = "the dataset") -> int:
    """Build ``name`` for images of ``input_shape`` and ``num_classes`` classes, run two images through
    it, and return its feature size; or raise :class:`ModelError` with one line."""
    if ":" in name:  # torchvision:resnet18, my_pkg.models:Net: registered the first time they are named
        from models.hub import resolve_model

        try:
            resolve_model(name)
        except (ImportError, ValueError) as error:
            raise ModelError(_first_line(error).split(": ", 1)[-1]) from None
    if role is not None and role not in model_roles(name):
        raise ModelError(f"model {name!r} cannot be a {role} (its roles: {', '.join(sorted(model_roles(name))) or 'none'})")
    shape = "x".join(str(d) for d in input_shape)
    try:
        model = build_model(name, input_shape, num_classes)
    except UserError:
        raise
    except Exception as error:
        raise ModelError(f"model {name!r} does not build for {dataset} ({shape}, {num_classes} classes): "
                         f"{_first_line(error)}") from None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, *input_shape))
    except Exception as error:
        raise ModelError(f"model {name!r} fails on images of {dataset} ({shape}): {_first_line(error)}") from None
    finally:
        model.train(was_training)
    if isinstance(output, torch.Tensor):
        raise ModelError(f"model {name!r} returns one tensor; its forward must return (logits, features), or "
                         f"register it with outputs='logits' to take its head's input as the features")
    if not isinstance(output, (tuple, list)) or len(output) != 2 or \
            not all(isinstance(part, torch.Tensor) for part in output):
        raise ModelError(f"model {name!r} returns {type(output).__name__}; its forward must return "
                         f"(logits, features), two tensors")
    logits, features = output
    if tuple(logits.shape) != (2, num_classes):
        raise ModelError(f"model {name!r} returns logits of shape {list(logits.shape)} for 2 images; expected "
                         f"[2, {num_classes}] ({dataset} has {num_classes} classes)")
    if features.dim() != 2 or features.shape[0] != 2:
        raise ModelError(f"model {name!r} returns features of shape {list(features.shape)} for 2 images; "
                         f"expected [2, D] (flatten them)")
    dim = getattr(model, "feature_dim", None)
    if dim is None or int(dim) != features.shape[1]:
        raise ModelError(f"model {name!r}: feature_dim is {dim} but its features have {features.shape[1]} values; "
                         f"set self.feature_dim = {features.shape[1]}")
    return int(dim)
