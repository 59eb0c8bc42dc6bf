"""Views of the training images for function matching (Beyer et al. 2022, "Knowledge distillation:
A good teacher is patient and consistent"): the student matches the teacher on perturbed images,
which shows it how the teacher behaves *away from* the training images, not only on them.

Every view here leaves the content where it is: no shift, translation, crop or flip. The study
measures how much of a CNN's translation robustness an MLP inherits; a view that moved content
would teach translation directly, and the comparison with the CNN teacher would be void
(``tests/train/test_views.py`` checks each registered view with blob images and catches a
deliberately shifting one).

- ``mixup``: ``lam * x_i + (1 - lam) * x_j`` with a partner training image ``j != i``,
  ``lam ~ Beta(mixup_alpha, mixup_alpha)``; the CE term reads the mixed labels
  ``lam * CE(y_i) + (1 - lam) * CE(y_j)`` (terms that read a label, DKD, get the label with the
  larger weight).
- ``noise``: ``x + noise_std * n`` with ``n`` a standard normal image (normalized units: the
  dataset's pixel std is 1), taken from a fixed, seeded bank of :data:`NOISE_BANK` images.
- ``erase``: random erasing; a rectangle of ``erase_min``..``erase_max`` of the image's area
  (aspect ratio log-uniform in [0.3, 1/0.3]) is set to the dataset's fill value (black).

**Fixed views.** A :class:`ViewSet` (the run keys ``views``, ``views_k``, ``views_seed`` and the
view's own parameters) draws, once and from its seed, the small parameters of ``K`` views of every
training image (a partner index and a lambda; an index into the noise bank; an erase box). A view
is fully determined by them, so the teacher's outputs on every (image, view) can be cached once in
its snapshot bank (:meth:`study.teachers.bank.TeacherBank.outputs` with ``views=``, keyed by the
view set and the training indices) and no student ever runs a teacher. In training,
:class:`ViewBatches` (a :class:`~study.train.transforms.BatchTransform`) picks one of its ``K``
views per sample and step (seeded by the trainer, so a resumed run picks the same) and builds the
batch's views at once from those parameters: a gather and a few elementwise operations, no
per-sample Python. The views are the same for every student seed (their seed is ``views_seed``),
so one cache serves them all.

**What K costs.** A view cache holds ``K`` outputs per image: its size is ``K x`` a plain cache
(CNN_1 on the 54,000 MNIST training images: 266 floats per output, 54.8 MiB plain, 219 MiB for
K=4, measured in docs/transfer.md), and computing it is ``K`` teacher passes over the training
split, once per (snapshot, view set, training indices).
A student's epoch costs the same as with a plain cache plus building the batch's views.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from losses.registry import HyperParam

from study.train.cuda_graphs import Tensors

#: Noise images a ``noise`` view set draws from (each (image, view) picks one by index): enough that
#: views rarely share a pattern, small enough to keep on the device (2048 x 784 floats: 6.4 MB on MNIST).
NOISE_BANK = 2048
#: Prefix of the per-sample view parameters among the trainer's tensors (``view:partner``, ...).
PARAM_PREFIX = "view:"
#: The most views per image a run may ask for (each one is a teacher pass and a cache's worth of memory).
MAX_VIEWS_K = 64

PerView = dict[str, torch.Tensor]


class View:
    """Base of every view: draws the parameters of ``k`` views per image and builds views from them.

    A view's parameters are per (image, view) tensors ``[n, k, ...]`` (``draw``'s first dict) plus
    tensors shared by all views (its second dict, e.g. the noise bank). ``apply`` gets the
    parameters of one view per batch row (``[b, ...]``) and must be vectorized over the batch.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    hyperparams: ClassVar[tuple[HyperParam, ...]] = ()
    #: True when the view mixes images, so the CE term reads mixed labels (:meth:`labels`)
    mixes_labels: ClassVar[bool] = False

    def __init__(self, hparams: Mapping[str, float] | None = None) -> None:
        hparams = dict(hparams or {})
        self.hparams = {hp.name: float(hparams.get(hp.name, hp.default)) for hp in self.hyperparams}
        for hp in self.hyperparams:
            if not hp.contains(self.hparams[hp.name]):
                raise ValueError(f"{hp.name} must be in {hp.bounds_text}, got {self.hparams[hp.name]:g}")

    def draw(self, n: int, k: int, image_shape: tuple[int, ...], rng: np.random.Generator) -> tuple[PerView, PerView]:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, per: PerView, shared: PerView, images: torch.Tensor,
              fill: torch.Tensor) -> torch.Tensor:
        """The views of ``x`` [b, C, H, W]; ``images`` are all the training images (mixup's partners)."""
        raise NotImplementedError

    def kept(self, per: PerView, image_shape: tuple[int, ...]) -> torch.Tensor | None:
        """Where the view keeps the image's content ([b, 1, H, W] of 0/1), None for everywhere: what
        the no-shift test compares a view's centroid with (erasing removes content, never moves it)."""
        return None

    def labels(self, y: torch.Tensor, per: PerView, labels: torch.Tensor,
               num_classes: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(hard, soft) labels of the views when the view mixes labels, else None."""
        return None


_VIEWS: dict[str, type[View]] = {}


def register_view(cls: type[View]) -> type[View]:
    """Class decorator: add a view to the registry (run key ``views``, its hyperparameters run keys too)."""
    if not cls.name or not cls.name.isidentifier() or cls.name == "none":
        raise ValueError(f"{cls.__name__}: a view needs an identifier name other than 'none', got {cls.name!r}")
    if cls.name in _VIEWS:
        raise ValueError(f"view {cls.name!r} is registered twice")
    _VIEWS[cls.name] = cls
    return cls


def view_names() -> list[str]:
    return list(_VIEWS)


def view_class(name: str) -> type[View]:
    try:
        return _VIEWS[name]
    except KeyError:
        raise ValueError(f"unknown view {name!r}; registered: {', '.join(_VIEWS)}") from None


def view_hyperparams() -> dict[str, HyperParam]:
    """Every registered view's hyperparameters by run key."""
    return {hp.name: hp for cls in _VIEWS.values() for hp in cls.hyperparams}


def _rows(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-row scalar [b] shaped to broadcast over images [b, C, H, W]."""
    return value.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


@register_view
class Mixup(View):
    name = "mixup"
    summary = "convex mix with another training image, lambda ~ Beta(mixup_alpha, mixup_alpha), labels mixed alike"
    hyperparams = (HyperParam("mixup_alpha", 1.0, 0.0, 100.0, "mixup: lambda ~ Beta(mixup_alpha, mixup_alpha)",
                              low_open=True),)
    mixes_labels = True

    def draw(self, n, k, image_shape, rng):
        a = self.hparams["mixup_alpha"]
        # a partner other than the image itself (mixing an image with itself is no view)
        offset = rng.integers(1, n, (n, k)) if n > 1 else np.zeros((n, k), dtype=np.int64)
        partner = (np.arange(n)[:, None] + offset) % max(n, 1)
        lam = rng.beta(a, a, (n, k)).astype(np.float32)
        return {"partner": torch.from_numpy(partner.astype(np.int64)), "lam": torch.from_numpy(lam)}, {}

    def apply(self, x, per, shared, images, fill):
        lam = _rows(per["lam"], x)
        return lam * x + (1 - lam) * images[per["partner"]]

    def labels(self, y, per, labels, num_classes):
        other = labels[per["partner"]]
        lam = per["lam"].float().unsqueeze(1)
        soft = lam * F.one_hot(y, num_classes).float() + (1 - lam) * F.one_hot(other, num_classes).float()
        return torch.where(per["lam"] >= 0.5, y, other), soft


@register_view
class Noise(View):
    name = "noise"
    summary = "additive Gaussian noise of std noise_std (normalized units), from a fixed seeded noise bank"
    hyperparams = (HyperParam("noise_std", 0.5, 0.0, 10.0, "noise: std of the additive Gaussian noise, in "
                              "normalized units (the dataset's pixel std is 1)", low_open=True),)

    def draw(self, n, k, image_shape, rng):
        index = rng.integers(0, NOISE_BANK, (n, k))
        bank = rng.standard_normal((NOISE_BANK, *image_shape), dtype=np.float32)
        return {"noise": torch.from_numpy(index.astype(np.int64))}, {"noise": torch.from_numpy(bank)}

    def apply(self, x, per, shared, images, fill):
        return x + self.hparams["noise_std"] * shared["noise"][per["noise"]].to(x.dtype)


@register_view
class Erase(View):
    name = "erase"
    summary = "random erasing: a rectangle of erase_min..erase_max of the area set to black (the fill value)"
    hyperparams = (HyperParam("erase_min", 0.02, 0.0, 1.0, "erase: smallest erased area, a fraction of the image",
                              low_open=True),
                   HyperParam("erase_max", 0.33, 0.0, 1.0, "erase: largest erased area, a fraction of the image",
                              low_open=True))
    #: aspect ratios (height / width) of the box: log-uniform in [ASPECT, 1 / ASPECT] (Zhong et al. 2020)
    ASPECT = 0.3

    def __init__(self, hparams: Mapping[str, float] | None = None) -> None:
        super().__init__(hparams)
        if self.hparams["erase_min"] > self.hparams["erase_max"]:
            raise ValueError(f"erase_min ({self.hparams['erase_min']:g}) must be <= erase_max "
                             f"({self.hparams['erase_max']:g})")

    def draw(self, n, k, image_shape, rng):
        height, width = image_shape[-2:]
        area = rng.uniform(self.hparams["erase_min"], self.hparams["erase_max"], (n, k)) * height * width
        ratio = np.exp(rng.uniform(math.log(self.ASPECT), -math.log(self.ASPECT), (n, k)))
        h = np.clip(np.rint(np.sqrt(area * ratio)), 1, height).astype(np.int64)
        w = np.clip(np.rint(np.sqrt(area / ratio)), 1, width).astype(np.int64)
        top = np.floor(rng.random((n, k)) * (height - h + 1)).astype(np.int64)
        left = np.floor(rng.random((n, k)) * (width - w + 1)).astype(np.int64)
        return {"box": torch.from_numpy(np.stack([top, left, h, w], axis=-1))}, {}

    @staticmethod
    def mask(box: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """[b, 1, H, W] True inside each row's box (top, left, height, width)."""
        rows = torch.arange(height, device=box.device).view(1, height, 1)
        cols = torch.arange(width, device=box.device).view(1, 1, width)
        top, left, h, w = (box[:, i].view(-1, 1, 1) for i in range(4))
        inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        return inside.unsqueeze(1)

    def apply(self, x, per, shared, images, fill):
        inside = self.mask(per["box"], x.shape[-2], x.shape[-1])
        return torch.where(inside, fill.to(x).view(1, -1, 1, 1), x)

    def kept(self, per, image_shape):
        return (~self.mask(per["box"], image_shape[-2], image_shape[-1])).float()


@dataclass(frozen=True)
class ViewParams:
    """The drawn parameters of a view set: per (image, view) ``[n, k, ...]`` and shared tensors."""

    per: PerView
    shared: PerView = field(default_factory=dict)

    def of(self, rows: torch.Tensor | slice, k: int | torch.Tensor) -> PerView:
        """The parameters of view ``k`` (one index, or one per row) of images ``rows``."""
        return {name: value[rows, k] for name, value in self.per.items()}


@dataclass(frozen=True)
class ViewSet:
    """K fixed views of every training image, what a run's ``views`` keys describe; hashable, so it
    keys teacher-output caches. Build one with :meth:`create` (defaults filled in, bounds checked).

    Costs: a teacher-output cache of a view set is ``k`` times the size of a plain cache and takes
    ``k`` teacher passes over the training split to compute (once per snapshot and view set)."""

    name: str
    k: int = 4
    seed: int = 0
    hparams: tuple[tuple[str, float], ...] = ()

    @classmethod
    def create(cls, name: str, k: int = 4, seed: int = 0, **hparams: float) -> "ViewSet":
        """A view set of the registered view ``name``; ``hparams`` beyond that view's own are ignored."""
        if not 1 <= k <= MAX_VIEWS_K:
            raise ValueError(f"views_k must be in [1, {MAX_VIEWS_K}], got {k}")
        view = view_class(name)(hparams)
        return cls(name, int(k), int(seed), tuple(sorted(view.hparams.items())))

    @property
    def view(self) -> View:
        return view_class(self.name)(dict(self.hparams))

    def describe(self) -> dict[str, Any]:
        """What defines the views (the cache records it and checks it on every read)."""
        return {"name": self.name, "k": self.k, "seed": self.seed, "hparams": dict(self.hparams)}

    @property
    def tag(self) -> str:
        """A short, stable name of the view set (part of a view cache's file name)."""
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:12]

    def draw(self, n: int, image_shape: tuple[int, ...]) -> ViewParams:
        """The parameters of the ``k`` views of each of ``n`` images: the same for the same view set,
        image count and shape, in every process (numpy's PCG64 stream from ``seed``)."""
        per, shared = self.view.draw(n, self.k, tuple(image_shape), np.random.default_rng(self.seed))
        return ViewParams(per, shared)

    def build(self, x: torch.Tensor, per: PerView, shared: PerView, images: torch.Tensor,
              fill: torch.Tensor) -> torch.Tensor:
        """The views of ``x`` (one per row, ``per`` holding each row's parameters)."""
        return self.view.apply(x, per, shared, images, fill)


class ViewBatches:
    """The trainer's batch transform for a view set: each sample of a step becomes one of its ``K``
    fixed views (chosen with the step's seeded generator), and every teacher output of the batch
    the teacher's output on that same view; with mixup, ``y_soft`` holds the mixed labels the CE
    term reads (and ``y`` the label with the larger weight).

    Expects among the batch's tensors the per-sample parameters (:meth:`per_sample`, which the
    trainer slices like the images) and teacher outputs shaped ``[b, K, ...]``. Holds the training
    images and labels itself (a mixup partner is any training image, not one of the batch).
    """

    def __init__(self, views: ViewSet, params: ViewParams, images: torch.Tensor, labels: torch.Tensor,
                 fill: torch.Tensor, num_classes: int) -> None:
        self.views, self.view, self.params = views, views.view, params
        self.images, self.labels, self.fill, self.num_classes = images, labels, fill.to(images.dtype), num_classes
        self.shared = dict(params.shared)

    def per_sample(self) -> dict[str, torch.Tensor]:
        """The per-(image, view) parameters as per-sample tensors ``[n, K, ...]`` for the trainer."""
        return {PARAM_PREFIX + name: value for name, value in self.params.per.items()}

    def to(self, device: torch.device | str) -> "ViewBatches":
        self.images, self.labels, self.fill = self.images.to(device), self.labels.to(device), self.fill.to(device)
        self.shared = {name: value.to(device) for name, value in self.shared.items()}
        return self

    def __call__(self, batch: Tensors, epoch: int, generator: torch.Generator) -> Tensors:
        x = batch["x"]
        rows = torch.arange(len(x), device=x.device)
        chosen = torch.randint(self.views.k, (len(x),), generator=generator).to(x.device)
        per = {key[len(PARAM_PREFIX):]: value[rows, chosen] for key, value in batch.items()
               if key.startswith(PARAM_PREFIX)}
        out = {key: value for key, value in batch.items() if not key.startswith(PARAM_PREFIX)}
        out["x"] = self.view.apply(x, per, self.shared, self.images, self.fill)
        mixed = self.view.labels(batch["y"], per, self.labels, self.num_classes)
        if mixed is not None:
            out["y"], out["y_soft"] = mixed
        for key in ("teacher_logits", "teacher_features"):
            if key in batch:
                out[key] = [value[rows, chosen] for value in batch[key]]
        return out
