"""The example's own models, as a plug-in: importing this module registers them.

The space file names it (``imports: [shapes_models.py]``), so the study imports it in the driver
and in every Ray worker; ``python run_study.py --import shapes_models.py`` does the same from the
command line. Two ways to meet the study's contract (a forward that returns logits *and* features):

- ``shapes_cnn`` returns ``ModelOutput(logits, features)`` itself and says ``feature_dim``;
- ``shapes_mlp`` is a plain classifier that returns logits only; ``outputs="logits"`` makes the
  study take the input of its last ``nn.Linear`` as its features.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models import ModelOutput, register_model


@register_model("shapes_cnn", roles=("teacher",))
class ShapesCNN(nn.Module):
    """Three strided conv blocks and global average pooling: a small translation-robust teacher."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        widths, layers, channels = (16, 32, 64), [], input_shape[0]
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)
        self.feature_dim = channels

    def forward(self, x: torch.Tensor) -> ModelOutput:
        features = self.body(x)
        return ModelOutput(self.head(features), features)


@register_model("shapes_mlp", roles=("student",), outputs="logits")
class ShapesMLP(nn.Sequential):
    """A plain MLP classifier (logits only): flatten, two hidden layers, a linear head."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__(nn.Flatten(), nn.Linear(math.prod(input_shape), 256), nn.ReLU(inplace=True),
                         nn.Linear(256, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes))
