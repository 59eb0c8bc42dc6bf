"""The transfer objective on validation: ``(student - no KD) / (teacher - no KD)`` while a study runs.

A trial cannot see its seed's no-KD baseline trial (it may be running beside it, or not have
started), so the no-KD side comes from a **reference student**: the study's own baseline
configuration for the trial's student and seed, trained once on first use by whichever trial needs
it first, under a file lock, and read by every later trial (and a resumed study), like a teacher
cache. It trains with the study's budget and stopping rule and is scored on the same validation
images, so its number is the one the baseline trial of that seed ends with. The teacher's side is
its snapshot's validation accuracy, from its bank (:meth:`~study.teachers.bank.TeacherBank.evaluation`).

A trial without a teacher (no KD, an augmentation control) reports 0: it carries nothing from a
teacher it does not have; what views alone do is the accuracy metric's to say.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from filelock import FileLock

from study.analysis.transfer import point_ratio
from study.distill.config import run_spec
from study.distill.spec import Patience, RunSpec, build_trainer, evaluate_split, split_images
from study.distill.outputs import teacher_bank
from study.train.data import ImageData, Split
from study.train.trainer import EveryEpoch, Trainer

#: The objective's metric name in a trial's reports.
METRIC = "val_transfer_translated"
#: ``--objective``'s own names and the validation metric each maximizes; any other name is a robustness
#: family's (``rotation`` -> ``val_rotated_acc``). Here, beside the transfer metric, because the trainable
#: (a worker) and the driver's tuner (:mod:`study.search.tuning`) both read it.
OBJECTIVES = {"translated": "val_translated_acc", "transfer": METRIC}


def reference_config(student: str, seed: int, baselines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The study's no-KD baseline configuration of ``student`` with student seed ``seed``."""
    for config in baselines:
        if config.get("student", "mlp_1") == student and config.get("seed", 0) == seed:
            return dict(config)
    for config in baselines:  # a seed the baselines do not list (a searched seed): same config, that seed
        if config.get("student", "mlp_1") == student:
            return {**config, "seed": seed}
    raise ValueError(f"the study has no no-KD baseline of student {student!r} to measure a transfer ratio against")


def reference_score(config: Mapping[str, Any], settings: Any, data: ImageData, split: Split) -> float:
    """Validation translated accuracy of the no-KD reference ``config`` at the end of its training,
    trained by the first caller and cached in ``settings.reference_dir`` (JSON, written atomically)."""
    folder = Path(settings.reference_dir)
    folder.mkdir(parents=True, exist_ok=True)
    spec = run_spec(dict(config), dataset=settings.dataset, epochs=settings.epochs, train_subset=settings.train_subset)
    path = folder / f"{spec.student}-seed{spec.seed}.json"
    with FileLock(str(path.with_suffix(".lock"))):
        if path.is_file():
            return float(json.loads(path.read_text())["val_translated_acc"])
        score, epochs = _train_reference(spec, settings, data, split)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"val_translated_acc": score, "epochs": epochs, "config": dict(config)}, default=str))
        os.replace(tmp, path)
        return score


def _train_reference(spec: RunSpec, settings: Any, data: ImageData, split: Split) -> tuple[float, int]:
    """Train the reference with the study's budget and stopping rule (as its baseline trial does)."""
    patience = Patience(settings.patience, min_epochs=settings.min_epochs)
    last: dict[str, float] = {}

    def on_epoch(trainer: Trainer) -> None:
        val = evaluate_split(trainer, data, split, "val", data.shifts, settings.val_images)
        last.update(score=val.translated_acc, epoch=trainer.epoch)
        if patience.update(val.clean_acc, trainer.epoch) or trainer.epoch >= spec.epochs:
            trainer.should_stop = True

    trainer = build_trainer(spec, data, split, (), callbacks=[EveryEpoch(on_epoch)], device=settings.device,
                            precision=settings.precision)
    trainer.fit()
    return float(last["score"]), int(last["epoch"])


def teacher_score(spec: RunSpec, settings: Any, data: ImageData, split: Split) -> float | None:
    """Mean validation translated accuracy of the run's teacher snapshots on the study's validation
    images (None without teachers)."""
    if not spec.uses_teachers:
        return None
    rows = split_images(data, split, "val", settings.val_images)
    scores = [teacher_bank(spec, t.arch, t.seed, settings.bank_root).evaluation(
                  t.step, data, rows, device=settings.device, split="val").accuracy("translated")
              for t in spec.teachers]
    return sum(scores) / len(scores)


class TransferObjective:
    """Per trial: the reference and teacher scores once, then each epoch's transfer ratio."""

    def __init__(self, spec: RunSpec, settings: Any, data: ImageData, split: Split) -> None:
        self.teacher = teacher_score(spec, settings, data, split)
        self.reference = None if self.teacher is None else reference_score(
            reference_config(spec.student, spec.seed, settings.references), settings, data, split)

    def metrics(self, val_translated: float) -> dict[str, float]:
        """``{METRIC: ratio}``; 0 without a teacher, and where the teacher is not above the reference."""
        if self.teacher is None:
            return {METRIC: 0.0}
        ratio = point_ratio(val_translated, self.reference, self.teacher)
        return {METRIC: 0.0 if ratio != ratio else ratio}
