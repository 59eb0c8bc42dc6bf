"""Stage 2 of a study: the Tune run over the shared trainable, then tables, figures and artifacts."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from ray import tune

from .reports import (best_trials, figure_shift_curves, figure_vs_teacher_step, format_summary, optuna_figures,
                      summary, trials_table, write_figures, write_table)
from .tracking import Tracker
from .trainable import StudySettings, load_student, train_student
from .tuning import (MLflowTrialLogger, Resources, StudyProgress, make_scheduler, make_searcher, trial_params)


def say(message: str) -> None:
    import sys
    print(message, file=sys.stderr, flush=True)


def trial_dirname(trial) -> str:
    """Short trial folders (Tune's default embeds the whole config in the name)."""
    return f"trial_{trial.trial_id}"


def _trainable(study, data, caches):
    args = study.args
    settings = StudySettings(dataset=args.dataset, epochs=args.max_epochs, train_subset=study.train_subset,
                             data_seed=args.seed, val_images=args.val_images or None,
                             test_images=args.test_images or None, device=args.device)
    resources = Resources(args.cpus_per_trial, args.gpus_per_trial, args.max_failures)
    wrapped = tune.with_parameters(train_student, data=data, settings=settings, caches=caches)
    return tune.with_resources(wrapped, resources.as_dict()), settings, resources


def run_search(study, data, caches: dict, tracker: Tracker, parent_id: str) -> dict[str, Any]:
    args = study.args
    trainable, settings, resources = _trainable(study, data, caches)
    tune_dir = study.dir / "tune"
    static = {"dataset": args.dataset, "train_subset": study.train_subset, "max_epochs": args.max_epochs,
              "study": study.name, "space": study.space.name}
    callbacks = [MLflowTrialLogger(tracker, parent_id, args.max_epochs, static),
                 StudyProgress(study.planned, args.max_epochs, quiet=args.quiet)]
    if args.resume and tune.Tuner.can_restore(str(tune_dir)):
        say(f"resuming {tune_dir}")
        tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_errored=True, resume_unfinished=True)
    else:
        searcher = make_searcher(study.space, seed=args.seed, multi_objective=args.multi_objective,
                                 storage_url=study.optuna_url, study_name=study.name, baselines=study.baselines)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=make_scheduler(study.use_asha, args.max_epochs),
                                        num_samples=study.planned, reuse_actors=False,
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
        if result.error is not None:
            state = "failed"
        elif epochs >= args.max_epochs:
            state = "completed"
        elif metrics.get("done") or epochs > 0:
            state = "pruned" if metrics.get("done") else "unfinished"
        else:
            state = "unfinished"
        finished += state in ("completed", "pruned", "failed")
        from .spaces import run_spec

        spec = run_spec(config, dataset=args.dataset, epochs=args.max_epochs, train_subset=study.train_subset)
        p = spec.params()
        row = {"trial_id": trial_id, "state": state, "baseline": bool(config.get("baseline", False)),
               "variant": p["variant"], "teachers": p["teachers"],
               "teacher_step": spec.teachers[0].step if spec.teachers else None,
               "teacher_weight": spec.teachers[0].weight if len(spec.teachers) > 1 else None,
               "alpha": spec.alpha, "temperature": spec.temperature, "s_kl": spec.s_kl, "s_fm": spec.s_fm,
               "teacher_label_smoothing": spec.teacher_label_smoothing, "seed": spec.seed, "epochs_done": epochs,
               **{f"teacher_{i}_step": t.step for i, t in enumerate(spec.teachers)},
               **{k: v for k, v in metrics.items() if k.startswith(("val_", "test_", "loss_"))}}
        rows.append(row)
        if result.checkpoint is not None:
            checkpoints[trial_id] = (result.checkpoint, config)
    status = "finished" if finished >= study.planned else "interrupted"

    reports = study.dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    table = trials_table(rows)
    paths = write_table(table, reports) if not table.empty else []
    figures = {"translated_vs_teacher_step": figure_vs_teacher_step(table),
               "accuracy_vs_shift": figure_shift_curves(table)} if not table.empty else {}
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
    result_summary = summary(table)
    (reports / "summary.json").write_text(json.dumps(result_summary, indent=2, default=str))
    paths.append(reports / "summary.json")
    for path in paths:
        tracker.log_artifact(parent_id, path, "reports")
    _log_best_models(table, checkpoints, tracker, parent_id, data, settings, reports, args.keep_best)
    tracker.log_metrics(parent_id, {k: v for k, v in result_summary.items() if k.startswith("gain_")}, step=0)
    tracker.set_tags(parent_id, {"status": status})
    if status == "finished":
        tracker.finish(parent_id)
    print(format_summary(result_summary))
    return {"status": status, "finished": finished, "summary": result_summary}


def _log_best_models(table, checkpoints, tracker: Tracker, parent_id: str, data, settings, reports: Path,
                     keep: int) -> None:
    """The best trials' students, as state dicts with their configs, on their own MLflow runs."""
    for _, row in best_trials(table, k=keep).iterrows():
        if row["trial_id"] not in checkpoints:
            continue
        checkpoint, config = checkpoints[row["trial_id"]]
        folder = reports / "models" / str(row["trial_id"])
        folder.mkdir(parents=True, exist_ok=True)
        with checkpoint.as_directory() as ckpt:
            model = load_student(ckpt, config, data, settings)
        torch.save(model.state_dict(), folder / "student.pt")
        (folder / "config.json").write_text(json.dumps(trial_params(config), indent=2, default=str))
        run_id = tracker.find_run(**{"leveled_kd.trial_id": str(row["trial_id"]), "mlflow.parentRunId": parent_id})
        if run_id:
            for path in folder.iterdir():
                tracker.log_artifact(run_id, path, "model")
