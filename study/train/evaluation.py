"""Clean and translated accuracy, all shifts in one batched pass.

Each chunk of test images is expanded into all its shifted copies and pushed
through the model in one forward pass under ``inference_mode``: for an MLP the
cost is a few large matmuls instead of 33 small loops. A final evaluation also
keeps *which* images each shift got right (``keep_per_image``), so two runs can
later be compared paired, image by image (:mod:`study.train.predictions`).

Robustness metrics (declared here, used everywhere):

- ``translated_acc``: mean accuracy over every non-zero shift (32 on the default grid);
  the primary metric and the search objective (on validation).
- ``small_shift_acc``: mean over the 2 and 4 px shifts (16; the two smallest magnitudes of a
  grid scaled for larger images), where an MLP is still well
  above chance; half of the 32-shift grid (6-8 px) sits near chance for MLPs, where a
  "gain" can be noise around 0.1.
- ``translated_over_clean``: translated / clean accuracy. A student that merely learned
  faster (higher clean accuracy) is not more robust by this ratio.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from study.train.data import Shift, shift_name, translated_views
from study.train.predictions import PerImage, small_magnitudes


@dataclass
class TranslationResult:
    """Accuracy per shift; ``translated_acc`` is the mean over all non-zero shifts."""

    per_shift: dict[Shift, float] = field(default_factory=dict)
    #: bool [S, N] in the order of ``per_shift`` when evaluated with ``keep_per_image``
    correct: torch.Tensor | None = None

    @property
    def clean_acc(self) -> float:
        return self.per_shift[(0, 0)]

    @property
    def translated_acc(self) -> float:
        shifted = [acc for s, acc in self.per_shift.items() if s != (0, 0)]
        return sum(shifted) / len(shifted) if shifted else float("nan")

    @property
    def small_shift_acc(self) -> float:
        magnitudes = small_magnitudes(list(self.per_shift))
        small = [acc for (dx, dy), acc in self.per_shift.items() if max(abs(dx), abs(dy)) in magnitudes]
        return sum(small) / len(small) if small else float("nan")

    @property
    def translated_over_clean(self) -> float:
        return self.translated_acc / self.clean_acc if self.clean_acc > 0 else float("nan")

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metric dict: ``{prefix}clean_acc``, ``{prefix}translated_acc``, ``{prefix}small_shift_acc``,
        ``{prefix}translated_over_clean``, ``{prefix}acc_shift/...``."""
        out = {f"{prefix}clean_acc": self.clean_acc, f"{prefix}translated_acc": self.translated_acc,
               f"{prefix}small_shift_acc": self.small_shift_acc,
               f"{prefix}translated_over_clean": self.translated_over_clean}
        out.update({f"{prefix}acc_shift/{shift_name(s)}": a for s, a in self.per_shift.items()})
        return out

    def per_image(self, indices: torch.Tensor) -> PerImage:
        """The per-image record of this evaluation, for :func:`study.train.predictions.save_predictions`."""
        if self.correct is None:
            raise ValueError("evaluated without keep_per_image")
        return PerImage(tuple(self.per_shift), indices.cpu().numpy(), self.correct.cpu().numpy())


@torch.inference_mode()
def translation_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         shifts: Sequence[Shift], fill: torch.Tensor | float = 0.0,
                         device: torch.device | str = "cpu", max_batch: int = 2048,
                         keep_per_image: bool = False) -> TranslationResult:
    """Accuracy of ``model`` on ``images`` under every shift (``(0, 0)`` is added if missing).

    ``keep_per_image`` also returns the bool [S, N] correctness (1 bit per image and shift once saved).
    """
    shifts = list(dict.fromkeys([(0, 0), *shifts]))
    was_training = model.training
    model.eval()
    device = torch.device(device)
    correct = torch.zeros(len(shifts), dtype=torch.long, device=device)
    hits: list[torch.Tensor] = []
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
            hit = predicted == y
            correct += hit.sum(dim=1)
            if keep_per_image:
                hits.append(hit.cpu())
    finally:
        model.train(was_training)
    accuracy = (correct.double() / max(1, len(images))).tolist()
    per_image = torch.cat(hits, dim=1) if keep_per_image and hits else None
    return TranslationResult(dict(zip(shifts, accuracy)), per_image)
