"""Stage 2 of a study: the Tune run over the shared trainable, then tables, figures and artifacts."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from ray import tune

from study.analysis.arms import arms_markdown
from study.analysis.figures import figure_shift_curves, figure_vs_teacher_step, optuna_figures, write_figures
from study.analysis.reports import format_summary, summary
from study.analysis.tables import best_trials, kd_columns, trials_table, write_table
from study.tracking.runs import Tracker
from study.search.trainable import StudySettings, load_student, train_student
from study.search.trial_state import ENDED, classify
from study.search.tuning import MLflowTrialLogger, Resources, StudyProgress, make_scheduler, make_searcher, trial_params


def say(message: str) -> None:
    import sys
    print(message, file=sys.stderr, flush=True)


def trial_dirname(trial) -> str:
    """Short trial folders (Tune's default embeds the whole config in the name)."""
    return f"trial_{trial.trial_id}"


def _trainable(study, data):
    args = study.args
    settings = StudySettings(dataset=args.dataset, epochs=args.max_epochs, train_subset=study.train_subset,
                             data_seed=args.seed, val_images=args.val_images or None,
                             test_images=args.test_images or None, device=args.device, patience=args.patience,
                             min_epochs=getattr(args, "min_epochs", 0),
                             precision=args.precision, bank_root=str(study.bank_root),
                             objective=getattr(args, "objective", "translated"), references=tuple(study.baselines),
                             reference_dir=str(study.dir / "references"), plugins=getattr(study, "plugins", ()),
                             registrations=getattr(study, "registrations", ()),
                             robustness=getattr(study, "robustness", ()))
    resources = Resources(args.cpus_per_trial, args.gpus_per_trial, args.max_failures)
    wrapped = tune.with_parameters(train_student, data=data, settings=settings)
    return tune.with_resources(wrapped, resources.as_dict()), settings, resources


def run_search(study, data, tracker: Tracker, parent_id: str) -> dict[str, Any]:
    args = study.args
    trainable, settings, resources = _trainable(study, data)
    tune_dir = study.dir / "tune"
    static = {"dataset": args.dataset, "train_subset": study.train_subset, "max_epochs": args.max_epochs,
              "study": study.name, "space": study.space.name}
    callbacks = [MLflowTrialLogger(tracker, parent_id, args.max_epochs, static),
                 StudyProgress(study.planned, args.max_epochs, quiet=args.quiet, objective=study.objective)]
    if args.resume and tune.Tuner.can_restore(str(tune_dir)):
        say(f"resuming {tune_dir}")
        tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_errored=True, resume_unfinished=True)
    else:
        searcher = make_searcher(study.space, seed=args.seed, multi_objective=args.multi_objective,
                                 storage_url=study.optuna_url, study_name=study.name, baselines=study.baselines,
                                 max_epochs=args.max_epochs, objective=study.objective)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher,
                                        scheduler=make_scheduler(study.use_asha, args.max_epochs, study.objective),
                                        # one worker process per slot runs trial after trial: no
                                        # process start, imports or object-store fetch per trial
                                        num_samples=study.planned, reuse_actors=True,
                                        trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=tune_dir.name, storage_path=str(tune_dir.parent), callbacks=callbacks, verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=resources.max_failures),
            ),
        )
    results = tuner.fit()

    rows, checkpoints = [], {}
    finished = 0
    for result in results:
        config = result.config or {}
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        epochs = int(metrics.get("training_iteration", 0))
        # Tune sets done=True on the last result of a trial it completed or stopped (ASHA)
        state = classify(metrics, args.max_epochs, error=result.error is not None, ended=bool(metrics.get("done")))
        finished += state in ENDED
        from study.distill.config import run_spec

        spec = run_spec(config, dataset=args.dataset, epochs=args.max_epochs, train_subset=study.train_subset)
        p = spec.params()
        row = {"trial_id": trial_id, "state": state, "baseline": bool(config.get("baseline", False)),
               "variant": p["variant"], "student": spec.student, "teachers": p["teachers"],
               "teacher_step": spec.teachers[0].step if spec.teachers else None,
               "teacher_weight": spec.teachers[0].weight if len(spec.teachers) > 1 else None,
               "alpha": spec.alpha, **{k: p[k] for k in kd_columns() if k in p},
               **{k: p[k] for k in ("views", "views_k", "trajectory", "lr_schedule") if k in p},
               **(dict(spec.views.hparams) if spec.views else {}),  # the view's own (erase_max...): arms vary them
               "teacher_label_smoothing": spec.teacher_label_smoothing, "seed": spec.seed, "epochs_done": epochs,
               "teacher_seed": spec.teachers[0].seed if spec.teachers else None, "arm": config.get("arm"),
               "stopped_early": bool(metrics.get("stopped_early", False)),
               "ended_at": metrics.get("timestamp"),  # unix time (whole seconds) of the trial's last result
               **{f"teacher_{i}_step": t.step for i, t in enumerate(spec.teachers)},
               **{k: v for k, v in metrics.items() if k.startswith(("val_", "test_", "loss_", "time_"))}}
        rows.append(row)
        if result.checkpoint is not None:
            checkpoints[trial_id] = (result.checkpoint, config)
    status = "finished" if finished >= study.planned else "interrupted"
    runs = tracker.trial_run_ids(parent_id)  # each trial's MLflow run, looked up once
    _keep_predictions(checkpoints, study.dir / "predictions", tracker, runs)

    reports = study.dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    table = trials_table(rows)
    teachers = _evaluate_teachers(table, study, data, settings)
    table = _with_transfers(table, study.dir, tracker, runs)
    paths = write_table(table, reports) if not table.empty else []
    best_keys = {_teacher_key(row) for _, row in best_trials(table, study.objective).iterrows()} if not table.empty else set()
    best_teachers = {label: result for label, (key, result) in teachers.items() if key in best_keys}
    figures = {"translated_vs_teacher_step": figure_vs_teacher_step(table),
               "accuracy_vs_shift": figure_shift_curves(table, best_teachers, study.objective)} if not table.empty else {}
    try:
        import warnings

        import optuna
        with warnings.catch_warnings():  # "few trials per regime" notes from importance estimators
            warnings.simplefilter("ignore", UserWarning)
            figures.update(optuna_figures(optuna.load_study(study_name=study.name, storage=study.optuna_url),
                                          args.multi_objective))
    except KeyError:
        pass  # no Optuna study yet (interrupted before the first search trial)
    paths += write_figures(figures, reports)
    result_summary = summary(table, study.dir, metric=study.objective)
    (reports / "summary.json").write_text(json.dumps(result_summary, indent=2, default=str))
    paths.append(reports / "summary.json")
    if "arms" in result_summary:
        (reports / "arms.md").write_text(arms_markdown(pd.DataFrame(result_summary["arms"])))
        paths.append(reports / "arms.md")
    for path in paths:
        tracker.log_artifact(parent_id, path, "reports")
    _log_best_models(table, checkpoints, tracker, runs, data, settings, reports, args.keep_best, result_summary,
                     study.objective)
    tracker.log_metrics(parent_id, {k: v for k, v in result_summary.items() if k.startswith("gain_")}, step=0)
    tracker.log_metrics(parent_id, {f"transfer_{m}": t["estimate"] for m, t in result_summary.get("transfer", {}).items()
                                    if t["estimate"] == t["estimate"]}, step=0)
    tracker.set_tags(parent_id, {"status": status})
    if status == "finished":
        tracker.finish(parent_id)
    print(format_summary(result_summary))
    return {"status": status, "finished": finished, "summary": result_summary}


