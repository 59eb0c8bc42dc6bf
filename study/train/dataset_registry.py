"""The dataset registry's core: the loaders by name, what a loader returns (:class:`RawImages`),
and the checks a loader's images pass before a study converts them.

Why apart from :mod:`study.train.datasets` (which holds the sources, the shipped datasets and
``--dataset``'s resolution, and re-exports all of this): the image-folder reader
(:mod:`study.train.image_folders`) and every source register through these few names, and import
them from here without importing each other.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from study.errors import UserError

#: Environment variable: the most memory (GB) a dataset's float32 tensors may take.
LIMIT_ENV = "LEVELED_KD_DATA_LIMIT_GB"


class DataNotFoundError(UserError, RuntimeError):
    """A dataset is neither on disk nor downloadable; the message says how to provide it."""


class DatasetError(UserError, ValueError):
    """A dataset name is unknown, a loader returned something the study cannot use, or a dataset
    would not fit in memory; the message says which and how to fix it."""


@dataclass
class RawImages:
    """What a dataset loader returns: images as uint8 [N, C, H, W] (or floats in [0, 1]; [N, H, W]
    is one channel) and integer labels 0..K-1, for the training and the test split.

    ``classes`` names the K classes (default: as many as the largest label says); ``mean`` and
    ``std`` (per channel, in [0, 1] pixel units) fix the normalization, e.g. the one a pretrained
    teacher was trained with (default: the training split's own statistics). ``shift_magnitudes``
    (pixels) sets the translation grid (default: 2, 4, 6, 8 px up to 32-px images, scaled with the
    side beyond).
    """

    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any
    classes: Sequence[str] | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    shift_magnitudes: Sequence[int] | None = None


Loader = Callable[[Path, bool], "RawImages | tuple"]


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset: its loader and what ``--list-keys`` says of it."""

    name: str
    loader: Loader
    description: str = ""
    #: what identifies the registration (an image folder's path and options), so that registering
    #: the same thing twice is harmless and registering another thing under a taken name is not
    origin: tuple = field(default=(), compare=False)


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, description: str = "") -> Callable[[Loader], Loader]:
    """Decorator: make ``load_dataset(name, root)`` call this ``loader(root, download)``.

    The loader returns :class:`RawImages` (or ``((train_x, train_y), (test_x, test_y))``). A name is
    registered once; registering the same function again (a module imported twice) is harmless.
    """
    if not isinstance(name, str) or not name or "/" in name or name != name.strip():
        raise DatasetError(f"a dataset name must be a non-empty string without '/', got {name!r}")

    def decorate(loader: Loader) -> Loader:
        _add(DatasetEntry(name, loader, description or (loader.__doc__ or "").strip().split("\n")[0],
                          origin=(getattr(loader, "__module__", ""), getattr(loader, "__qualname__", ""))))
        return loader

    return decorate


def _add(entry: DatasetEntry) -> None:
    known = _DATASETS.get(entry.name)
    if known is not None and known.origin != entry.origin:
        raise DatasetError(f"dataset {entry.name!r} is registered twice ({_origin_text(known)} and "
                           f"{_origin_text(entry)}); give one of them another name")
    _DATASETS[entry.name] = entry


def _origin_text(entry: DatasetEntry) -> str:
    return ":".join(str(part) for part in entry.origin if part) or "?"


def dataset_names() -> list[str]:
    """Registered datasets, in the order they were registered (the shipped ones first)."""
    return list(_DATASETS)


def dataset_entry(name: str) -> DatasetEntry:
    try:
        return _DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; valid choices: {', '.join(dataset_names())} (register one "
                           f"with @register_dataset in a module named by --import or a space's imports:, or give "
                           f"an image folder's path)") from None


# ----------------------------------------------------------------------------- checks

