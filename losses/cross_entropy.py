"""Hard-label term of the leveled loss, with optional label smoothing.

Label smoothing is the poster's "soften the strong teacher" control: it is applied
when training a teacher, and can be applied to a student's CE term too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [N, C] against integer ``targets`` [N] or class
    probabilities [N, C] (mixed labels; the loss is linear in them)."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