def _teacher_key(row: pd.Series) -> tuple | None:
    """(architecture, step, label smoothing, teacher seed) of a completed single-teacher KD trial."""
    arch = row.get("teachers")
    if row.get("state") != "completed" or row.get("variant") == "no_kd" or not isinstance(arch, str) \
            or arch == "none" or "+" in arch or pd.isna(row.get("teacher_step")):
        return None
    seed = row.get("teacher_seed")
    return (arch, int(row["teacher_step"]), float(row.get("teacher_label_smoothing") or 0.0),
            0 if seed is None or pd.isna(seed) else int(seed))


def _evaluate_teachers(table: pd.DataFrame, study, data, settings: StudySettings) -> dict[str, tuple]:
    """Score every teacher snapshot a completed trial distilled from on the study's test images, by
    the students' evaluator (cached in its bank: :meth:`~study.teachers.bank.TeacherBank.evaluation`),
    and keep each as ``predictions/teachers/<snapshot>.npz``: the teacher's side of every transfer
    ratio. Returns ``{label: (key, per-image result)}`` (keys as :func:`_teacher_key` gives them)."""
    from study.analysis.studies import TEACHER_PREDICTIONS, teacher_predictions_name
    from study.distill.spec import split_images
    from study.teachers.bank import TeacherSpec
    from study.teachers.pretrained import bank_for
    from study.train.data import train_val_split
    from study.train.predictions import save_predictions

    if table.empty:
        return {}
    keys = sorted({k for k in (_teacher_key(row) for _, row in table.iterrows()) if k is not None})
    if not keys:
        return {}
    rows = split_images(data, train_val_split(data, settings.train_subset, seed=settings.data_seed), "test",
                        settings.test_images)
    folder = study.dir / "predictions" / TEACHER_PREDICTIONS
    out = {}
    for arch, step, smoothing, seed in keys:
        bank = bank_for(study.bank_root, TeacherSpec(settings.dataset, arch, seed, smoothing))
        result = bank.evaluation(step, data, rows, device=settings.device)
        save_predictions(folder / teacher_predictions_name(arch, smoothing, seed, step), {"test": result})
        label = f"{arch}{f' ls{smoothing:g}' if smoothing else ''} @ {step} (seed {seed})"
        out[label] = ((arch, step, smoothing, seed), result)
    return out


