"""Feature-matching term: L1 between the student's and the teacher's penultimate features.

An MLP's last hidden layer rarely has the teacher's width (100 vs 256 for
MLP_1/CNN_1), so a learnable linear projector maps student features into the
teacher's space. It is trained with the student (the trainer optimizes the loss
module's parameters too) and only exists when the sizes differ.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureMatching(nn.Module):
    """``L1(projector(f_s), f_t)``, mean over batch and feature dimensions."""

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.projector: nn.Module = (
            nn.Identity() if student_dim == teacher_dim else nn.Linear(student_dim, teacher_dim)
        )

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        projected = self.projector(student_features.float())
        return F.l1_loss(projected, teacher_features.detach().float())
