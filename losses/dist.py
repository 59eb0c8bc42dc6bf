"""DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022).

Instead of matching the teacher's probabilities exactly (KL), DIST matches relations:
the Pearson correlation between student and teacher probabilities across classes for
each sample (inter-class) and across the samples of the batch for each class
(intra-class). ``tau^2 * (dist_beta * (1 - mean_i r(p_s[i,:], p_t[i,:]))
+ dist_gamma * (1 - mean_j r(p_s[:,j], p_t[:,j])))``. Correlation is invariant to a
positive affine map, so a small MLP need not reproduce a strong CNN's sharp,
translation-robust predictions to the digit, only their ranking and how they vary over
the batch (e.g. over shifted digits): the "stronger teacher" setting of this study.
It works from cached teacher logits. Pearson as in the reference implementation: cosine
similarity of mean-centred vectors with 1e-8 added to the denominator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import HyperParam, KDTerm, register_kd_term

DIST_BETA = HyperParam("dist_beta", 1.0, 0.0, 10.0, "DIST weight of the inter-class (per-sample) relation")
DIST_GAMMA = HyperParam("dist_gamma", 1.0, 0.0, 10.0, "DIST weight of the intra-class (per-class) relation")
DIST_TAU = HyperParam("dist_tau", 1.0, 0.0, 100.0, "DIST softmax temperature tau", low_open=True)


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, gamma: float,
              tau: float) -> torch.Tensor:
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    p_s = F.softmax(student_logits.to(dtype) / tau, dim=1)
    p_t = F.softmax(teacher_logits.detach().to(dtype) / tau, dim=1)
    inter = 1 - pearson_rows(p_s, p_t).mean()
    intra = 1 - pearson_rows(p_s.t(), p_t.t()).mean()
    return tau**2 * (beta * inter + gamma * intra)


@register_kd_term
class DISTTerm(KDTerm):
    """DIST against each teacher, weighted by the teacher weights (base-class forward)."""

    name = "dist"
    summary = "DIST: tau^2 (beta (1 - inter-class r) + gamma (1 - intra-class r)) on logits"
    needs = frozenset({"logits"})
    hyperparams = (DIST_BETA, DIST_GAMMA, DIST_TAU)

    def pair(self, student_logits: torch.Tensor, student_features: torch.Tensor,
             teacher_logits: torch.Tensor | None, teacher_features: torch.Tensor | None, index: int) -> torch.Tensor:
        h = self.hparams
        return dist_loss(student_logits, teacher_logits, h["dist_beta"], h["dist_gamma"], h["dist_tau"])
