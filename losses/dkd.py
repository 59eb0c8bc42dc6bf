"""Decoupled KD (DKD; Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022).

DKD splits Hinton's KD into target-class KD (TCKD: a binary KL between the teacher's
and the student's ``[p^target, 1 - p^target]``, i.e. how sure of the true class) and
non-target-class KD (NCKD: a KL between the two distributions over the other classes,
renormalized, the "dark knowledge"), and weights them independently:
``(dkd_alpha * TCKD + dkd_beta * NCKD) * T^2``, batch mean. Classic KD couples NCKD to
``1 - p_t^target``, which shrinks exactly where a strong teacher is confident; DKD
lets the study ask whether the teacher's ranking of the wrong classes (how a CNN
confuses translated digits) is what carries its translation robustness into the MLP.
It needs only cached teacher logits plus the ground-truth labels (``needs_targets``).
NCKD masks the target exactly (log-softmax over the non-target classes) instead of the
reference's ``- 1000 * gt_mask``. mdistiller's linear warm-up of the term over the first
epochs is left out: a trial's epochs are few and the scale ``s_dkd`` is searched anyway.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .kd import TEMPERATURE
from .registry import HyperParam, KDTerm, register_kd_term

DKD_ALPHA = HyperParam("dkd_alpha", 1.0, 0.0, 10.0, "DKD weight of target-class KD (TCKD)")
DKD_BETA = HyperParam("dkd_beta", 8.0, 0.0, 100.0, "DKD weight of non-target-class KD (NCKD)")


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
             alpha: float, beta: float, temperature: float) -> torch.Tensor:
    """``(alpha * TCKD + beta * NCKD) * T^2`` averaged over the batch; the teacher side is detached."""
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    z_s, z_t = student_logits.to(dtype) / temperature, teacher_logits.detach().to(dtype) / temperature
    gt = F.one_hot(targets.long(), z_s.shape[1]).bool()
    log_s, log_t = F.log_softmax(z_s, dim=1), F.log_softmax(z_t, dim=1)

    def binary(log_p: torch.Tensor) -> torch.Tensor:  # log [p^target, 1 - p^target], computed stably
        return torch.stack([log_p[gt], torch.logsumexp(log_p.masked_fill(gt, -torch.inf), dim=1)], dim=1)

    def non_target(z: torch.Tensor) -> torch.Tensor:  # log-softmax over the other classes, 0 at the target
        return F.log_softmax(z.masked_fill(gt, -torch.inf), dim=1).masked_fill(gt, 0.0)

    n = z_s.shape[0]
    tckd = F.kl_div(binary(log_s), binary(log_t), reduction="sum", log_target=True) / n
    nckd = F.kl_div(non_target(z_s), non_target(z_t), reduction="sum", log_target=True) / n
    return (alpha * tckd + beta * nckd) * temperature**2


@register_kd_term
class DKDTerm(KDTerm):
    """DKD against each teacher, weighted by the teacher weights; reads ``targets=``."""

    name = "dkd"
    summary = "decoupled KD: (dkd_alpha TCKD + dkd_beta NCKD) T^2 on logits and labels"
    needs = frozenset({"logits"})
    needs_targets = True
    hyperparams = (TEMPERATURE, DKD_ALPHA, DKD_BETA)

    def pair(self, student_logits: torch.Tensor, student_features: torch.Tensor,
             teacher_logits: torch.Tensor | None, teacher_features: torch.Tensor | None, index: int, *,
             targets: torch.Tensor | None = None) -> torch.Tensor:
        if targets is None or teacher_logits is None:
            raise ValueError("dkd needs teacher logits and the ground-truth labels (targets=...)")
        h = self.hparams
        return dkd_loss(student_logits, teacher_logits, targets, h["dkd_alpha"], h["dkd_beta"], h["temperature"])
