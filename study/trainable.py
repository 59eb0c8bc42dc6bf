"""The Ray Tune trainable: a plain function of ``config`` around the shared trainer.

Large, fixed inputs arrive through ``tune.with_parameters`` (the object store,
one copy per node): the dataset and every teacher-output cache the space can ask
for. A trial reports validation metrics (the objective; the test set is never
used to choose) every epoch with a checkpoint, so a paused, restored or retried
trial continues from its last epoch instead of restarting. Test metrics are
added to the final report, for reporting only.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray import tune

from .data import ImageData, shift_grid, train_val_split
from .distillation import build_trainer, evaluate_split
from .spaces import run_spec
from .trainer import EveryEpoch, Trainer

CHECKPOINT_FILE = "trainer.pt"
SPEC_FILE = "spec.json"


@dataclass(frozen=True)
class StudySettings:
    """Study-wide settings every trial shares (the budget flags of ``run_study.py``)."""

    dataset: str
    epochs: int
    train_subset: int | None
    data_seed: int = 0
    val_images: int | None = 1000
    test_images: int | None = None
    device: str = "auto"


def cache_key(arch: str, label_smoothing: float, step: int) -> str:
    return f"{arch}|ls{label_smoothing:g}|{step}"


def as_arrays(logits: torch.Tensor, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Numpy arrays travel through Ray's object store zero-copy (shared memory, one copy per node)."""
    return logits.numpy(), features.numpy()


def _tensor(array: np.ndarray) -> torch.Tensor:
    # object-store arrays are read-only views; indexing copies, so sharing them is safe
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def train_student(config: dict[str, Any], data: ImageData, settings: StudySettings,
                  caches: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """One trial: build the run from ``config``, train, report every epoch."""
    spec = run_spec(config, dataset=settings.dataset, epochs=settings.epochs, train_subset=settings.train_subset)
    # the subset is the study's (data_seed), the same for every trial; spec.seed drives init and order
    split = train_val_split(data, settings.train_subset, seed=settings.data_seed)
    outputs = []
    if spec.uses_teachers:
        for ref in spec.teachers:
            logits, features = caches[cache_key(ref.arch, spec.teacher_label_smoothing, ref.step)]
            outputs.append((_tensor(logits), _tensor(features)))  # cached on split.train, in its order
    shifts = shift_grid()

    def report(trainer: Trainer) -> None:
        val = evaluate_split(trainer, data, split, "val", shifts, settings.val_images)
        metrics: dict[str, Any] = {"epoch": trainer.epoch, **{f"loss_{k}": v for k, v in trainer.last_losses.items()},
                                   **val.metrics("val_")}
        if trainer.epoch >= spec.epochs:
            metrics.update(evaluate_split(trainer, data, split, "test", shifts, settings.test_images).metrics("test_"))
        with tempfile.TemporaryDirectory() as folder:
            torch.save(trainer.state_dict(), os.path.join(folder, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    trainer = build_trainer(spec, data, split, outputs, callbacks=[EveryEpoch(report)], device=settings.device)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(torch.load(os.path.join(folder, CHECKPOINT_FILE), weights_only=True,
                                               map_location=trainer.device))
    trainer.fit()


def load_student(checkpoint_dir: str, config: dict[str, Any], data: ImageData, settings: StudySettings) -> torch.nn.Module:
    """The student model saved in a trial checkpoint (for logging the best trials' models)."""
    from models import build_model

    spec = run_spec(config, dataset=settings.dataset, epochs=settings.epochs, train_subset=settings.train_subset)
    model = build_model(spec.student, data.input_shape, data.num_classes)
    state = torch.load(os.path.join(checkpoint_dir, CHECKPOINT_FILE), weights_only=True, map_location="cpu")
    model.load_state_dict(state["model"])
    return model
