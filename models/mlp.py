"""MLP students: flattened image -> hidden ReLU layers with dropout 0.3 -> linear head.

The feature vector is the last hidden layer's activation (after ReLU, before
dropout), the representation feature matching pulls towards the teacher's.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .registry import ModelOutput, register_model

DROPOUT = 0.3


class MLP(nn.Module):
    hidden: tuple[int, ...] = (2000, 1000, 100)

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for i, h in enumerate(self.hidden):
            if i > 0:
                layers.append(nn.Dropout(DROPOUT))
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(DROPOUT)
        self.head = nn.Linear(width, num_classes)
        self.feature_dim = width

    def forward(self, x: torch.Tensor) -> ModelOutput:
        features = self.body(x)
        return ModelOutput(self.head(self.dropout(features)), features)


@register_model("mlp_1")
class MLP1(MLP):
    """MLP_1 of the study: hidden 2000/1000/100."""

    hidden = (2000, 1000, 100)


@register_model("mlp_2")
class MLP2(MLP):
    """MLP_2 of the study: hidden 1024/512/256/128."""

    hidden = (1024, 512, 256, 128)
