"""Image folders as datasets, with no code: ``<folder>/{train,test}/<class>/<image>`` (or ``<class>/``
folders alone and a test fraction), decoded once to uint8 and cached beside the folder.

:func:`register_image_folder` is what a space's ``dataset: {image_folder: PATH}`` and ``--dataset PATH``
call; :func:`read_image_folder` also reads the shipped CIFAR-10 JPEG layout.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch

from study.train.dataset_registry import (DataNotFoundError, DatasetEntry, DatasetError, Loader, RawImages, _add,
                                          check_fits)

#: Image file extensions an image folder is read from (decoded by torchvision.io).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


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
