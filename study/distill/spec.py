"""One distillation run (teacher snapshots -> cached outputs -> student), shared by the
one-run CLI (``python -m study.distill``) and every Ray Tune trial.

Both describe a run with the same :class:`RunSpec`; this module turns it into a
:class:`~study.train.trainer.Trainer` whose extra per-sample tensors are the teachers'
cached outputs, so the training loop itself knows nothing about teachers. The schemes that
change what a step sees are the trainer's batch transform (study/train/transforms.py): fixed
views of the images for function matching (:class:`~study.train.views.ViewBatches`, the
teachers' outputs cached per view) and trajectory distillation
(:class:`~study.train.transforms.FollowTrajectory`: the teacher snapshot grows with the epoch).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from losses import LeveledKDConfig, LeveledKDLoss
from models import build_model

from study.train.data import ImageData, Shift, Split, evaluation_indices
from study.train.directions import INDEX_KEY, DirectionBatches, DirectionSet
from study.train.evaluation import TranslationResult, translation_accuracy
from study.train.trainer import Callback, TrainConfig, Trainer, inference_model, seed_everything
from study.train.transforms import BatchTransform, FollowTrajectory, compose, linear_schedule
from study.train.views import ViewBatches, ViewSet


@dataclass(frozen=True)
class TeacherRef:
    """One teacher of a run: architecture, snapshot step, mixing weight and the seed its bank was trained with.

    ``trajectory``: the snapshot steps the student follows, in order, ending at ``step``
    (trajectory distillation, an offline stand-in for online distillation, Abnar et al. 2020);
    empty: the snapshot ``step`` throughout. Which one an epoch uses: :meth:`schedule`.
    """

    arch: str
    step: int
    weight: float = 1.0
    seed: int = 0
    trajectory: tuple[int, ...] = ()

    def schedule(self, epochs: int) -> list[int]:
        """The snapshot step of each of ``epochs`` epochs: the trajectory's first snapshot at epoch 0,
        ``step`` at the last epoch, linearly in between (:func:`~study.train.transforms.linear_schedule`)."""
        steps = self.trajectory or (self.step,)
        return [steps[i] for i in linear_schedule(len(steps), epochs)]

    def snapshots_used(self, epochs: int) -> list[int]:
        """The snapshots a run of ``epochs`` epochs reads, in order (one teacher-output cache each)."""
        return sorted(set(self.schedule(epochs)))


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one student run (what a Tune trial's config resolves to).

    ``loss`` holds alpha, label smoothing and every KD term's scale and hyperparameters
    (``LeveledKDConfig(s_kl=1.0, temperature=4.0)``; see losses/registry.py). ``views``: train
    on fixed views of the images (function matching; without teachers, the augmentation control),
    the KD terms reading the teachers' outputs on the same views.
    """

    dataset: str = "mnist"
    student: str = "mlp_1"
    teachers: tuple[TeacherRef, ...] = ()
    loss: LeveledKDConfig = field(default_factory=LeveledKDConfig)
    teacher_label_smoothing: float = 0.0
    epochs: int = 5
    seed: int = 0
    train_subset: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-3
    views: ViewSet | None = None
    lr_schedule: str = "constant"

    @property
    def alpha(self) -> float:
        return self.loss.alpha

    @property
    def loss_config(self) -> LeveledKDConfig:
        """The leveled loss; without teachers the KD terms are off whatever their scales say."""
        if self.teachers:
            return self.loss
        return LeveledKDConfig(self.loss.alpha, self.loss.label_smoothing, scales={n: 0.0 for n in self.loss.scales})

    @property
    def uses_teachers(self) -> bool:
        return bool(self.teachers) and self.loss_config.uses_teacher

    @property
    def directions(self) -> DirectionSet | None:
        """The fixed input directions of Jacobian matching (``s_jacobian > 0``), else None: the
        teachers' derivatives along them are cached, the student's come with its forward pass."""
        if not (self.uses_teachers and self.loss_config.uses_jvp):
            return None
        return DirectionSet(int(self.loss.hparams["jacobian_k"]), int(self.loss.hparams["jacobian_seed"]))

    def params(self) -> dict[str, object]:
        """Flat, loggable description (one MLflow param per entry): every KD term's effective
        scale and the hyperparameters of the terms in use."""
        flat: dict[str, object] = {k: v for k, v in asdict(self).items() if k not in ("teachers", "loss", "views")}
        loss = self.loss_config
        flat.update(alpha=loss.alpha, label_smoothing=loss.label_smoothing, **loss.flat())
        flat["views"] = self.views.name if self.views else "none"
        if self.views:
            flat.update(views_k=self.views.k, views_seed=self.views.seed, **dict(self.views.hparams))
        flat["variant"] = loss.variant
        flat["teachers"] = "+".join(t.arch for t in self.teachers) or "none"
        for i, t in enumerate(self.teachers):
            flat[f"teacher_{i}"] = t.arch
            flat[f"teacher_{i}_step"] = t.step
            flat[f"teacher_{i}_weight"] = t.weight
            if t.trajectory:
                flat[f"teacher_{i}_trajectory"] = ",".join(map(str, t.trajectory))
        flat["trajectory"] = ",".join(map(str, self.teachers[0].trajectory)) if self.teachers and \
            self.teachers[0].trajectory else "none"
        flat["teacher_seed"] = self.teachers[0].seed if self.teachers else "none"
        return flat


