"""Relational KD (RKD; Park et al., "Relational Knowledge Distillation", CVPR 2019).

RKD transfers the geometry of the teacher's penultimate features over the batch rather
than the features themselves: a distance loss (Huber between the pairwise Euclidean
distance matrices, each divided by its mean over the pairs i != j, diagonal 0) and an
angle loss (Huber between the cosines of the angles ``(e_i - e_j, e_k - e_j)`` over all
triplets). Both are invariant to the features' scale, and compare N x N / N x N x N
relations, so the student's width (100) need not equal the teacher's (256): no
projector, no learnable parameters. For this study it asks whether the CNN teacher's
translation robustness lives in how its feature space arranges (shifted) digits
relative to each other, and it needs only the cached teacher features.
``rkd_distance * L_dist + rkd_angle * L_angle`` (the paper's weights 25 and 50; Huber
``beta=1``, mean over all N^2 / N^3 entries as the reference does). The angle part
holds N^3 floats: 2M at batch 128, fine, but it grows fast with the batch. A batch of
one sample has no relations and gives 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import HyperParam, KDTerm, register_kd_term

RKD_DISTANCE = HyperParam("rkd_distance", 25.0, 0.0, 1000.0, "RKD weight of the distance loss")
RKD_ANGLE = HyperParam("rkd_angle", 50.0, 0.0, 1000.0, "RKD weight of the angle loss")


def normalized_distances(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pairwise Euclidean distances (squares clamped at ``eps`` before the root), 0 on the diagonal,
    divided by their mean over the pairs i != j."""
    square = x.pow(2).sum(1)
    dist = (square.unsqueeze(1) + square.unsqueeze(0) - 2 * x @ x.t()).clamp(min=eps).sqrt()
    off = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    dist = torch.where(off, dist, torch.zeros_like(dist))
    return dist / dist[off].mean()


def angles(x: torch.Tensor) -> torch.Tensor:
    """Entry ``(j, i, k)``: cos of the angle at ``x_j`` between ``x_i`` and ``x_k`` (0 when i or k is j), flattened."""
    e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)
    return torch.bmm(e, e.transpose(1, 2)).view(-1)


def rkd_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, w_distance: float,
             w_angle: float) -> torch.Tensor:
    dtype = torch.promote_types(student_features.dtype, torch.float32)
    f_s, f_t = student_features.to(dtype), teacher_features.detach().to(dtype)
    if len(f_s) < 2:  # a batch of one has no relations (a short last batch): no loss, graph kept
        return f_s.sum() * 0.0
    loss_d = F.smooth_l1_loss(normalized_distances(f_s), normalized_distances(f_t))
    loss_a = F.smooth_l1_loss(angles(f_s), angles(f_t))
    return w_distance * loss_d + w_angle * loss_a


@register_kd_term
class RKDTerm(KDTerm):
    """RKD against each teacher's features, weighted by the teacher weights (base-class forward)."""

    name = "rkd"
    summary = "relational KD: Huber on batch distance and angle relations of penultimate features"
    needs = frozenset({"features"})
    hyperparams = (RKD_DISTANCE, RKD_ANGLE)

    def pair(self, student_logits: torch.Tensor, student_features: torch.Tensor,
             teacher_logits: torch.Tensor | None, teacher_features: torch.Tensor | None, index: int) -> torch.Tensor:
        h = self.hparams
        return rkd_loss(student_features, teacher_features, h["rkd_distance"], h["rkd_angle"])
