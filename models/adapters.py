"""Models that return logits only (torchvision's, timm's, most of a user's) as study models.

Why: the distillation losses need a model's features as well as its logits, so every registered
model's ``forward`` returns :class:`~models.registry.ModelOutput`. Most classifiers written
elsewhere return one tensor. :func:`as_model_output` adapts one *in place*, with two forward hooks
instead of a wrapper module: the features are the input of its last ``nn.Linear`` (the classifier
head), and the model's output becomes ``ModelOutput(logits, features)``. No wrapper means the
model's ``state_dict`` keys stay its own, so a checkpoint saved from the plain model loads into the
adapted one, and the adapted one pickles (MLflow) with this package beside it.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .registry import ModelOutput


class FeatureTap:
    """Hooks that keep the feature vector (a layer's input, or a named layer's output) and return it
    with the model's logits."""

    def __init__(self) -> None:
        self.seen: torch.Tensor | None = None

    def keep(self, layer: nn.Module, inputs: tuple[Any, ...]) -> None:
        self.seen = inputs[0]

    def keep_output(self, layer: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, ModelOutput):  # an adapted model inside (a logged student in its wrapper)
            self.seen = output.features
        else:
            self.seen = output[0] if isinstance(output, (tuple, list)) else output

    def emit(self, model: nn.Module, inputs: tuple[Any, ...], output: Any) -> ModelOutput:
        if isinstance(output, ModelOutput):
            return output
        features, self.seen = self.seen, None
        if features is None:
            raise RuntimeError(f"{type(model).__name__}: its feature layer did not run in this forward pass")
        if features.dim() == 4:  # a convolutional layer's map: global average pooling, as the CNN teachers do
            features = features.mean(dim=(2, 3))
        return ModelOutput(output, features.flatten(1))


def head_layer(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` the model registers (``fc``, ``head``, ``classifier[-1]`` in the usual
    classifiers): its input is the feature vector."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head; name its feature layer (features: LAYER)")
    return linears[-1]


def as_model_output(model: nn.Module, features: str | None = None,
                    input_shape: Sequence[int] | None = None) -> nn.Module:
    """Make ``model`` (whose forward returns logits) return ``ModelOutput(logits, features)``, in place.

    ``features`` names the layer whose *output* is the feature vector (a dotted submodule path, e.g.
    ``layer4`` or ``avgpool``; a 4-D map is average-pooled); by default it is the *input* of the last
    ``nn.Linear``. ``feature_dim`` is set from that Linear, or, for a named layer, from one forward
    pass of two blank images of ``input_shape``. Returns ``model``.
    """
    if getattr(model, "_lkd_feature_tap", None) is not None:
        return model
    _fresh_hook_ids(model)
    tap = FeatureTap()
    inner = next((m for m in model.modules() if m is not model and getattr(m, "_lkd_feature_tap", None)), None)
    if not features and inner is not None:  # e.g. a logged student's wrapper: the adapted model inside has them
        inner.register_forward_hook(tap.keep_output)
        model.register_forward_hook(tap.emit)
        model._lkd_feature_tap = tap
        if not hasattr(model, "feature_dim") and hasattr(inner, "feature_dim"):
            model.feature_dim = inner.feature_dim
        return model
    if features:
        try:
            layer = model.get_submodule(features)
        except AttributeError:
            raise ValueError(f"{type(model).__name__} has no layer {features!r} to take features from") from None
        layer.register_forward_hook(tap.keep_output)
    else:
        layer = head_layer(model)
        layer.register_forward_pre_hook(tap.keep)
    model.register_forward_hook(tap.emit)
    model._lkd_feature_tap = tap
    if not hasattr(model, "feature_dim"):
        if not features and isinstance(layer, nn.Linear):
            model.feature_dim = layer.in_features
        elif input_shape is not None:
            model.feature_dim = probe(model, input_shape).features.shape[1]
    return model


def _fresh_hook_ids(model: nn.Module) -> None:
    """Make the next hook id larger than every hook id ``model`` already holds. An unpickled model (an
    MLflow model) keeps the ids its hooks had in the process that saved it, while this process counts
    from 0: a new hook could take an old one's id and silently replace it."""
    from torch.utils.hooks import RemovableHandle

    used = [key for module in model.modules() for hooks in (module._forward_hooks, module._forward_pre_hooks)
            for key in hooks]
    RemovableHandle.next_id = max(RemovableHandle.next_id, max(used, default=-1) + 1)


def probe(model: nn.Module, input_shape: Sequence[int]) -> Any:
    """The model's output on two blank images, in eval mode and without gradients (its mode is kept)."""
    was_training = model.training
    try:
        with torch.no_grad():
            return model.eval()(torch.zeros(2, *input_shape))
    finally:
        model.train(was_training)
