"""CNN teachers: four 3x3 conv blocks (BatchNorm + ReLU), global average pooling, linear head.

Downsampling choice: the first block keeps full resolution (stride 1); blocks 2-4
use stride 2 (28 -> 14 -> 7 -> 4 on MNIST, 32 -> 16 -> 8 -> 4 on CIFAR-10).
Strided convolutions instead of pooling keep the model at exactly four conv layers,
and global average pooling at the end is what gives the teacher its (approximate)
translation invariance, the inductive bias the study distills into MLPs.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .registry import ModelOutput, register_model


def conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvNet(nn.Module):
    """Four conv blocks with the given channel widths; features are the pooled vector."""

    channels: tuple[int, int, int, int] = (32, 64, 128, 256)
    #: The trainer converts the model to this format: oneDNN's CPU convolutions are native in
    #: channels_last (NCHW pays a reorder per layer; a CNN_1 step at batch 128 is ~1.2x faster in fp32),
    #: and cuDNN's bf16 convolutions prefer it too. Weights keep their values; only strides change.
    memory_format = torch.channels_last

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        in_channels = input_shape[0]
        blocks = []
        for i, width in enumerate(self.channels):
            blocks.append(conv_block(in_channels, width, stride=1 if i == 0 else 2))
            in_channels = width
        self.body = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_channels, num_classes)
        self.feature_dim = in_channels

    def forward(self, x: torch.Tensor) -> ModelOutput:
        features = self.pool(self.body(x)).flatten(1)
        return ModelOutput(self.head(features), features)


@register_model("cnn_1", roles=("teacher",))
class CNN1(ConvNet):
    """CNN_1 of the study: channels 32/64/128/256."""

    channels = (32, 64, 128, 256)


@register_model("cnn_2", roles=("teacher",))
class CNN2(ConvNet):
    """CNN_2 of the study: channels 64/64/128/128."""

    channels = (64, 64, 128, 128)
