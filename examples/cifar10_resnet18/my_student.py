"""The example's own student, as a plug-in: importing this module registers it.

The space file names it (``imports: [my_student.py]``), so the study imports it in the driver and in
every Ray worker. The study's contract for a model: ``__init__(input_shape, num_classes)`` and a
forward that returns ``ModelOutput(logits, features)`` (the features are what feature matching
compares with the teacher's, through a learned projection when their widths differ).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models import ModelOutput, register_model


@register_model("bottleneck_mlp", roles=("student",))
class BottleneckMLP(nn.Module):
    """An MLP with LayerNorm: a wide first layer over the flattened image, then a bottleneck whose
    output is the feature vector. No convolution, no weight sharing: whatever translation robustness
    it has, it learned (or was taught)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, widths: tuple[int, ...] = (1024, 256),
                 dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for hidden in widths:
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        self.feature_dim = width

    def forward(self, x: torch.Tensor) -> ModelOutput:
        features = self.body(x)
        return ModelOutput(self.head(features), features)
