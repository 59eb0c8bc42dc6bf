"""Clean and translated accuracy, all shifts in one batched pass.

Each chunk of test images is expanded into all its shifted copies and pushed
through the model in one forward pass under ``inference_mode``: for an MLP the
cost is a few large matmuls instead of 33 small loops.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .data import Shift, shift_name, translated_views


@dataclass
class TranslationResult:
    """Accuracy per shift; ``translated_acc`` is the mean over all non-zero shifts."""

    per_shift: dict[Shift, float] = field(default_factory=dict)

    @property
    def clean_acc(self) -> float:
        return self.per_shift[(0, 0)]

    @property
    def translated_acc(self) -> float:
        shifted = [acc for s, acc in self.per_shift.items() if s != (0, 0)]
        return sum(shifted) / len(shifted) if shifted else float("nan")

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metric dict: ``{prefix}clean_acc``, ``{prefix}translated_acc``, ``{prefix}acc_shift/...``."""
        out = {f"{prefix}clean_acc": self.clean_acc, f"{prefix}translated_acc": self.translated_acc}
        out.update({f"{prefix}acc_shift/{shift_name(s)}": a for s, a in self.per_shift.items()})
        return out


@torch.inference_mode()
def translation_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         shifts: Sequence[Shift], fill: torch.Tensor | float = 0.0,
                         device: torch.device | str = "cpu", max_batch: int = 2048) -> TranslationResult:
    """Accuracy of ``model`` on ``images`` under every shift (``(0, 0)`` is added if missing)."""
    shifts = list(dict.fromkeys([(0, 0), *shifts]))
    was_training = model.training
    model.eval()
    device = torch.device(device)
    correct = torch.zeros(len(shifts), dtype=torch.long, device=device)
    chunk = max(1, max_batch // len(shifts))
    fill = torch.as_tensor(fill)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    try:
        for start in range(0, len(images), chunk):
            x = images[start:start + chunk].to(device, non_blocking=True)
            y = labels[start:start + chunk].to(device, non_blocking=True)
            views = translated_views(x, shifts, fill.to(device))  # [S, n, C, H, W]
            with autocast:
                logits = model(views.flatten(0, 1))[0]
            predicted = logits.argmax(dim=1).view(len(shifts), -1)
            correct += (predicted == y).sum(dim=1)
    finally:
        model.train(was_training)
    accuracy = (correct.double() / max(1, len(images))).tolist()
    return TranslationResult(dict(zip(shifts, accuracy)))
