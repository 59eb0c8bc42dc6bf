"""KD-term registry: a distillation method is one module that registers one :class:`KDTerm`.

The leveled objective is ``a*CE + (1-a) * sum_m s_m * L_m`` over the registered terms
``m`` (the poster's KL and feature matching, and methods from the literature). A term
says, as data, everything the rest of the project needs to know about it:

- its ``name`` (its scale is the run key ``s_<name>``, its loss part is logged as ``loss_<name>``),
- its hyperparameters with defaults and bounds (:class:`HyperParam`, run keys such as
  ``temperature`` or ``dkd_beta``; two terms may share one, e.g. the KD temperature),
- what it needs from the teacher (``logits`` and/or ``features``, read from the cached
  teacher outputs, so no method ever runs a teacher inside a student's loop),
- its forward.

The run configuration (``study/distill/config.py``), the search spaces, the distill CLI flags
and the report columns are all generated from this registry, so adding a method is a
module plus ``@register_kd_term``; see README "Adding a KD method".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

import torch
from torch import nn

#: What a term may read from the teacher: its cached logits, its cached features, or its cached
#: directional derivatives along fixed input directions (``jvp``; the Jacobian term, which then gets
#: ``student_jvp=`` and ``teacher_jvp=`` keywords, and a run with it draws fixed input directions).
NEEDS = ("logits", "features", "jvp")


@dataclass(frozen=True)
class HyperParam:
    """One hyperparameter of a KD term: its run key, default and inclusive bounds.

    ``low_open`` makes the lower bound exclusive (a temperature must be > 0).
    """

    name: str
    default: float
    low: float = 0.0
    high: float = math.inf
    help: str = ""
    low_open: bool = False

    def __post_init__(self) -> None:
        if not self.contains(self.default):
            raise ValueError(f"hyperparameter {self.name!r}: default {self.default} is outside its bounds")

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    @property
    def bounds_text(self) -> str:
        return interval_text(self.low, self.high, low_open=self.low_open)


def interval_text(low: float, high: float, low_open: bool = False, high_open: bool = False) -> str:
    """``[0, 1]``, ``(0, 100]``, ``[0, inf)``: the one spelling of a range in every error message."""
    low_open, high_open = low_open or low == -math.inf, high_open or high == math.inf
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


class KDTerm(nn.Module):
    """Base of every KD term: ``forward(student_logits, student_features, teacher_logits,
    teacher_features)`` returns one scalar loss (not yet scaled by ``s_<name>``).

    Teachers arrive as lists (one entry per teacher) with mixing ``weights`` summing to one.
    The default forward is the weighted sum over teachers of :meth:`pair`; a term whose
    multi-teacher rule is different (KL averages the teachers' probabilities first)
    overrides :meth:`forward` instead. Terms with learnable parts (projectors) hold them as
    submodules: the trainer optimizes the loss's parameters with the student's.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    hyperparams: ClassVar[tuple[HyperParam, ...]] = ()
    #: the scale a run gets when it does not say (KL is on by default, as it always was)
    default_scale: ClassVar[float] = 0.0
    #: True for terms that also read the ground-truth labels (DKD): they get ``targets=`` as a keyword
    needs_targets: ClassVar[bool] = False

    def __init__(self, hparams: Mapping[str, float], student_dim: int, teacher_dims: Sequence[int],
                 weights: Sequence[float]) -> None:
        super().__init__()
        self.hparams = {hp.name: float(hparams.get(hp.name, hp.default)) for hp in self.hyperparams}
        self.weights = list(weights)

    def forward(self, student_logits: torch.Tensor, student_features: torch.Tensor,
                teacher_logits: Sequence[torch.Tensor], teacher_features: Sequence[torch.Tensor],
                **extra: torch.Tensor) -> torch.Tensor:
        """Weighted sum of :meth:`pair` over teachers; ``extra`` (``targets=`` for terms with
        ``needs_targets``) is passed on to :meth:`pair`."""
        needed = teacher_logits if "logits" in self.needs else teacher_features
        if len(needed) != len(self.weights):
            raise ValueError(f"{self.name}: expected outputs of {len(self.weights)} teachers, got {len(needed)}")
        total = None
        for i, weight in enumerate(self.weights):
            t_logits = teacher_logits[i] if "logits" in self.needs else None
            t_features = teacher_features[i] if "features" in self.needs else None
            part = weight * self.pair(student_logits, student_features, t_logits, t_features, i, **extra)
            total = part if total is None else total + part
        return total

    def pair(self, student_logits: torch.Tensor, student_features: torch.Tensor,
             teacher_logits: torch.Tensor | None, teacher_features: torch.Tensor | None, index: int) -> torch.Tensor:
        """The loss against teacher number ``index`` (its outputs are already detached)."""
        raise NotImplementedError


_TERMS: dict[str, type[KDTerm]] = {}


def register_kd_term(cls: type[KDTerm]) -> type[KDTerm]:
    """Class decorator: add a KD term to the registry (its name must be new; a shared
    hyperparameter name must mean the same thing in every term that uses it)."""
    if not cls.name or not cls.name.isidentifier():
        raise ValueError(f"{cls.__name__}: a KD term needs a name that is an identifier, got {cls.name!r}")
    if cls.name in _TERMS or cls.name == "ce":
        raise ValueError(f"KD term {cls.name!r} is registered twice")
    if not cls.needs or not set(cls.needs) <= set(NEEDS):
        raise ValueError(f"KD term {cls.name!r}: needs must be a non-empty subset of {NEEDS}")
    known = all_hyperparams()
    for hp in cls.hyperparams:
        if hp.name in known and known[hp.name] != hp:
            raise ValueError(f"KD term {cls.name!r}: hyperparameter {hp.name!r} differs from the one "
                             f"another term registered")
        if hp.name.startswith("s_") or hp.name in ("alpha", "label_smoothing"):
            raise ValueError(f"KD term {cls.name!r}: {hp.name!r} is a reserved name")
    _TERMS[cls.name] = cls
    return cls


def kd_terms() -> dict[str, type[KDTerm]]:
    """Registered terms by name, in registration order (the order of the leveled sum)."""
    return dict(_TERMS)


def kd_term(name: str) -> type[KDTerm]:
    try:
        return _TERMS[name]
    except KeyError:
        raise ValueError(f"unknown KD term {name!r}; registered: {', '.join(_TERMS)}") from None


def scale_key(name: str) -> str:
    """The run key of a term's scale: ``kl`` -> ``s_kl``."""
    return f"s_{name}"


def all_hyperparams() -> dict[str, HyperParam]:
    """Every registered term's hyperparameters by run key (shared ones once)."""
    return {hp.name: hp for cls in _TERMS.values() for hp in cls.hyperparams}