#: Each teacher's cached (logits, features) on the student's training images, and with Jacobian
#: matching its derivatives along the run's directions as a third entry ([N, K, classes]).
TeacherOutputs = Sequence[tuple[torch.Tensor, ...]]


def build_trainer(spec: RunSpec, data: ImageData, split: Split, teacher_outputs: TeacherOutputs = (),
                  callbacks: Sequence[Callback] = (), device: str = "auto", precision: str | None = None) -> Trainer:
    """A ready-to-fit trainer for the student of ``spec``.

    ``teacher_outputs`` holds each teacher's cached (logits, features) on the
    student's training images, in the order of ``split.train`` (with ``spec.views``: on each
    image's ``K`` views, ``[N, K, ...]``; for a teacher with a trajectory: stacked over the snapshots
    it uses, ``[N, U, ...]``; as :func:`study.distill.outputs.teacher_outputs` gives them).
    """
    if spec.uses_teachers and len(teacher_outputs) != len(spec.teachers):
        raise ValueError(f"run has {len(spec.teachers)} teachers but {len(teacher_outputs)} cached outputs")
    seed_everything(spec.seed)
    model = build_model(spec.student, data.input_shape, data.num_classes)
    idx = split.train
    tensors: dict = {"x": data.train_x[idx], "y": data.train_y[idx]}
    teacher_dims: list[int] = []
    weights = None
    if spec.uses_teachers:
        if any(len(entry[0]) != len(idx) for entry in teacher_outputs):
            raise ValueError("teacher outputs must cover exactly the student's training images")
        tensors["teacher_logits"] = [entry[0] for entry in teacher_outputs]
        tensors["teacher_features"] = [entry[1] for entry in teacher_outputs]
        teacher_dims = [entry[1].shape[-1] for entry in teacher_outputs]
        weights = [t.weight for t in spec.teachers]
    transforms: list[BatchTransform] = []
    if spec.uses_teachers and any(t.trajectory for t in spec.teachers):  # first: [n, U, (K,) ...] -> [n, (K,) ...]
        positions = [[ref.snapshots_used(spec.epochs).index(step) for step in ref.schedule(spec.epochs)]
                     if ref.trajectory else None for ref in spec.teachers]
        for (logits, _), ref, schedule in zip(teacher_outputs, spec.teachers, positions):
            if schedule is not None and logits.shape[1] != len(ref.snapshots_used(spec.epochs)):
                raise ValueError(f"teacher {ref.arch}: outputs must be stacked over the snapshots "
                                 f"{ref.snapshots_used(spec.epochs)}")
        transforms.append(FollowTrajectory(positions))
    directions = spec.directions
    if directions is not None:
        if any(len(entry) < 3 or entry[2].shape[:2] != (len(idx), directions.k) for entry in teacher_outputs):
            raise ValueError(f"Jacobian matching needs each teacher's derivatives along the {directions.k} "
                             f"directions of every training image ([N, K, classes])")
        index, bank = directions.draw(len(idx), data.input_shape)
        tensors[INDEX_KEY] = index
        tensors["teacher_jvp"] = [entry[2] for entry in teacher_outputs]
        transforms.append(DirectionBatches(directions, bank))
    if spec.views is not None:
        views = ViewBatches(spec.views, spec.views.draw(len(idx), data.input_shape), tensors["x"], tensors["y"],
                            data.fill, data.num_classes)
        if spec.uses_teachers and any(logits.shape[2 if ref.trajectory else 1] != spec.views.k
                                      for (logits, _), ref in zip(teacher_outputs, spec.teachers)):
            raise ValueError(f"teacher outputs must hold the {spec.views.k} views of every image")
        tensors.update(views.per_sample())
        transforms.append(views)
    loss = LeveledKDLoss(spec.loss_config, model.feature_dim, teacher_dims, weights)
    config = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
                         weight_decay=spec.weight_decay, seed=spec.seed, device=device, lr_schedule=spec.lr_schedule,
                         **({"precision": precision} if precision else {}))
    return Trainer(model, loss, tensors, config, callbacks, batch_transform=compose(transforms))


