"""Soft-target KD term: ``T^2 * KL(p_t^T || p_s^T)`` (Hinton et al., 2015).

The T^2 factor keeps the gradient's magnitude roughly independent of T (the
gradient of the KL alone scales like 1/T^2 for large T), so changing T in a sweep
does not silently change the KD term's weight. Averaged over the batch
("batchmean"), the mathematically correct KL reduction.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .registry import HyperParam, KDTerm, register_kd_term


def soft_targets(teacher_logits: Sequence[torch.Tensor], temperature: float,
                 weights: Sequence[float] | None = None) -> torch.Tensor:
    """Teacher probabilities at temperature T, averaged over teachers with ``weights`` (default equal)."""
    if not teacher_logits:
        raise ValueError("soft_targets needs at least one teacher")
    weights = normalized_weights(weights, len(teacher_logits))
    probs = [w * F.softmax(z.detach().float() / temperature, dim=1) for w, z in zip(weights, teacher_logits)]
    return torch.stack(probs).sum(0)


def normalized_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Non-negative mixing weights summing to one; ``None`` means equal weights."""
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need {count} non-negative teacher weights with a positive sum, got {list(weights)}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def kl_divergence(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(p_t || softmax(z_s / T))`` averaged over the batch, without the T^2 factor."""
    # at least float32: under autocast the logits may arrive in bfloat16
    log_q = F.log_softmax(student_logits.to(torch.promote_types(student_logits.dtype, torch.float32)) / temperature, dim=1)
    return F.kl_div(log_q, teacher_probs.detach(), reduction="batchmean")


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """The KD term ``T^2 * KL(p_t^T || p_s^T)``; the teacher side is always detached."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return temperature**2 * kl_divergence(student_logits, teacher_probs, temperature)


TEMPERATURE = HyperParam("temperature", 4.0, 0.0, 100.0, "KD temperature T (softens both distributions)",
                         low_open=True)


@register_kd_term
class KLTerm(KDTerm):
    """The poster's soft-target term ``T^2 KL(p_t^T || p_s^T)``; several teachers give one
    averaged soft target (their probabilities mixed with the teacher weights)."""

    name = "kl"
    summary = "Hinton KD: T^2 KL(p_t^T || p_s^T) on logits"
    needs = frozenset({"logits"})
    hyperparams = (TEMPERATURE,)
    default_scale = 1.0

    def forward(self, student_logits: torch.Tensor, student_features: torch.Tensor,
                teacher_logits: Sequence[torch.Tensor], teacher_features: Sequence[torch.Tensor]) -> torch.Tensor:
        if not teacher_logits:
            raise ValueError("s_kl > 0 needs teacher logits")
        temperature = self.hparams["temperature"]
        return kd_loss(student_logits, soft_targets(teacher_logits, temperature, self.weights), temperature)
