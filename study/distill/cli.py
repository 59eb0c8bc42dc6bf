"""One teacher-then-student distillation run from the command line.

    python -m study.distill --dataset mnist --teacher cnn_1 --teacher-step 2500 \\
        --student mlp_1 --alpha 0.5 --temperature 4 --s-kl 1 --s-fm 0 --epochs 5 [--json]
    python -m study.distill --teacher cnn_1 --teacher-step 2500 --alpha 0 --views mixup --views-k 4

Trains (or reuses) the teacher's snapshot bank, computes (or reuses) the chosen
snapshot's output cache, distills, and prints the student's clean and translated
test accuracy. ``--teacher none`` trains the student without KD. Several teachers:
``--teacher cnn_1,inn_1 --teacher-step 2500,2500 [--teacher-weight 0.5,0.5]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from losses import all_hyperparams, kd_terms, scale_key
from models import model_names

from study.train.data import load_dataset, train_val_split
from study.train.datasets import resolve_dataset
from study.train.model_check import check_model
from study.train.plugins import import_plugins
from study.distill.spec import RunSpec, build_trainer, evaluate_split
from study.errors import InputError, check_device
from study.train.runtime import PRECISION_ENV
from study.train.views import view_hyperparams, view_names
from study.distill.config import run_spec
from study.distill.outputs import teacher_bank, teacher_outputs
from study.teachers.bank import snapshot_steps, teacher_bank_root

if TYPE_CHECKING:
    from study.tracking.runs import Tracker


def _csv(kind):
    return lambda text: [kind(part) for part in text.split(",") if part]


def _import_first(argv: list[str] | None) -> list[str]:
    """Import the ``--import`` plug-ins before the parser is built: its choices and its KD-term flags
    come from the registries, which the plug-ins fill."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--import", dest="imports", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    import_plugins(known.imports)
    return known.imports


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    _import_first(argv)
    p = argparse.ArgumentParser(prog="python -m study.distill", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--import", dest="imports", action="append", metavar="FILE_OR_MODULE",
                   help="import a plug-in first (a .py file or a module name) that registers datasets, models or "
                        "KD terms; repeatable")
    p.add_argument("--dataset", default="mnist",
                   help="a registered dataset (mnist, fashion_mnist, cifar10, or a plug-in's) or an image folder's path")
    p.add_argument("--data-root", default="data", help="torchvision data root (downloaded there if missing)")
    p.add_argument("--no-download", action="store_true", help="never try to download datasets")
    p.add_argument("--output-dir", default="runs", help="teacher banks go to OUTPUT_DIR/teachers")
    p.add_argument("--teacher", type=_csv(str), default=["cnn_1"],
                   help="teacher architecture(s), comma-separated, or 'none'; choices: "
                        + ", ".join(model_names("teacher")))
    p.add_argument("--teacher-step", type=_csv(int), default=[2500], help="snapshot step per teacher")
    p.add_argument("--teacher-weight", type=_csv(float), default=None, help="mixing weight per teacher")
    p.add_argument("--teacher-steps", type=int, default=None,
                   help="train teacher banks up to this step (default: the largest --teacher-step)")
    p.add_argument("--teacher-label-smoothing", type=float, default=0.0)
    p.add_argument("--student", default="mlp_1", choices=model_names("student"))
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--label-smoothing", type=float, default=0.0, help="on the student's CE term")
    kd = p.add_argument_group("KD terms", "L = a*CE + (1-a) * sum of s_<term> * <term>; every registered term "
                                          "(losses/registry.py) has a scale and its hyperparameters")
    for name, term in kd_terms().items():
        kd.add_argument(f"--s-{name.replace('_', '-')}", type=float, default=float(term.default_scale),
                        help=f"scale of {term.summary}")
    for key, hp in all_hyperparams().items():
        kd.add_argument("--" + key.replace("_", "-"), type=float, default=hp.default,
                        help=f"{hp.help} {hp.bounds_text}")
    views = p.add_argument_group("views (function matching)", "train on K fixed views of each image; the KD terms "
                                 "read the teacher's outputs on the same view (cached per view set in the bank); "
                                 "--teacher none: the augmentation control (CE on the views)")
    views.add_argument("--views", default="none", choices=["none", *view_names()])
    views.add_argument("--views-k", type=int, default=4, help="views per image (cache: K x a plain one)")
    views.add_argument("--views-seed", type=int, default=0, help="seed the views are drawn from")
    for key, hp in view_hyperparams().items():
        views.add_argument("--" + key.replace("_", "-"), type=float, default=hp.default,
                           help=f"{hp.help} {hp.bounds_text}")
    p.add_argument("--trajectory", default="none",
                   help="trajectory distillation: follow the teacher's snapshots up to --teacher-step, the one of "
                        "an epoch growing linearly: bank (every snapshot), steps such as 250,1000, or none")
    p.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"],
                   help="student learning rate: constant, or cosine annealed to 0 over the run's steps")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=int, default=None, help="stratified student training subset size")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="teacher training, caches and the student: auto = bf16 on CUDA and on CPUs with native "
                        "bf16 (avx512_bf16 / amx_bf16), else fp32")
    p.add_argument("--robustness", default="translation", metavar="FAMILY[,FAMILY]",
                   help="robustness families to report besides translation: rotation, scaling, noise, or a plug-in's")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--save", metavar="DIR", default=None,
                   help="write the trained student to DIR: student.pt (state dict), config.json and mlflow_model/ "
                        "(self-contained; mlflow.pytorch.load_model('DIR/mlflow_model'))")
    p.add_argument("--tracking-uri", default=None,
                   help="log the run (params, test metrics, the student as an MLflow model) to this MLflow store, "
                        "e.g. sqlite:///runs/mlflow.db or http://127.0.0.1:5000")
    p.add_argument("--experiment", default="distill", help="MLflow experiment of --tracking-uri")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.dataset = resolve_dataset(args.dataset)
    from study.train.robustness import get_family

    for name in args.robustness.split(","):  # an unknown family: one line now, not after training
        if name.strip():
            get_family(name.strip())
    check_device(args.device)
    os.environ[PRECISION_ENV] = args.precision  # the default of every TrainConfig and bank below
    if args.epochs < 1 or (args.train_subset is not None and args.train_subset < 1):
        raise InputError("--epochs and --train-subset must be >= 1")
    teachers = [] if args.teacher in ([], ["none"]) else args.teacher
    if teachers and len(args.teacher_step) != len(teachers):
        raise InputError(f"give one --teacher-step per teacher ({len(teachers)}), got {args.teacher_step}")
    weights = args.teacher_weight or [1.0] * len(teachers)
    if len(weights) != len(teachers):
        raise InputError(f"give one --teacher-weight per teacher ({len(teachers)}), got {weights}")
    # one validated configuration (study/distill/config.py): roles, bounds and unknown values, one-line errors
    config = {"student": args.student, "teachers": "+".join(teachers) or "none", "alpha": args.alpha,
              "label_smoothing": args.label_smoothing, "teacher_label_smoothing": args.teacher_label_smoothing,
              "seed": args.seed, **{f"step_{a}": s for a, s in zip(teachers, args.teacher_step)},
              **{scale_key(n): getattr(args, scale_key(n)) for n in kd_terms()},
              **{k: getattr(args, k) for k in all_hyperparams()},
              "views": args.views, "views_k": args.views_k, "views_seed": args.views_seed,
              "trajectory": args.trajectory, "lr_schedule": args.lr_schedule,
              **{k: getattr(args, k) for k in view_hyperparams()}}
    spec = run_spec(config, dataset=args.dataset, epochs=args.epochs, train_subset=args.train_subset)
    spec = replace(spec, teachers=tuple(replace(ref, weight=w) for ref, w in zip(spec.teachers, weights)))
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    tracking = _tracker(args)  # before training: an unreachable tracking server fails in seconds

    started = time.perf_counter()
    data = load_dataset(args.dataset, args.data_root, download=not args.no_download)
    check_model(spec.student, data.input_shape, data.num_classes, "student", dataset=args.dataset)
    for ref in spec.teachers:
        check_model(ref.arch, data.input_shape, data.num_classes, "teacher", dataset=args.dataset)
    try:
        split = train_val_split(data, args.train_subset, seed=args.seed)
    except ValueError as error:
        raise InputError(f"--train-subset {args.train_subset}: {error}") from None
    root = teacher_bank_root(args.output_dir)
    if spec.uses_teachers:
        max_steps = args.teacher_steps or max(r.step for r in spec.teachers)
        for ref in spec.teachers:
            for step in (*ref.trajectory, ref.step):
                if step not in snapshot_steps(max_steps):
                    flag = "--teacher-step" if step == ref.step else "--trajectory"
                    raise InputError(f"{flag} {step} is not a snapshot step; valid: "
                                     f"{', '.join(map(str, snapshot_steps(max_steps)))}")
            teacher_bank(spec, ref.arch, ref.seed, root).ensure(data, max_steps, device=args.device, progress=log)
    outputs = teacher_outputs(spec, data, split, root, device=args.device)  # cached in the banks on first use
    teacher_seconds = time.perf_counter() - started

    epoch_times: list[float] = []
    tick = [time.perf_counter()]

    def on_epoch(trainer) -> None:
        now = time.perf_counter()
        epoch_times.append(now - tick[0])
        log(f"epoch {trainer.epoch}/{spec.epochs}: loss {trainer.last_losses.get('total', 0):.4f} "
            f"({epoch_times[-1]:.1f}s)")
        tick[0] = time.perf_counter()

    from study.train.trainer import EveryEpoch
    trainer = build_trainer(spec, data, split, outputs, callbacks=[EveryEpoch(on_epoch)], device=args.device)
    tick[0] = time.perf_counter()
    trainer.fit()
    result = evaluate_split(trainer, data, split, "test", data.shifts)
    extra = _families(args.robustness, trainer, data, split)
    report = {
        **spec.params(),
        "test_clean_acc": result.clean_acc,
        "test_translated_acc": result.translated_acc,
        "test_acc_per_shift": {f"{dx},{dy}": acc for (dx, dy), acc in result.per_shift.items()},
        "epoch_seconds": epoch_times,
        "teacher_seconds": teacher_seconds,
        "device": str(trainer.device),
        "precision": trainer.precision,
        **extra,
    }
    report.update(_export_student(args, spec, trainer.model, data, report, result, tracking, log))
    if args.json:
        print(json.dumps(report))
    else:
        print(f"student {spec.student} ({spec.params()['variant']}, teachers: {spec.params()['teachers']}) "
              f"on {spec.dataset}: clean {result.clean_acc:.4f}  translated {result.translated_acc:.4f}")
        for key, value in extra.items():
            if "/" not in key:
                print(f"  {key.removeprefix('test_')} {value:.4f}")
    return 0


