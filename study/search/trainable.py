"""The Ray Tune trainable: a plain function of ``config`` around the shared trainer.

The dataset arrives through ``tune.with_parameters`` (the object store, one copy
per node). Teacher outputs do not: a trial takes the ones its config asks for from
the snapshot banks (``StudySettings.bank_root``, shared storage on a cluster), where
the first trial that needs a cache computes it under the bank's lock and every later
trial (and study) reads it (:mod:`study.distill.outputs`). A trial reports validation metrics (the objective; the test set is never
used to choose) every epoch with a checkpoint, so a paused, restored or retried
trial continues from its last epoch instead of restarting. Test metrics and the
per-image predictions are added to the final report, for reporting only.

A student stops when its budget of epochs is spent or, with ``patience``, when its
*clean* validation accuracy stops improving: convergence is a property of fitting the
task, so the stopping rule does not look at the robustness metric being compared.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from ray import tune

from study.train.data import ImageData, train_val_split
from study.distill.spec import Patience, build_trainer, evaluate_split, split_images
from study.cluster.faults import raise_once_if_asked
from study.train.predictions import save_predictions
from study.distill.config import run_spec
from study.distill.outputs import teacher_outputs
from study.search.reference import OBJECTIVES, TransferObjective
from study.train.trainer import EveryEpoch, Trainer
from study.train.plugins import prepare_worker

CHECKPOINT_FILE = "trainer.pt"
PREDICTIONS_FILE = "predictions.npz"
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
    #: stop a student after this many epochs without a validation gain (0: train all ``epochs``)
    patience: int = 0
    #: ... but never before this many epochs (0: no floor)
    min_epochs: int = 0
    #: the driver's ``--precision``, carried in the settings so that remote workers use it too
    precision: str = "auto"
    #: where the teacher banks are (``--bank-dir``, ``$LEVELED_KD_BANK`` or OUTPUT_DIR/teachers, resolved
    #: by the driver): trials read and, on first use, compute their teacher-output caches there
    bank_root: str = "runs/teachers"
    #: ``--objective``: ``translated`` (validation translated accuracy), a robustness family's name
    #: (its accuracy on the validation images), or ``transfer`` (its transfer
    #: ratio against the teacher and a no-KD reference student: :mod:`study.search.reference`)
    objective: str = "translated"
    #: the study's no-KD baseline configurations (the references of the transfer objective) and where
    #: the trained references are kept
    references: tuple = ()
    reference_dir: str = ""
    #: the study's plug-in modules and pretrained teachers, which a worker imports and registers first
    plugins: tuple[str, ...] = ()
    #: what the space registers besides (its models: entries, its pretrained teachers), registered again
    registrations: tuple = ()
    #: robustness families (study/train/robustness.py) besides translation, scored on the test images at the end
    robustness: tuple[str, ...] = ()


def train_student(config: dict[str, Any], data: ImageData, settings: StudySettings) -> None:
    """One trial: build the run from ``config``, train, report every epoch, evaluate once at the end.

    Every epoch reports validation metrics (ASHA's and the patience rule's signal) with a
    checkpoint. The last report (budget reached, or validation stopped improving) adds the
    test metrics, ``final=1``, and a per-image predictions file in its checkpoint, which the
    driver keeps beside the study and logs to MLflow. ``time_*`` metrics split the trial's
    wall time into optimizer steps, evaluation and checkpointing, for the efficiency benchmark;
    ``time_setup_s`` includes reading (or, for the first trial that needs one, computing) the
    teacher-output caches.
    """
    started = time.perf_counter()
    prepare_worker(settings.plugins, settings.registrations)  # a fresh worker knows only the shipped models
    spec = run_spec(config, dataset=settings.dataset, epochs=settings.epochs, train_subset=settings.train_subset)
    # the subset is the study's (data_seed), the same for every trial; spec.seed drives init and order
    split = train_val_split(data, settings.train_subset, seed=settings.data_seed)
    outputs = teacher_outputs(spec, data, split, settings.bank_root, device=settings.device)  # on split.train
    shifts = data.shifts
    patience = Patience(settings.patience, min_epochs=settings.min_epochs)
    objective = TransferObjective(spec, settings, data, split) if settings.objective == "transfer" else None
    clock = {"train": 0.0, "eval": 0.0, "checkpoint": 0.0, "mark": 0.0}

    def report(trainer: Trainer) -> None:
        raise_once_if_asked(trainer.epoch)  # test-only, off unless $LEVELED_KD_FAULT_RAISE_ONCE is set
        now = time.perf_counter()
        clock["train"] += now - clock["mark"]
        val = evaluate_split(trainer, data, split, "val", shifts, settings.val_images, keep_per_image=True)
        stop = patience.update(val.clean_acc, trainer.epoch)
        final = stop or trainer.epoch >= spec.epochs
        metrics: dict[str, Any] = {"epoch": trainer.epoch, **{f"loss_{k}": v for k, v in trainer.last_losses.items()},
                                   **val.metrics("val_")}
        if objective is not None:
            metrics.update(objective.metrics(val.translated_acc))
        if settings.objective not in OBJECTIVES:  # a robustness family is the objective
            metrics.update(_family_metrics(trainer, data, split, "val", (settings.objective,), settings.val_images))
        with tempfile.TemporaryDirectory() as folder:
            if final:
                trainer.should_stop = True
                metrics.update(final=1, stopped_early=int(trainer.epoch < spec.epochs), epochs_trained=trainer.epoch)
                test = evaluate_split(trainer, data, split, "test", shifts, settings.test_images, keep_per_image=True)
                save_predictions(os.path.join(folder, PREDICTIONS_FILE), {
                    "val": val.per_image(split_images(data, split, "val", settings.val_images)),
                    "test": test.per_image(split_images(data, split, "test", settings.test_images))})
                metrics.update(test.metrics("test_"))
                metrics.update(_families(trainer, data, split, settings))
            clock["eval"] += time.perf_counter() - now
            mark = time.perf_counter()
            torch.save({**trainer.state_dict(), "patience": asdict(patience)}, os.path.join(folder, CHECKPOINT_FILE))
            clock["checkpoint"] += time.perf_counter() - mark
            metrics.update({f"time_{k}_s": v for k, v in clock.items() if k != "mark"},
                           time_trial_s=time.perf_counter() - started)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        clock["mark"] = time.perf_counter()

    trainer = build_trainer(spec, data, split, outputs, callbacks=[EveryEpoch(report)], device=settings.device,
                            precision=settings.precision)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, CHECKPOINT_FILE), weights_only=True, map_location=trainer.device)
        trainer.load_state_dict(state)
        patience = Patience(**{"min_epochs": settings.min_epochs,
                               **state.get("patience", {"patience": settings.patience})})
    clock["setup"] = time.perf_counter() - started
    clock["mark"] = time.perf_counter()
    trainer.fit()


def _families(trainer: Trainer, data: ImageData, split, settings: StudySettings) -> dict[str, float]:
    """The test metrics of every robustness family the study asked for besides translation."""
    return _family_metrics(trainer, data, split, "test", settings.robustness, settings.test_images)


def _family_metrics(trainer: Trainer, data: ImageData, split, which: str, families: tuple[str, ...],
                    max_images: int | None) -> dict[str, float]:
    """``<which>_<metric>`` and per-point metrics of each robustness family, on the split's evaluation images."""
    if not families:
        return {}
    from study.train.robustness import family_accuracy, get_family
    from study.train.trainer import inference_model

    rows = split_images(data, split, which, max_images)
    x, y = (data.train_x, data.train_y) if which == "val" else (data.test_x, data.test_y)
    model = inference_model(trainer.model, trainer.device, trainer.precision)
    metrics: dict[str, float] = {}
    for name in families:
        result = family_accuracy(model, x[rows], y[rows], get_family(name), data.mean, data.std, device=trainer.device)
        metrics.update(result.metrics(f"{which}_"))
    return metrics


def load_student(checkpoint_dir: str, config: dict[str, Any], data: ImageData, settings: StudySettings) -> torch.nn.Module:
    """The student model saved in a trial checkpoint (for logging the best trials' models)."""
    from models import build_model

    spec = run_spec(config, dataset=settings.dataset, epochs=settings.epochs, train_subset=settings.train_subset)
    model = build_model(spec.student, data.input_shape, data.num_classes)
    state = torch.load(os.path.join(checkpoint_dir, CHECKPOINT_FILE), weights_only=True, map_location="cpu")
    model.load_state_dict(state["model"])
    return model
