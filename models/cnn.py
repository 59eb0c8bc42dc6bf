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


class MaxPoolConvNet(ConvNet):
    """The same four conv blocks, downsampled by 2x2 max pooling after blocks 2-4 instead of strided
    convolutions: a *more* translation-invariant teacher.

    Why: a stride-2 convolution samples every other position, so a 2 px shift of the input moves
    what lands on the sampling grid (three of them compound to a grid of 8 px); max pooling keeps
    the strongest response in each window, which a small shift rarely changes. Published CNN->MLP
    transfer (Abnar et al. 2020) used a max-pooling CNN that was nearly invariant on its translated
    test set; this variant asks whether a more invariant teacher also transfers more. It costs
    about 3x a CNN_1 step: blocks 2-4 convolve at their input's full resolution.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        nn.Module.__init__(self)
        in_channels = input_shape[0]
        layers: list[nn.Module] = []
        for i, width in enumerate(self.channels):
            layers.append(conv_block(in_channels, width, stride=1))
            if i > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))  # 28 -> 14 -> 7 -> 4, as CNN_1's strides
            in_channels = width
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_channels, num_classes)
        self.feature_dim = in_channels


@register_model("cnn_1_maxpool", roles=("teacher",))
class CNN1MaxPool(MaxPoolConvNet):
    """CNN_1's widths (32/64/128/256) with max-pooling downsampling: the more invariant teacher."""

    channels = (32, 64, 128, 256)
