"""Datasets as plug-ins: a registry of loaders, by name, that return raw images in memory.

Why a registry: a study's dataset used to be one of three hard-coded names. Now a dataset is a
function registered under a name, the shipped ones (``mnist``, ``fashion_mnist``, ``cifar10``)
included, so a user's dataset is one decorated function in a module of their own (named by
``--import`` or a space's ``imports:``), never an edit of the package::

    from study.train.datasets import RawImages, register_dataset

    @register_dataset("shapes", description="coloured shapes, 32x32")
    def load_shapes(root, download):            # root: --data-root; download: not --no-download
        return RawImages(train_x, train_y, test_x, test_y)   # uint8 [N, C, H, W], int labels

An image folder (``<folder>/{train,test}/<class>/<image>``) needs no code at all:
:func:`register_image_folder`, which a space's ``dataset: {image_folder: PATH}`` calls.

A loader returns *raw* images: uint8 (or floats in [0, 1]), which :func:`study.train.data.load_dataset`
checks, sizes against the memory limit (:func:`check_fits`) and normalizes. Everything stays in
memory, as the training loop slices batches out of tensors (no DataLoader): a dataset must fit as
float32 tensors, once in the driver and once in Ray's object store. The limit is half this
machine's memory unless ``LEVELED_KD_DATA_LIMIT_GB`` says otherwise; a dataset over it fails in one
line before it is converted.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from study.errors import UserError

#: Environment variable: the most memory (GB) a dataset's float32 tensors may take.
LIMIT_ENV = "LEVELED_KD_DATA_LIMIT_GB"
#: Image file extensions an image folder is read from (decoded by torchvision.io).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


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


# ----------------------------------------------------------------------------- image folders

def folder_images(folder: Path) -> list[tuple[str, Path]]:
    """(class, file) of every image under ``folder/<class>/``, classes and files in sorted order."""
    found = []
    for cls in sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += [(cls, path) for path in sorted((folder / cls).iterdir())
                  if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    return found


def _fingerprint(files: list[tuple[str, Path]], resize: tuple[int, int] | None) -> str:
    digest = hashlib.sha256(repr(resize).encode())
    for cls, path in files:
        stat = path.stat()
        digest.update(f"{cls}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def read_image_folder(folder: Path, resize: Sequence[int] | None = None, classes: Sequence[str] | None = None,
                      name: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode an image-folder tree into uint8 [N, C, H, W] and labels, cached as one ``.pt`` beside it.

    Every image is decoded as RGB (3 channels) unless all of the folder's first images are grayscale
    (then 1 channel). ``classes`` fixes the label of each class folder (the training split's, for the
    test split); ``resize`` = (H, W) resizes every image, else all must have one size. The cache
    (``.<split>-tensors.pt``; ``-HxW`` with a resize) records the listing it was decoded from and is
    decoded again when files change; a cache from before listings were recorded is trusted as before.
    """
    from torchvision.io import ImageReadMode, decode_image, read_file

    name = name or folder.name
    if not folder.is_dir():
        raise DataNotFoundError(f"dataset {name!r}: no folder {folder} (an image folder needs "
                                f"train/<class>/<image> and test/<class>/<image>)")
    size = tuple(int(v) for v in resize) if resize else None
    cache = folder.parent / (f".{folder.name}-tensors.pt" if size is None else
                             f".{folder.name}-tensors-{size[0]}x{size[1]}.pt")
    files = folder_images(folder)
    if not files:
        raise DatasetError(f"dataset {name!r}: no images under {folder}/<class>/ (looked for "
                           f"{', '.join(IMAGE_SUFFIXES)})")
    known = list(classes) if classes is not None else sorted({cls for cls, _ in files})
    unknown = sorted({cls for cls, _ in files} - set(known))
    if unknown:
        raise DatasetError(f"dataset {name!r}: {folder} has class folders {unknown} that the training split "
                           f"does not have")
    fingerprint = _fingerprint(files, size)
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved.get("fingerprint", fingerprint) == fingerprint:
            return saved["x"], saved["y"]
    first = decode_image(read_file(str(files[0][1])), mode=ImageReadMode.UNCHANGED)
    channels = 1 if first.shape[0] == 1 else 3
    shape = (channels, *(size or tuple(first.shape[1:])))
    check_fits(name, len(files), shape, bytes_per_value=1)
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    x = torch.empty((len(files), *shape), dtype=torch.uint8)
    labels = []
    for i, (cls, path) in enumerate(files):
        try:
            image = decode_image(read_file(str(path)), mode=mode)
        except RuntimeError as error:
            raise DatasetError(f"dataset {name!r}: cannot decode {path}: {str(error).splitlines()[0]}") from None
        if size is not None and tuple(image.shape[1:]) != size:
            from torchvision.transforms.v2.functional import resize as resize_image

            image = resize_image(image, list(size), antialias=True)
        if tuple(image.shape) != shape:
            raise DatasetError(f"dataset {name!r}: {path} is {image.shape[1]}x{image.shape[2]} but "
                               f"{files[0][1].name} is {shape[1]}x{shape[2]} (height x width, {shape[0]} "
                               f"channel{'s' if shape[0] > 1 else ''}); give the image folder a resize: [H, W]")
        x[i] = image
        labels.append(known.index(cls))
    y = torch.tensor(labels)
    try:
        torch.save({"x": x, "y": y, "fingerprint": fingerprint}, cache)
    except OSError:
        pass  # read-only data root: decode again next time
    return x, y