def _with_transfers(table: pd.DataFrame, study_dir: Path, tracker: Tracker, runs: dict[str, str]) -> pd.DataFrame:
    """``table`` with each KD trial's teacher accuracies and transfer ratios on its test images
    (:func:`study.analysis.transfer.trial_transfers`), which also go to the trial's MLflow run."""
    from study.analysis.transfer import trial_transfers

    transfers = trial_transfers(table, study_dir) if not table.empty else pd.DataFrame()
    if transfers.empty:
        return table
    for record in transfers.to_dict("records"):
        run_id = runs.get(str(record["trial_id"]))
        if run_id:
            tracker.log_metrics(run_id, {k: v for k, v in record.items() if k != "trial_id" and v == v}, step=0)
    return table.merge(transfers, on="trial_id", how="left")


def _keep_predictions(checkpoints: dict, folder: Path, tracker: Tracker, runs: dict[str, str]) -> None:
    """Copy each finished trial's per-image predictions (in its final checkpoint) to
    ``<study>/predictions/<trial_id>.npz`` and log them on the trial's MLflow run: the input
    of every paired comparison (:mod:`study.analysis.findings`). Idempotent, so a resumed study re-copies safely."""
    import shutil

    from study.search.trainable import PREDICTIONS_FILE

    folder.mkdir(parents=True, exist_ok=True)
    for trial_id, (checkpoint, _) in checkpoints.items():
        with checkpoint.as_directory() as ckpt:
            source = Path(ckpt) / PREDICTIONS_FILE
            if not source.is_file():
                continue  # pruned: its last checkpoint is not a final evaluation
            target = folder / f"{trial_id}.npz"
            shutil.copyfile(source, target)
        run_id = runs.get(str(trial_id))
        if run_id:
            tracker.log_artifact(run_id, target, "predictions")


def _log_best_models(table, checkpoints, tracker: Tracker, runs: dict[str, str], data, settings, reports: Path,
                     keep: int, result_summary: dict[str, Any], metric: str = "val_translated_acc") -> None:
    """The best ``keep`` trials' students as MLflow PyTorch models on their own runs; the best one registered.

    Each student is logged once as ``runs:/<trial run>/model`` (self-contained: the module is
    pickled with the ``models/`` package beside it, with a signature and an input example; see
    :mod:`study.tracking.logged_models`) and kept locally as a state dict + config under
    ``reports/models/<trial_id>/``. The first of :func:`best_trials` (by the validation objective)
    becomes a version of ``leveled-kd-<study>`` in the Model Registry, tagged with its accuracies,
    its gain over no KD and its trial, and gets the alias ``best``. Runs on the driver, after the
    search: trials never talk to MLflow. Idempotent: a resumed study logs and registers nothing twice.
    """
    from study.tracking.logged_models import log_student, register_student, registered_model_name, serving_module

    study_tags = dict(getattr(tracker, "run_tags", {}) or {})
    for rank, (_, row) in enumerate(best_trials(table, metric, k=keep).iterrows()):
        if row["trial_id"] not in checkpoints:
            continue
        trial_id = str(row["trial_id"])
        checkpoint, config = checkpoints[row["trial_id"]]
        folder = reports / "models" / trial_id
        folder.mkdir(parents=True, exist_ok=True)
        with checkpoint.as_directory() as ckpt:
            model = load_student(ckpt, config, data, settings)
        torch.save(model.state_dict(), folder / "student.pt")
        (folder / "config.json").write_text(json.dumps(trial_params(config), indent=2, default=str))
        run_id = runs.get(trial_id)
        if not run_id:
            continue
        scores = {k: float(row[k]) for k in ("val_clean_acc", "val_translated_acc", "test_clean_acc",
                                             "test_translated_acc") if k in row and row[k] == row[k]}
        tags = {**study_tags, "leveled_kd.trial_id": trial_id, "leveled_kd.rank": rank + 1}
        student = log_student(tracker.client, tracker.experiment_id, run_id, serving_module(model, data), data,
                              tags=tags, metadata={"trial_id": trial_id, "config": trial_params(config), **scores})
        if rank == 0:
            gains = {k: round(float(v), 6) for k, v in result_summary.items() if k.startswith("gain_")}
            name = registered_model_name(tracker.experiment_name)
            version = register_student(  # the version's tags: its numbers (the study's tags are on the model)
                tracker.client, name, student, tags={**{k: round(v, 6) for k, v in scores.items()}, **gains,
                                                     "trial_id": trial_id},
                description=f"Best student of study {tracker.experiment_name} by validation translated accuracy "
                            f"(trial {trial_id}, {row.get('variant')}, teachers {row.get('teachers')}).",
                model_tags={k: v for k, v in study_tags.items() if k != "leveled_kd.budget"},
                model_description=f"The best student of study {tracker.experiment_name} (MLP distilled from CNN "
                                  f"teachers); alias '@best' is the current best version.")
            tracker.set_tags(run_id, {"leveled_kd.registered_model": f"{name}/{version}"})
