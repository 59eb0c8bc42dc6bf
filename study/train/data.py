"""Datasets as in-memory tensors, seeded splits, and translated test sets.

Everything a trial needs fits in memory (MNIST train is 188 MB as float32), so
datasets are loaded once into normalized tensors and batches are slices by a
permutation: no DataLoader, no per-sample Python in the hot path. Datasets are
registered loaders (:mod:`study.train.datasets`: the shipped ones, a user's, an
image folder); one whose float32 tensors would not fit the memory limit (half the
machine's memory, or ``$LEVELED_KD_DATA_LIMIT_GB``) is refused in one line.

Translation (the study's robustness probe) shifts whole images by (dx, dy)
pixels with zero fill, i.e. black background in pixel space; on normalized
tensors that is the per-channel value ``(0 - mean) / std`` (:attr:`ImageData.fill`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from study.train.datasets import (SHIPPED, DataNotFoundError, as_raw, check_fits,  # noqa: F401  (re-exported)
                                  dataset_entry, read_image_folder)

#: The shipped datasets (every registered one: :func:`~study.train.datasets.dataset_names`).
DATASETS = SHIPPED

#: The 8 compass directions as unit (dx, dy); +dx is right, +dy is down.
COMPASS = ((0, -1), (1, -1), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1))
#: Default shift magnitudes in pixels: 0 plus these in each compass direction (33 shifts).
DEFAULT_MAGNITUDES = (2, 4, 6, 8)
#: Images up to this side (MNIST's 28, CIFAR's 32) are shifted by the poster's pixels; larger ones by
#: the same fractions of their side (:func:`shift_magnitudes_for`).
REFERENCE_SIDE = 32

Shift = tuple[int, int]


@dataclass
class ImageData:
    """A dataset held in memory: normalized float32 images [N, C, H, W] and int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: the translation grid's magnitudes in pixels (None: :func:`shift_magnitudes_for` the image size)
    shift_magnitudes: tuple[int, ...] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    @property
    def shifts(self) -> list[Shift]:
        """The translation grid this dataset is scored on: (0, 0) and every magnitude in 8 directions."""
        _, height, width = self.input_shape
        return shift_grid(self.shift_magnitudes or shift_magnitudes_for(height, width))

    @property
    def fill(self) -> torch.Tensor:
        """Per-channel normalized value of a black pixel: what translation fills in."""
        return torch.tensor([-m / s for m, s in zip(self.mean, self.std)])


# ----------------------------------------------------------------------------- loading

def load_dataset(name: str, root: str | os.PathLike, download: bool = True) -> ImageData:
    """Load the registered dataset ``name`` (:mod:`study.train.datasets`) from ``root``, downloading
    it if allowed and missing, and normalize it per channel.

    The loader's raw images are checked (:func:`~study.train.datasets.as_raw`) and sized against the
    memory limit (:func:`~study.train.datasets.check_fits`) before they become float32. The
    normalization is the dataset's own when it fixes one (``RawImages.mean``/``std``), else the
    training split's per-channel mean and standard deviation.
    """
    entry = dataset_entry(name)
    root = Path(root).expanduser()
    raw = as_raw(name, entry.loader(root, download))
    check_fits(name, len(raw.train_x) + len(raw.test_x), raw.train_x.shape[1:])
    scale = 255.0 if raw.train_x.dtype == torch.uint8 else 1.0
    if raw.mean is not None and raw.std is not None:
        mean, std = torch.tensor(raw.mean), torch.tensor(raw.std)
    else:
        x = raw.train_x.float().div_(scale)
        mean = x.mean(dim=(0, 2, 3)) if raw.mean is None else torch.tensor(raw.mean)
        std = x.std(dim=(0, 2, 3)) if raw.std is None else torch.tensor(raw.std)
        del x

    def normalize(images: torch.Tensor) -> torch.Tensor:
        return images.float().div_(scale).sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    top = int(max(raw.train_y.max(), raw.test_y.max()))
    return ImageData(
        name=name,
        train_x=normalize(raw.train_x), train_y=raw.train_y,
        test_x=normalize(raw.test_x), test_y=raw.test_y,
        num_classes=len(raw.classes) if raw.classes is not None else top + 1,
        mean=tuple(mean.tolist()), std=tuple(std.tolist()),
        shift_magnitudes=raw.shift_magnitudes,
    )


# ----------------------------------------------------------------------------- splits