def split_images(data: ImageData, split: Split, which: str, max_images: int | None = None) -> torch.Tensor:
    """Which images an evaluation of ``which`` uses: rows of ``data.train_x`` (val) or ``data.test_x`` (test).

    ``max_images`` of them, as a seeded, stratified sample of the split
    (:func:`~study.train.data.evaluation_indices`), never a prefix: a class-sorted dataset would
    otherwise be scored on its first classes. The sample is the same for every trial of a study
    and every study with the same budget, which is what makes paired comparisons possible.
    """
    if which == "val":
        return split.val[evaluation_indices(data.train_y[split.val], max_images)]
    if which == "test":
        return evaluation_indices(data.test_y, max_images)
    raise ValueError(f"which must be 'val' or 'test', got {which!r}")


def evaluate_split(trainer: Trainer, data: ImageData, split: Split, which: str, shifts: Sequence[Shift],
                   max_images: int | None = None, keep_per_image: bool = False) -> TranslationResult:
    """Clean + translated accuracy on ``val`` (for selection) or ``test`` (for reporting only),
    in the run's precision (bf16 autocast when the student trains in bf16)."""
    indices = split_images(data, split, which, max_images)
    x, y = (data.train_x, data.train_y) if which == "val" else (data.test_x, data.test_y)
    model = inference_model(trainer.model, trainer.device, trainer.precision)
    return translation_accuracy(model, x[indices], y[indices], shifts, data.fill, device=trainer.device,
                                keep_per_image=keep_per_image)


@dataclass
class Patience:
    """Early stopping on a validation metric: stop after ``patience`` epochs without a gain of ``min_delta``.

    Students are trained to convergence (the reproduction's budgets), not for a fixed
    number of epochs: KD also speeds up learning, and a student compared while still
    learning could look "more robust" only because it is further along. The state is
    plain data, saved with every checkpoint, so a restored trial stops where it would have.
    """

    patience: int
    min_delta: float = 1e-4
    #: never stop before this many epochs: a small validation split's early gains are noisy (on the
    #: CIFAR-10 subset a student stopped at epoch 6 on them while its seed mates trained 8-10)
    min_epochs: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record the metric of ``epoch``; True when training should stop."""
        if value > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience and epoch >= self.min_epochs
