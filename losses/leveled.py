"""The leveled KD objective ``a*CE + (1-a) * sum_m s_m * L_m`` for one or several teachers.

The terms ``L_m`` are the registered KD terms (losses/registry.py): the poster's KL and
feature matching, and DKD, DIST and RKD. The four named variants of the study are
points of one formula: No KD (all scales 0), normal KD (only s_kl), Type 1 (only s_fm),
Type 2 (s_kl and s_fm). Several teachers (e.g. a convolution and an involution teacher,
as in CiT) are mixed with the teacher weights, each term in its own way. The forward
returns every part so each can be logged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .cross_entropy import cross_entropy
from .kd import normalized_weights
from .registry import all_hyperparams, kd_term, kd_terms, scale_key

#: The study's names for the poster's points of the formula (by the set of terms in use).
POSTER_VARIANTS = {frozenset(): "no_kd", frozenset({"kl"}): "normal_kd", frozenset({"fm"}): "type_1",
                   frozenset({"kl", "fm"}): "type_2"}


def default_scales() -> dict[str, float]:
    """Each registered term's default scale (``kl`` 1, every other 0)."""
    return {name: float(cls.default_scale) for name, cls in kd_terms().items()}


@dataclass(frozen=True)
class LeveledKDConfig:
    """Weights of the leveled sum. ``scales`` maps term names to ``s_<name>`` (missing: the
    term's default); ``hparams`` holds the terms' hyperparameters by run key (missing:
    default). ``s_kl``, ``s_fm`` and ``temperature`` keywords are accepted for the poster's
    terms: ``LeveledKDConfig(alpha=0.4, temperature=3, s_kl=0.7, s_fm=2)``."""

    alpha: float = 0.5
    label_smoothing: float = 0.0
    scales: Mapping[str, float] = field(default_factory=dict)
    hparams: Mapping[str, float] = field(default_factory=dict)

    def __init__(self, alpha: float = 0.5, label_smoothing: float = 0.0, scales: Mapping[str, float] | None = None,
                 hparams: Mapping[str, float] | None = None, **flat: float) -> None:
        scales, hparams = dict(scales or {}), dict(hparams or {})
        known = all_hyperparams()
        for key, value in flat.items():
            if key.startswith("s_"):
                scales[key[2:]] = value
            elif key in known:
                hparams[key] = value
            else:
                raise TypeError(f"LeveledKDConfig got an unknown keyword {key!r}")
        object.__setattr__(self, "alpha", float(alpha))
        object.__setattr__(self, "label_smoothing", float(label_smoothing))
        object.__setattr__(self, "scales", {**default_scales(), **{k: float(v) for k, v in scales.items()}})
        object.__setattr__(self, "hparams", {**{k: hp.default for k, hp in known.items()},
                                             **{k: float(v) for k, v in hparams.items()}})
        self._check()

    def _check(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        for name, value in self.scales.items():
            kd_term(name)  # unknown term -> error naming the registered ones
            if value < 0:
                raise ValueError(f"{scale_key(name)} must be >= 0, got {value}")
        known = all_hyperparams()
        for key, value in self.hparams.items():
            if key not in known:
                raise ValueError(f"unknown KD hyperparameter {key!r}; known: {', '.join(known)}")
            if not known[key].contains(value):
                raise ValueError(f"{key} must be in {known[key].bounds_text}, got {value}")

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "LeveledKDConfig":
        """From a flat run config (``alpha``, ``label_smoothing``, ``s_<term>``, hyperparameters);
        other keys are ignored."""
        wanted = {"alpha", "label_smoothing", *map(scale_key, kd_terms()), *all_hyperparams()}
        return cls(**{key: value for key, value in values.items() if key in wanted})

    def flat(self) -> dict[str, float]:
        """``s_<term>`` for every term and the hyperparameters of the terms in use (for logging)."""
        used = {hp.name for n in self.active_terms for hp in kd_term(n).hyperparams}
        return {**{scale_key(n): s for n, s in self.scales.items()},
                **{k: v for k, v in self.hparams.items() if k in used}}

    def __getattr__(self, name: str) -> float:
        # config.s_kl, config.temperature: the poster's names read straight from the maps
        if name.startswith("s_") and name[2:] in kd_terms():
            return self.scales[name[2:]]
        if name in all_hyperparams():
            return self.hparams[name]
        raise AttributeError(name)

    @property
    def active_terms(self) -> list[str]:
        """Terms with a positive scale, in registry order (empty when alpha == 1)."""
        if self.alpha >= 1.0:
            return []
        return [n for n in kd_terms() if self.scales.get(n, 0.0) > 0]

    @property
    def uses_teacher(self) -> bool:
        return bool(self.active_terms)

    @property
    def uses_jvp(self) -> bool:
        """True when a term in use reads directional derivatives (the run draws input directions)."""
        return any("jvp" in kd_term(n).needs for n in self.active_terms)

    @property
    def variant(self) -> str:
        """The study's name for this point: no_kd, normal_kd, type_1, type_2, or the active
        terms joined by '+' in registry order (``dkd``, ``fm+dist``) for the other methods."""
        active = frozenset(self.active_terms)
        return POSTER_VARIANTS.get(active) or "+".join(self.active_terms)


class LeveledKDLoss(nn.Module):
    """Callable as ``loss(student_out, targets, teacher_logits=[...], teacher_features=[...])``.

    Returns a dict with ``total`` (to backpropagate), ``ce`` and one entry per registered
    term (detached, for logging; 0 for terms not in use). Holds the active terms (and
    their projectors), so its parameters must be optimized together with the student's.
    """

    def __init__(self, config: LeveledKDConfig, student_dim: int = 0, teacher_dims: Sequence[int] = (),
                 teacher_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.config = config
        self.teacher_weights = normalized_weights(teacher_weights, len(teacher_dims)) if teacher_dims else []
        self.terms = nn.ModuleDict({
            name: kd_term(name)(config.hparams, student_dim, list(teacher_dims), self.teacher_weights)
            for name in config.active_terms})
        self.part_names = list(kd_terms())  # every registered term is logged, 0 when not in use

    def forward(self, student_out: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor,
                teacher_logits: Sequence[torch.Tensor] = (),
                teacher_features: Sequence[torch.Tensor] = (),
                soft_targets: torch.Tensor | None = None, student_jvp: torch.Tensor | None = None,
                teacher_jvp: Sequence[torch.Tensor] = ()) -> dict[str, torch.Tensor]:
        """``soft_targets`` (class probabilities [N, C], e.g. mixup's ``lam * y_i + (1 - lam) * y_j``)
        replace ``targets`` in the CE term, which is linear in them: mixup's CE is then exactly
        ``lam * CE(y_i) + (1 - lam) * CE(y_j)``. Terms that read labels (DKD) still get ``targets``;
        terms that read directional derivatives (Jacobian matching) get ``student_jvp`` (the student's
        derivative of its logits along each sample's direction, [N, C]) and ``teacher_jvp`` (each
        teacher's, cached)."""
        cfg = self.config
        logits, features = student_out
        ce = cross_entropy(logits.float(), targets if soft_targets is None else soft_targets, cfg.label_smoothing)
        parts = dict.fromkeys(self.part_names, ce.new_zeros(()))
        kd_sum = None
        for name, term in self.terms.items():
            extra = {"targets": targets} if term.needs_targets else {}
            if "jvp" in term.needs:
                extra.update(student_jvp=student_jvp, teacher_jvp=teacher_jvp)
            parts[name] = term(logits, features, teacher_logits, teacher_features, **extra)
            scaled = cfg.scales[name] * parts[name]
            kd_sum = scaled if kd_sum is None else kd_sum + scaled
        total = cfg.alpha * ce if kd_sum is None else cfg.alpha * ce + (1 - cfg.alpha) * kd_sum
        return {"total": total, "ce": ce.detach(), **{k: v.detach() for k, v in parts.items()}}