def stratified_indices(labels: torch.Tensor, fraction: float | None = None, count: int | None = None,
                       seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split positions ``0..len(labels)-1`` into (chosen, rest), per class, seeded.

    Choose either a ``fraction`` of every class or ``count`` positions in total
    (spread over classes in proportion to their sizes).
    """
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction or count")
    n = len(labels)
    if count is not None and not 0 < count <= n:
        raise ValueError(f"subset size must be in 1..{n}, got {count}")
    generator = torch.Generator().manual_seed(seed)
    classes, sizes = torch.unique(labels, return_counts=True)
    total = int(round(fraction * n)) if fraction is not None else int(count)
    # largest-remainder quotas: proportional per class and exactly ``total`` overall
    exact = sizes.double() * total / n
    quotas = exact.floor().long()
    quotas[torch.argsort(exact - quotas, descending=True)[: total - int(quotas.sum())]] += 1
    chosen = []
    for cls, quota in zip(classes, quotas.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)][:quota])
    picked = torch.cat(chosen).sort().values
    mask = torch.ones(n, dtype=torch.bool)
    mask[picked] = False
    return picked, torch.nonzero(mask).flatten()


#: Seed of every evaluation subset (test, validation, teacher-snapshot scoring): fixed, so every
#: trial and every study that asks for the same number of images scores the same images.
EVAL_SEED = 0
#: How evaluation subsets are drawn, as studies and bank manifests record it. Before this existed,
#: a subset was a prefix of its split (``"prefix"``), which on a class-sorted dataset (an image
#: folder read class by class, e.g. the offline CIFAR-10) held only the first classes.
EVAL_SUBSET = "stratified"


def evaluation_indices(labels: torch.Tensor, size: int | None = None, seed: int = EVAL_SEED) -> torch.Tensor:
    """Positions (sorted) of ``size`` items of ``labels`` to evaluate on: a seeded, stratified sample,
    so every class is in it in proportion whatever order the dataset is stored in; all of them when
    ``size`` is None, 0 or at least ``len(labels)``.

    Never a prefix: a dataset's order is not to be trusted (an image folder is read class by class).
    The same ``labels``, ``size`` and ``seed`` give the same positions, so paired comparisons
    across trials and studies hold.
    """
    n = len(labels)
    if not size or size >= n:
        return torch.arange(n)
    if size < 0:
        raise ValueError(f"an evaluation subset needs a positive size, got {size}")
    return stratified_indices(labels, count=size, seed=seed)[0]


@dataclass(frozen=True)
class Split:
    """Indices into ``ImageData.train_*``: what a student trains on and what selects hyperparameters."""

    train: torch.Tensor
    val: torch.Tensor


#: The validation split is a fixed property of a dataset (10%, stratified, seed 0): teachers
#: never train on it and every study selects on the same images, whatever its budget.
VAL_FRACTION = 0.1
VAL_SEED = 0


def train_val_split(data: ImageData, train_subset: int | None = None, seed: int = 0,
                    val_fraction: float = VAL_FRACTION) -> Split:
    """Hold out the stratified validation split, then optionally subsample the rest (seeded by ``seed``).

    The test set is never used to select hyperparameters, only to report.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    val, rest = stratified_indices(data.train_y, fraction=val_fraction, seed=VAL_SEED)
    if train_subset is not None and train_subset < len(rest):
        picked, _ = stratified_indices(data.train_y[rest], count=train_subset, seed=seed + 1)
        rest = rest[picked]
    return Split(train=rest, val=val)


# ----------------------------------------------------------------------------- translation

def shift_magnitudes_for(height: int, width: int) -> tuple[int, ...]:
    """The shift magnitudes for images of this size: the poster's 2-8 px up to ``REFERENCE_SIDE``
    (so MNIST and CIFAR-10 keep the grid every published number used), else the same fractions of
    the shorter side (224 px: 14, 28, 42, 56), since 8 px of a large photo is no shift at all."""
    side = min(height, width)
    if side <= REFERENCE_SIDE:
        return DEFAULT_MAGNITUDES
    return tuple(dict.fromkeys(max(1, round(m * side / REFERENCE_SIDE)) for m in DEFAULT_MAGNITUDES))


def shift_grid(magnitudes: Sequence[int] = DEFAULT_MAGNITUDES) -> list[Shift]:
    """(0, 0) followed by every magnitude in each of the 8 compass directions."""
    if any(m <= 0 for m in magnitudes):
        raise ValueError(f"shift magnitudes must be positive, got {list(magnitudes)}")
    return [(0, 0)] + [(m * ux, m * uy) for m in magnitudes for ux, uy in COMPASS]


def translated_views(images: torch.Tensor, shifts: Sequence[Shift],
                     fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """All shifted copies at once: [S, N, C, H, W] for ``images`` [N, C, H, W].

    Pixel (y, x) moves to (y + dy, x + dx); what leaves the frame is gone and
    what enters is ``fill`` (a scalar or one value per channel).
    """
    n, c, h, w = images.shape
    pad = max([0] + [max(abs(dx), abs(dy)) for dx, dy in shifts])
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device).reshape(-1)
    canvas = fill.view(1, -1, 1, 1).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    canvas[:, :, pad:pad + h, pad:pad + w] = images
    return torch.stack([canvas[:, :, pad - dy:pad - dy + h, pad - dx:pad - dx + w] for dx, dy in shifts])


def translate(images: torch.Tensor, dx: int, dy: int, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Shift every image by (dx, dy) pixels with ``fill`` where nothing was."""
    return translated_views(images, [(dx, dy)], fill)[0]


def shift_name(shift: Shift) -> str:
    """Metric-name-safe label of a shift, e.g. ``dx_2_dy_-2``."""
    return f"dx_{shift[0]}_dy_{shift[1]}"