#: Seed of the split of a single image folder into training and test images.
SPLIT_SEED = 0


def _classes(folder: Path, name: str) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DatasetError(f"dataset {name!r}: {folder} has {len(classes)} class folder(s) {classes}; a classifier "
                           f"needs at least two (one folder per class: {folder}/<class>/<image>)")
    return classes


def _split(labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """Positions of a seeded, stratified ``fraction`` of ``labels`` (at least one per class)."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    test = []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        count = max(1, round(fraction * len(members))) if len(members) > 1 else 0
        test.append(members[torch.randperm(len(members), generator=generator)][:count])
    return torch.cat(test).sort().values


def image_folder_loader(folder: Path, resize: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                        std: Sequence[float] | None = None, name: str | None = None,
                        test_fraction: float | None = None,
                        shift_magnitudes: Sequence[int] | None = None) -> Loader:
    """A loader for ``folder/{train,test}/<class>/<image>``: classes are the training split's folder
    names, sorted; the test split's folders must be among them. With ``test_fraction``, a folder of
    ``<class>/`` folders alone is split, per class and seeded, into training and test images."""
    folder = Path(folder).expanduser()

    def load(root: Path, download: bool) -> RawImages:
        label = name or folder.name
        if not folder.is_dir():
            raise DataNotFoundError(f"dataset {label!r}: no folder {folder} (an image folder needs train/<class>/ "
                                    f"and test/<class>/ folders of images, or <class>/ folders and a test_fraction)")
        if not (folder / "train").is_dir() or not (folder / "test").is_dir():
            if test_fraction is None:
                raise DataNotFoundError(f"dataset {label!r}: {folder} needs train/<class>/ and test/<class>/ folders "
                                        f"of images (or give test_fraction: to split <class>/ folders)")
            classes = _classes(folder, label)
            x, y = read_image_folder(folder, resize, classes=classes, name=name)
            test = _split(y, test_fraction)
            keep = torch.ones(len(y), dtype=torch.bool)
            keep[test] = False
            return RawImages(x[keep], y[keep], x[test], y[test], classes, mean, std, shift_magnitudes)
        classes = _classes(folder / "train", label)
        train_x, train_y = read_image_folder(folder / "train", resize, classes=classes, name=name)
        test_x, test_y = read_image_folder(folder / "test", resize, classes=classes, name=name)
        return RawImages(train_x, train_y, test_x, test_y, classes, mean, std, shift_magnitudes)

    return load


def register_image_folder(name: str, folder: str | os.PathLike, resize: Sequence[int] | None = None,
                          mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                          description: str = "", test_fraction: float | None = None,
                          shift_magnitudes: Sequence[int] | None = None) -> str:
    """Register ``folder/{train,test}/<class>/<image>`` as dataset ``name`` (no code needed: a space's
    ``dataset: {image_folder: PATH}`` and ``--dataset PATH`` call this). Registering the same folder
    with the same options again is harmless. Returns ``name``."""
    folder = Path(folder).expanduser().resolve()
    if resize is not None and (len(resize) != 2 or any(int(v) < 1 for v in resize)):
        raise DatasetError(f"dataset {name!r}: resize needs [height, width] in pixels, got {list(resize)}")
    if test_fraction is not None and not 0 < test_fraction < 1:
        raise DatasetError(f"dataset {name!r}: test_fraction must be in (0, 1), got {test_fraction}")
    origin = ("image folder", str(folder), tuple(resize or ()), tuple(mean or ()), tuple(std or ()), test_fraction,
              tuple(shift_magnitudes or ()))
    loader = image_folder_loader(folder, resize, mean, std, name, test_fraction, shift_magnitudes)
    if not isinstance(name, str) or not name or "/" in name:
        raise DatasetError(f"a dataset name must be a non-empty string without '/', got {name!r}")
    _add(DatasetEntry(name, loader, description or f"image folder {folder}", origin=origin))
    return name


def dataset_from_path(path: str | os.PathLike) -> str:
    """``--dataset PATH``: the image folder at PATH, registered under its folder name; a folder of
    ``<class>/`` folders alone (no train/ and test/) is split 80/20, per class and seeded."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise DataNotFoundError(f"--dataset {path}: no such folder (an image folder needs train/<class>/ and "
                                f"test/<class>/ folders of images)")
    split = None if (folder / "train").is_dir() and (folder / "test").is_dir() else 0.2
    return register_image_folder(folder.name, folder, test_fraction=split)


def register_torchvision_dataset(class_name: str) -> str:
    """``torchvision:SVHN``: torchvision's dataset class by name, read (or downloaded) under
    ``--data-root``, registered as ``torchvision-<class, lowercased>``. Its in-memory arrays are used
    (``data`` and ``targets`` or ``labels``); the split is ``train=`` or ``split=``, whichever it takes."""
    name = f"torchvision-{class_name.lower()}"

    def load(root: Path, download: bool) -> RawImages:
        from torchvision import datasets as tv

        cls = getattr(tv, class_name, None)
        if not isinstance(cls, type):
            raise DatasetError(f"torchvision has no dataset {class_name!r} (e.g. torchvision:SVHN, torchvision:CIFAR100)")
        splits = []
        for train in (True, False):
            try:
                try:
                    dataset = cls(str(root), train=train, download=download)
                except TypeError:  # SVHN, STL10...: split= instead of train=
                    dataset = cls(str(root), split="train" if train else "test", download=download)
            except (RuntimeError, OSError) as error:
                raise _missing(name, root, "downloads disabled" if not download else error) from None
            splits.append(_arrays(name, dataset))
        (train_x, train_y), (test_x, test_y) = splits
        return RawImages(train_x, train_y, test_x, test_y, getattr(dataset, "classes", None))

    load.__qualname__ = f"torchvision:{class_name}"
    _add(DatasetEntry(name, load, f"torchvision's {class_name} under --data-root", origin=("torchvision", class_name)))
    return name


def _arrays(name: str, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision dataset's images as uint8 [N, C, H, W] and its labels."""
    import numpy as np

    data = getattr(dataset, "data", None)
    labels = getattr(dataset, "targets", None)
    labels = getattr(dataset, "labels", None) if labels is None else labels
    if data is None or labels is None:
        raise DatasetError(f"dataset {name!r}: {type(dataset).__name__} keeps no in-memory data/targets arrays; "
                           f"register a loader for it (@register_dataset) or export it as an image folder")
    x = torch.as_tensor(np.asarray(data))
    if x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2).contiguous()  # CIFAR's [N, H, W, C]
    return x, torch.as_tensor(np.asarray(labels)).long()


def register_function_dataset(spec: str) -> str:
    """``my_pkg.data:load``: a loader function of an importable module (``loader(root, download)``),
    registered as ``<module>-<function>``."""
    from study.train.plugins import import_plugin

    module_name, _, function = spec.rpartition(":")
    import_plugin(module_name)
    loader = getattr(__import__("sys").modules[module_name], function, None)
    if not callable(loader):
        raise DatasetError(f"dataset {spec!r}: module {module_name!r} has no function {function!r}")
    name = f"{module_name}-{function}"
    register_dataset(name)(loader)
    return name


def resolve_dataset(value: str) -> str:
    """A ``--dataset`` value as a registered name: a registered name stays; ``torchvision:CLASS`` is
    torchvision's dataset, ``imagefolder:PATH`` or a path (it has a '/') an image folder, and
    ``module:function`` a loader function; each is registered here."""
    if value in _DATASETS:
        return value
    scheme, _, rest = value.partition(":")
    if rest and scheme == "torchvision":
        return register_torchvision_dataset(rest)
    if rest and scheme == "imagefolder":
        return dataset_from_path(rest)
    if "/" in value or os.sep in value or value.startswith(("~", ".")):
        return dataset_from_path(value)
    if rest:
        return register_function_dataset(value)
    dataset_entry(value)  # unknown: one line listing the names
    return value


# ----------------------------------------------------------------------------- the shipped datasets

def _missing(name: str, root: Path, reason: object) -> DataNotFoundError:
    return DataNotFoundError(
        f"{name} not found under {root} and could not be downloaded ({reason}); "
        f"pass --data-root with torchvision's files, e.g. laid out by scripts/prepare_data.sh DIR"
    )


def _load_idx(name: str, root: Path, download: bool) -> RawImages:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]
    try:
        splits = [cls(root=str(root), train=train, download=False) for train in (True, False)]
    except RuntimeError as not_found:
        if not download:
            raise _missing(name, root, "downloads disabled") from not_found
        try:
            splits = [cls(root=str(root), train=train, download=True) for train in (True, False)]
        except Exception as error:  # no network, mirror down, read-only root...
            raise _missing(name, root, error) from error
    (train_x, train_y), (test_x, test_y) = [(d.data.unsqueeze(1), d.targets) for d in splits]
    return RawImages(train_x, train_y, test_x, test_y)


