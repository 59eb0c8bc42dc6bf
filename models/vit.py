"""A small Vision Transformer student: the weak-prior student of the CiT setting.

Why a ViT: self-attention over patches has almost no built-in locality or
translation equivariance (only the 4x4 patch embedding is local), so a ViT needs
far more data than a CNN to learn those priors itself. That data hunger is what
motivates inductive-bias distillation, and CiT (co-advising ViTs, Ren et al.,
CVPR 2022) distills a convolution teacher and an involution teacher into a ViT;
``vit_1`` with ``cnn_1`` + ``inn_1`` is that setting here, next to the MLP
students that have no spatial prior at all.

Size: patch 4 (MNIST 28x28 -> 7x7 = 49 tokens, CIFAR-10 32x32 -> 8x8 = 64), width
64, depth 4, 4 heads, MLP hidden 128, about 0.14 M parameters: small enough that
an MNIST epoch trains on one CPU core in minutes (measured on a shared 2-core
machine, one thread, AdamW at batch 128: ~0.3 s a step, ~2 min for 54,000 images;
MLP_1 takes ~0.07 s a step, since attention over 50 tokens costs more than its
size suggests). Images whose side is not a multiple of the patch size are
zero-padded on the right and bottom (the token grid is the ceiling), so every
pixel reaches a patch.

Blocks are pre-norm (``norm_first``) with a final LayerNorm; the feature vector is
the normalized class token, the representation feature matching pulls towards
the teacher's, and the head is a linear layer on it.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import ModelOutput, register_model

DROPOUT = 0.1


class VisionTransformer(nn.Module):
    """Patch embedding + class token + learned positions, pre-norm encoder, LayerNorm, linear head."""

    patch: int = 4
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp: int = 128

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.grid = (math.ceil(height / self.patch), math.ceil(width / self.patch))
        self.embed = nn.Conv2d(channels, self.dim, kernel_size=self.patch, stride=self.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], self.dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(self.dim, self.heads, dim_feedforward=self.mlp, dropout=DROPOUT,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, self.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(self.dim)
        self.head = nn.Linear(self.dim, num_classes)
        self.feature_dim = self.dim

    def forward(self, x: torch.Tensor) -> ModelOutput:
        pad_h = self.grid[0] * self.patch - x.shape[-2]
        pad_w = self.grid[1] * self.patch - x.shape[-1]
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # [N, patches, dim]
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        features = self.norm(self.encoder(tokens)[:, 0])
        return ModelOutput(self.head(features), features)


@register_model("vit_1", roles=("student",))
class ViT1(VisionTransformer):
    """ViT_1 (CiT student): patch 4, width 64, depth 4, 4 heads, MLP hidden 128."""

    patch, dim, depth, heads, mlp = 4, 64, 4, 4, 128
