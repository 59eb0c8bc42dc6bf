"""Input-gradient (Jacobian) matching: the student's directional derivatives follow the teacher's.

Srinivas & Fleuret (2018), "Knowledge transfer with Jacobian matching", and Czarnecki et al.
(2017), "Sobolev training": matching a teacher's outputs on the training images says nothing of
how they *change* around those images, which is where a CNN's translation robustness lives (a
small, smooth change of the input leaves its prediction alone). This term matches the
derivatives of the logits along ``K`` fixed random directions per training image
(:mod:`study.train.directions`):

    L = ||J_s(x) v - J_t(x) v||^2 / mean(||J_t(x) v||^2)

averaged over the batch, one direction ``v`` per image and step. The teacher's side ``J_t(x) v`` is
computed once per snapshot with forward-mode AD (exact, in fp32) and cached in its bank, so no
teacher runs in a student's loop; the student's side comes from the same forward pass as its
logits (forward-mode AD through the student, so dropout draws one mask for both, which finite
differences of two passes would not). Dividing by the teacher's mean squared derivative (a
constant of the batch, detached) makes the term scale-free: about 1 when the student is flat
along the directions, 0 when it matches, whatever the teacher's logit scale.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .registry import HyperParam, KDTerm, register_kd_term

#: Directions per training image the teacher's derivatives are cached for (each one a teacher pass).
JACOBIAN_K = HyperParam("jacobian_k", 4.0, 1.0, 64.0, "jacobian: random input directions per training image "
                        "(the teacher's derivative cache is jacobian_k x [N, classes])")
JACOBIAN_SEED = HyperParam("jacobian_seed", 0.0, 0.0, 2.0**31 - 1, "jacobian: seed the directions are drawn "
                           "from (the same for every student seed)")


def relative_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean ||s - t||^2 / mean ||t||^2`` over the batch (the denominator detached, at least 1e-12)."""
    s, t = student.float(), teacher.detach().float()
    return (s - t).pow(2).sum(dim=1).mean() / t.pow(2).sum(dim=1).mean().clamp_min(1e-12)


@register_kd_term
class JacobianTerm(KDTerm):
    """Directional derivatives of the logits along fixed random directions, matched to the teacher's
    (relative squared error); several teachers: their weighted sum."""

    name = "jacobian"
    summary = ("Jacobian matching: the student's directional derivatives of its logits along fixed random "
               "input directions match the teacher's (relative squared error)")
    needs = frozenset({"jvp"})
    hyperparams = (JACOBIAN_K, JACOBIAN_SEED)

    def forward(self, student_logits: torch.Tensor, student_features: torch.Tensor,
                teacher_logits: Sequence[torch.Tensor], teacher_features: Sequence[torch.Tensor],
                student_jvp: torch.Tensor | None = None, teacher_jvp: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        if student_jvp is None or len(teacher_jvp) != len(self.weights):
            raise ValueError(f"jacobian: needs the student's and {len(self.weights)} teacher(s)' directional "
                             f"derivatives (a run with s_jacobian > 0 draws them)")
        total = None
        for weight, teacher in zip(self.weights, teacher_jvp):
            part = weight * relative_mse(student_jvp, teacher)
            total = part if total is None else total + part
        return total
