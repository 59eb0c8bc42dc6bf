"""The leveled KD objective ``a*CE + (1-a)*(s_KL*KD + s_FM*FM)`` for one or several teachers.

The four named variants of the study are points of one formula:
No KD (s_KL = s_FM = 0), normal KD (s_FM = 0), Type 1 (s_KL = 0), Type 2 (both).
Several teachers (e.g. a convolution and an involution teacher, as in CiT)
contribute one averaged soft target (weighted) and one FM term each (weighted
the same way). The forward returns every part so each can be logged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .cross_entropy import cross_entropy
from .feature_matching import FeatureMatching
from .kd import kd_loss, normalized_weights, soft_targets


@dataclass(frozen=True)
class LeveledKDConfig:
    alpha: float = 0.5
    temperature: float = 4.0
    s_kl: float = 1.0
    s_fm: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.s_kl < 0 or self.s_fm < 0:
            raise ValueError(f"s_kl and s_fm must be >= 0, got {self.s_kl}, {self.s_fm}")

    @property
    def uses_teacher(self) -> bool:
        return self.alpha < 1.0 and (self.s_kl > 0 or self.s_fm > 0)

    @property
    def variant(self) -> str:
        """The study's name for this point: no_kd, normal_kd, type_1 or type_2."""
        if not self.uses_teacher:
            return "no_kd"
        if self.s_fm == 0:
            return "normal_kd"
        return "type_1" if self.s_kl == 0 else "type_2"


class LeveledKDLoss(nn.Module):
    """Callable as ``loss(student_out, targets, teacher_logits=[...], teacher_features=[...])``.

    Returns a dict with ``total`` (to backpropagate) and ``ce``, ``kd``, ``fm``
    (detached, for logging). Holds the FM projectors, so its parameters must be
    optimized together with the student's.
    """

    def __init__(self, config: LeveledKDConfig, student_dim: int = 0, teacher_dims: Sequence[int] = (),
                 teacher_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.config = config
        self.teacher_weights = normalized_weights(teacher_weights, len(teacher_dims)) if teacher_dims else []
        needs_fm = config.uses_teacher and config.s_fm > 0
        self.feature_matching = nn.ModuleList(
            [FeatureMatching(student_dim, d) for d in teacher_dims] if needs_fm else []
        )

    def forward(self, student_out: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor,
                teacher_logits: Sequence[torch.Tensor] = (),
                teacher_features: Sequence[torch.Tensor] = ()) -> dict[str, torch.Tensor]:
        cfg = self.config
        logits, features = student_out
        ce = cross_entropy(logits.float(), targets, cfg.label_smoothing)
        zero = ce.new_zeros(())
        kd = fm = zero
        if cfg.uses_teacher and cfg.s_kl > 0:
            if not teacher_logits:
                raise ValueError("s_kl > 0 needs teacher logits")
            kd = kd_loss(logits, soft_targets(teacher_logits, cfg.temperature, self.teacher_weights), cfg.temperature)
        if cfg.uses_teacher and cfg.s_fm > 0:
            if len(teacher_features) != len(self.feature_matching):
                raise ValueError(f"expected features of {len(self.feature_matching)} teachers, got {len(teacher_features)}")
            fm = sum((w * m(features, f) for w, m, f in
                      zip(self.teacher_weights, self.feature_matching, teacher_features)), zero)
        total = cfg.alpha * ce + (1 - cfg.alpha) * (cfg.s_kl * kd + cfg.s_fm * fm)
        return {"total": total, "ce": ce.detach(), "kd": kd.detach(), "fm": fm.detach()}