def as_raw(name: str, value: Any) -> RawImages:
    """A loader's return value as checked :class:`RawImages`: tensors of the right ranks, dtypes and
    lengths, the same image shape in both splits, labels in 0..K-1; else a one-line DatasetError."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, (tuple, list)) and len(v) == 2
                                                             for v in value):
        (train_x, train_y), (test_x, test_y) = value
        value = RawImages(train_x, train_y, test_x, test_y)
    if not isinstance(value, RawImages):
        raise DatasetError(f"dataset {name!r}: its loader returned {type(value).__name__}; return RawImages("
                           f"train_x, train_y, test_x, test_y) or ((train_x, train_y), (test_x, test_y))")
    parts = {}
    for split in ("train", "test"):
        x = _tensor(name, f"{split}_x", getattr(value, f"{split}_x"))
        y = _tensor(name, f"{split}_y", getattr(value, f"{split}_y"))
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4:
            raise DatasetError(f"dataset {name!r}: {split}_x has shape {list(x.shape)}; images must be "
                               f"[N, C, H, W] (or [N, H, W] for one channel)")
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise DatasetError(f"dataset {name!r}: {split}_x is {x.dtype}; images must be uint8 (0-255) or "
                               f"floats in [0, 1]")
        if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
            raise DatasetError(f"dataset {name!r}: {split}_y must be a 1-D tensor of integer labels, got "
                               f"{y.dtype} of shape {list(y.shape)}")
        if len(x) != len(y) or len(x) == 0:
            raise DatasetError(f"dataset {name!r}: {split}_x has {len(x)} images but {split}_y {len(y)} labels")
        if int(y.min()) < 0:
            raise DatasetError(f"dataset {name!r}: {split}_y has negative labels; labels must be 0..K-1")
        parts[split] = (x, y.long())
    (train_x, train_y), (test_x, test_y) = parts["train"], parts["test"]
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(f"dataset {name!r}: training images are {list(train_x.shape[1:])} but test images "
                           f"{list(test_x.shape[1:])}; both splits need one [C, H, W]")
    classes = None if value.classes is None else tuple(str(c) for c in value.classes)
    top = int(max(train_y.max(), test_y.max()))
    if classes is not None and top >= len(classes):
        raise DatasetError(f"dataset {name!r}: label {top} but only {len(classes)} classes are named")
    for stat in ("mean", "std"):
        given = getattr(value, stat)
        if given is not None and (len(given) != train_x.shape[1] or (stat == "std" and min(given) <= 0)):
            raise DatasetError(f"dataset {name!r}: {stat} needs one {'positive ' if stat == 'std' else ''}value "
                               f"per channel ({train_x.shape[1]}), got {list(given)}")
    return RawImages(train_x, train_y, test_x, test_y, classes,
                     None if value.mean is None else tuple(map(float, value.mean)),
                     None if value.std is None else tuple(map(float, value.std)),
                     _magnitudes(name, value.shift_magnitudes, train_x.shape[2:]))


def _magnitudes(name: str, given: Sequence[int] | None, size: Sequence[int]) -> tuple[int, ...] | None:
    if given is None:
        return None
    values = list(given) if isinstance(given, (list, tuple)) else None
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values) \
            or len(set(values)) != len(values):
        raise DatasetError(f"dataset {name!r}: shift_magnitudes must be distinct positive pixel counts, got {given!r}")
    if max(values) >= min(size):
        raise DatasetError(f"dataset {name!r}: a shift of {max(values)} px moves a {min(size)}-px image out of its "
                           f"frame; shift_magnitudes must stay below the image side")
    return tuple(sorted(values))


def _tensor(name: str, what: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise DatasetError(f"dataset {name!r}: {what} is {type(value).__name__}, not a tensor or array") from None


def memory_limit_bytes() -> int:
    """The most memory a dataset's float32 tensors may take: ``$LEVELED_KD_DATA_LIMIT_GB``, else half
    of this machine's physical memory (the driver holds one copy, Ray's object store another)."""
    text = os.environ.get(LIMIT_ENV)
    if text:
        try:
            return int(float(text) * 1e9)
        except ValueError:
            raise DatasetError(f"${LIMIT_ENV}={text!r} is not a number of gigabytes") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 10**9


def check_fits(name: str, images: int, shape: Sequence[int], bytes_per_value: int = 4) -> None:
    """Refuse, in one line, a dataset of ``images`` images of ``shape`` (C, H, W) whose tensors would
    take more than :func:`memory_limit_bytes` at ``bytes_per_value`` (float32: 4)."""
    need = images * int(torch.tensor(list(shape)).prod()) * bytes_per_value
    limit = memory_limit_bytes()
    if need > limit:
        raise DatasetError(
            f"dataset {name!r} needs {need / 1e9:.1f} GB in memory ({images} images of {'x'.join(map(str, shape))} "
            f"as float32), more than the limit of {limit / 1e9:.1f} GB (half this machine's memory, or "
            f"${LIMIT_ENV}); use fewer or smaller images (an image folder's resize:)")
