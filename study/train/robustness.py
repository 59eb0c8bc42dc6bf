"""Robustness families as plug-ins: a named grid of image transformations and the metric it gives.

Why: the study's robustness probe is translation (the 33-shift grid of :mod:`study.train.data`,
``translated_acc``), and it stays the search objective. Other shifts of the input distribution are
families registered under a name, each with its own grid and its own metric names, so a study can
also report them (``run_study.py --robustness rotation,noise``) and a user's module can add one::

    from study.train.robustness import Family, register_family

    register_family(Family("blur", metric="blurred_acc", grid=(0, 1, 2), identity=0,
                           views=my_blur_views, label=lambda k: f"kernel_{k}"))

A family's ``views(images, grid, mean, std)`` returns every transformed copy at once, [S, N, C, H, W]
for normalized images [N, C, H, W] (``mean``/``std`` per channel, to fill or scale in pixel terms).
Its metrics, on a split with prefix ``test_``: ``test_<metric>`` (the mean accuracy over the grid's
non-identity points) and ``test_acc_<family>/<label>`` per point, as ``test_acc_shift/dx_2_dy_0`` is
for translation. The built-in families:

- ``translation``: the study's shift grid (``translated_acc``, ``acc_shift/dx_<dx>_dy_<dy>``);
- ``rotation``: +-15, 30, 45 degrees about the centre (``rotated_acc``, ``acc_rotation/deg_<a>``);
- ``scaling``: zoom by 0.75, 0.9, 1.1, 1.25 about the centre (``scaled_acc``, ``acc_scaling/scale_<s>``);
- ``noise``: Gaussian pixel noise of sigma 0.1, 0.2, 0.3 in [0, 1] pixel units, seeded
  (``noisy_acc``, ``acc_noise/sigma_<s>``).

Rotation and scaling fill what enters the frame with black, like translation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from study.errors import UserError
from study.train.data import shift_grid, shift_name, translated_views

Views = Callable[[torch.Tensor, Sequence[Any], torch.Tensor, torch.Tensor], torch.Tensor]
#: The noise family's seed: every model is scored on the same noisy images.
NOISE_SEED = 0


class RobustnessError(UserError, ValueError):
    """A robustness family is unknown or registered twice."""


@dataclass(frozen=True)
class Family:
    """A robustness family: its grid (the identity first), how to make the views, how to name a point."""

    name: str
    metric: str
    grid: tuple
    identity: Any
    views: Views
    label: Callable[[Any], str]
    description: str = ""

    def metric_names(self, prefix: str = "") -> list[str]:
        return [f"{prefix}{self.metric}", *(f"{prefix}acc_{self.name}/{self.label(p)}" for p in self.grid)]


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Make ``family`` available by its name (``--robustness NAME``). The same family again is harmless."""
    known = _FAMILIES.get(family.name)
    if known is not None and known != family:
        raise RobustnessError(f"robustness family {family.name!r} is registered twice")
    if family.identity not in family.grid:
        raise RobustnessError(f"robustness family {family.name!r}: its grid must hold its identity {family.identity!r}")
    _FAMILIES[family.name] = family
    return family


def family_names() -> list[str]:
    return list(_FAMILIES)


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise RobustnessError(f"unknown robustness family {name!r}; valid: {', '.join(family_names())} (register "
                              f"one with register_family in a module named by --import)") from None


# ----------------------------------------------------------------------------- the built-in families

def _fill(mean: torch.Tensor, std: torch.Tensor) -> list[float]:
    return (-mean / std).tolist()


def _translation_views(images: torch.Tensor, grid: Sequence[Any], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return translated_views(images, list(grid), (-mean / std).to(images.device))


def _rotation_views(images: torch.Tensor, grid: Sequence[Any], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2.functional import rotate

    fill = _fill(mean, std)
    return torch.stack([images if angle == 0 else rotate(images, float(angle), fill=fill) for angle in grid])


def _scaling_views(images: torch.Tensor, grid: Sequence[Any], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2.functional import affine

    fill = _fill(mean, std)
    return torch.stack([images if scale == 1 else affine(images, angle=0.0, translate=[0, 0], scale=float(scale),
                                                         shear=[0.0, 0.0], fill=fill) for scale in grid])


def _noise_views(images: torch.Tensor, grid: Sequence[Any], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(NOISE_SEED)
    noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
    per_channel = (1.0 / std).to(images.device, images.dtype).view(1, -1, 1, 1)  # pixel sigma in normalized units
    return torch.stack([images + float(sigma) * per_channel * noise for sigma in grid])


def _number(value: float) -> str:
    return f"{value:g}"


TRANSLATION = register_family(Family(
    "translation", "translated_acc", tuple(shift_grid()), (0, 0), _translation_views,
    shift_name, "shifts of 2-8 px in the 8 compass directions, scaled with the side of images over 32 px "
                "(the study's probe and objective; ImageData.shifts)"))
register_family(Family("rotation", "rotated_acc", (0, -45, -30, -15, 15, 30, 45), 0, _rotation_views,
                       lambda a: f"deg_{_number(a)}", "rotations of 15, 30, 45 degrees either way"))
register_family(Family("scaling", "scaled_acc", (1.0, 0.75, 0.9, 1.1, 1.25), 1.0, _scaling_views,
                       lambda s: f"scale_{_number(s)}", "zoom out (0.75, 0.9) and in (1.1, 1.25) about the centre"))
register_family(Family("noise", "noisy_acc", (0.0, 0.1, 0.2, 0.3), 0.0, _noise_views,
                       lambda s: f"sigma_{_number(s)}", "Gaussian pixel noise of sigma 0.1-0.3 (pixels in [0, 1])"))


# ----------------------------------------------------------------------------- evaluation

@dataclass
class FamilyResult:
    """Accuracy at every point of a family's grid; its metric is the mean over the non-identity points."""

    family: Family
    per_point: dict[Any, float] = field(default_factory=dict)

    @property
    def clean_acc(self) -> float:
        return self.per_point[self.family.identity]

    @property
    def value(self) -> float:
        others = [acc for point, acc in self.per_point.items() if point != self.family.identity]
        return sum(others) / len(others) if others else float("nan")

    def metrics(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}{self.family.metric}": self.value}
        out.update({f"{prefix}acc_{self.family.name}/{self.family.label(p)}": a for p, a in self.per_point.items()})
        return out


@torch.inference_mode()
def family_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, family: Family,
                    mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu",
                    max_batch: int = 2048) -> FamilyResult:
    """Accuracy of ``model`` on ``images`` at every point of ``family``'s grid, in chunks of views."""
    grid = list(family.grid)
    device = torch.device(device)
    mean_t, std_t = torch.tensor(list(mean), dtype=torch.float32), torch.tensor(list(std), dtype=torch.float32)
    was_training = model.training
    model.eval()
    correct = torch.zeros(len(grid), dtype=torch.long)
    chunk = max(1, max_batch // len(grid))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    try:
        for start in range(0, len(images), chunk):
            x = images[start:start + chunk]
            y = labels[start:start + chunk].to(device)
            views = family.views(x, grid, mean_t, std_t).to(device)  # [S, n, C, H, W]
            with autocast:
                logits = model(views.flatten(0, 1))[0]
            correct += (logits.argmax(dim=1).view(len(grid), -1) == y).sum(dim=1).cpu()
    finally:
        model.train(was_training)
    accuracy = (correct.double() / max(1, len(images))).tolist()
    return FamilyResult(family, dict(zip(grid, accuracy)))
