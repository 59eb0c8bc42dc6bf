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

import os
from pathlib import Path
from typing import Any

import torch

from study.train.dataset_registry import (LIMIT_ENV, DataNotFoundError, DatasetEntry, DatasetError,  # noqa: F401
                                          Loader, RawImages, _add, _DATASETS, as_raw, check_fits, dataset_entry,
                                          dataset_names, memory_limit_bytes, register_dataset)
from study.train.image_folders import (IMAGE_SUFFIXES, dataset_from_path, image_folder_loader,  # noqa: F401
                                       read_image_folder, register_image_folder)


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