def _families(names: str, trainer, data, split) -> dict[str, float]:
    """``--robustness``: the test metrics of each named family besides translation (one line if unknown)."""
    from study.distill.spec import split_images
    from study.train.robustness import family_accuracy, get_family
    from study.train.trainer import inference_model

    families = [get_family(n.strip()) for n in names.split(",") if n.strip() and n.strip() != "translation"]
    rows = split_images(data, split, "test")
    model = inference_model(trainer.model, trainer.device, trainer.precision)
    metrics: dict[str, float] = {}
    for family in families:
        metrics.update(family_accuracy(model, data.test_x[rows], data.test_y[rows], family, data.mean, data.std,
                                       device=trainer.device).metrics("test_"))
    return metrics


@dataclass(frozen=True)
class _Tracking:
    """``--tracking-uri``: the experiment's tracker, opened before training, and when the run began."""

    tracker: Tracker
    started: float  # epoch seconds: the MLflow run's start time


def _tracker(args: argparse.Namespace) -> _Tracking | None:
    if not args.tracking_uri:
        return None
    from study.tracking.runs import Tracker

    return _Tracking(Tracker(args.tracking_uri, args.experiment), time.time())


def _export_student(args: argparse.Namespace, spec: RunSpec, model, data, report: dict, result,
                    tracking: _Tracking | None, log) -> dict:
    """``--save DIR`` and ``--tracking-uri``: the student in the same self-contained MLflow format as a
    study's best trials (:mod:`study.tracking.logged_models`), so one loader serves both. Returns what to add
    to the report (where the student went)."""
    if not args.save and tracking is None:
        return {}
    from study.tracking.logged_models import serving_module

    module = serving_module(model, data)  # eval mode, CPU
    metadata = {"run": spec.params(), "test_clean_acc": result.clean_acc,
                "test_translated_acc": result.translated_acc}
    added: dict = {}
    if args.save:
        added["saved"] = str(_save(Path(args.save).expanduser(), spec, module, data, metadata))
        log(f"student saved to {added['saved']} (student.pt, config.json, mlflow_model/)")
    if tracking is not None:
        run_id, model_uri = _log_run(tracking, spec, module, data, report, result, metadata)
        added.update(mlflow_run_id=run_id, mlflow_model_uri=model_uri)
        log(f"logged to MLflow {args.tracking_uri}, experiment {args.experiment!r}: run {run_id} (model: {model_uri})")
    return added