@register_dataset("mnist", description="MNIST digits, 1x28x28, 10 classes (torchvision's layout under --data-root)")
def load_mnist(root: Path, download: bool) -> RawImages:
    return _load_idx("mnist", root, download)


@register_dataset("fashion_mnist", description="Fashion-MNIST, 1x28x28, 10 classes (torchvision's layout)")
def load_fashion_mnist(root: Path, download: bool) -> RawImages:
    return _load_idx("fashion_mnist", root, download)


@register_dataset("cifar10", description="CIFAR-10, 3x32x32, 10 classes (torchvision's cifar-10-batches-py, or "
                                         "an image folder cifar10-jpeg/{train,test}/<class>/)")
def load_cifar10(root: Path, download: bool) -> RawImages:
    """CIFAR-10 from an ImageFolder JPEG layout ``root/cifar10-jpeg/{train,test}/<class>/`` or, failing
    that, torchvision's ``cifar-10-batches-py``."""
    from torchvision import datasets

    if (root / "cifar10-jpeg" / "test").is_dir():
        train_x, train_y = read_image_folder(root / "cifar10-jpeg" / "train", name="cifar10")
        test_x, test_y = read_image_folder(root / "cifar10-jpeg" / "test", name="cifar10")
        return RawImages(train_x, train_y, test_x, test_y)
    try:
        splits = [datasets.CIFAR10(root=str(root), train=t, download=download) for t in (True, False)]
    except Exception as error:
        raise _missing("cifar10", root, error) from error
    (train_x, train_y), (test_x, test_y) = [
        (torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(d.targets)) for d in splits]
    return RawImages(train_x, train_y, test_x, test_y)


#: The datasets the study ships, registered like any other.
SHIPPED = ("mnist", "fashion_mnist", "cifar10")