def _save(folder: Path, spec: RunSpec, module, data, metadata: dict) -> Path:
    """DIR/student.pt (the student's state dict), DIR/config.json, DIR/mlflow_model/."""
    import torch

    from study.tracking.logged_models import model_metadata, save_student

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(module.model.state_dict(), folder / "student.pt")
    config = {**spec.params(), **model_metadata(data), **{k: v for k, v in metadata.items() if k != "run"}}
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
    save_student(folder / "mlflow_model", module, data, metadata)
    return folder


def _log_run(tracking: _Tracking, spec: RunSpec, module, data, report: dict, result,
             metadata: dict) -> tuple[str, str]:
    """One MLflow run like a trial's: the run's params, test metrics (every shift), epoch times, the model."""
    from study.tracking.logged_models import log_student
    from study.tracking.runs import KIND_TAG

    tracker = tracking.tracker
    params = spec.params()
    run = tracker.client.create_run(tracker.experiment_id, run_name=f"{spec.student} {params['variant']} "
                                    f"{params['teachers']}", tags={KIND_TAG: "distill"},
                                    start_time=int(tracking.started * 1000))
    run_id = run.info.run_id
    tracker.log_params(run_id, {**params, "device": report["device"], "precision": report.get("precision", "")})
    families = {k: v for k, v in report.items() if k.startswith("test_") and isinstance(v, float)}
    tracker.log_metrics(run_id, {**result.metrics("test_"), **families, "teacher_seconds": report["teacher_seconds"]},
                        step=spec.epochs)
    for epoch, seconds in enumerate(report["epoch_seconds"], start=1):
        tracker.log_metrics(run_id, {"epoch_seconds": seconds}, step=epoch)
    student = log_student(tracker.client, tracker.experiment_id, run_id, module, data, metadata=metadata)
    tracker.finish(run_id)
    return run_id, student.run_uri

