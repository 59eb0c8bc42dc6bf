"""Stage 2: the Ray Tune side of a study (searcher, scheduler, resources, callbacks, resume).

- Search: Optuna (``OptunaSearch``) over the space's define-by-run function, TPE
  by default (seeded), GridSampler for grid spaces, optional multi-objective
  (validation clean vs translated accuracy). The Optuna study lives in SQLite
  next to the MLflow store, so ``optuna-dashboard`` can open it too.
- The study's no-KD baselines run first (:class:`WithBaselines`), outside
  Optuna's history, so every study reports its gain over no KD.
- Early stopping: ASHA on the per-epoch validation metric; baselines are never stopped. A trial
  ASHA stops is told to Optuna as PRUNED, with its per-epoch values as intermediate values
  (:class:`PruningAwareOptunaSearch`), not as a finished trial with its first-epoch value.
- Trial states (completed / pruned / failed) follow one rule, :func:`study.search.trial_state.classify`.
- Logging: :class:`MLflowTrialLogger` (driver side, idempotent), progress: :class:`StudyProgress`.
"""
from __future__ import annotations

import logging

import warnings
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console

from study.search import trial_state as states
from study.search.reference import OBJECTIVES
from study.search.space import Space
from study.tracking.runs import Tracker, sqlite_store_lock

#: ``--objective``: what a study maximizes on validation. ``transfer`` is the transfer ratio of the
#: trial's student against its teacher and the no-KD reference of its seed (:mod:`study.search.reference`).
OBJECTIVE = OBJECTIVES["translated"]
MULTI_OBJECTIVE = ["val_clean_acc", OBJECTIVE]


def objective_metric(name: str) -> str:
    """The validation metric ``--objective NAME`` maximizes: ``translated``, ``transfer``, or a
    robustness family's (``rotation`` -> ``val_rotated_acc``); an unknown name is one line."""
    if name in OBJECTIVES:
        return OBJECTIVES[name]
    from study.train.robustness import get_family

    return f"val_{get_family(name).metric}"


def trial_state(trial: Trial, max_epochs: int, ended: bool | None = None) -> str:
    """completed / pruned / failed, or Tune's status (running, pending...) for a live trial.

    ``ended=True`` from ``on_trial_complete`` callbacks, which Tune calls before it marks the
    trial TERMINATED. The rule itself is :func:`study.search.trial_state.classify`.
    """
    if ended is None:
        ended = trial.status == Trial.TERMINATED
    return states.classify(trial.last_result, max_epochs, error=trial.status == Trial.ERROR, ended=ended,
                           otherwise=trial.status.lower())


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(config.items())}


def _restates_run_param(key: str) -> bool:
    """Config keys that are a sampled form of a value the run's params already hold under one name:
    ``step_<arch>`` is ``teacher_<i>_step``, ``teacher_weight`` is ``teacher_0_weight``, and
    ``<scale>_on`` (Optuna's "exactly 0?" switch) is whether ``<scale>`` is 0."""
    return key.startswith("step_") or key == "teacher_weight" or key.endswith("_on")


def trial_run_params(static: dict[str, Any], run_params: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A trial run's MLflow params: one name per hyperparameter, so runs compare column by column.

    The study's settings and the resolved run (``RunSpec.params()``: effective values, e.g. ``s_kl``
    after a ``variant`` switched it off) come first; config keys they do not already say (``baseline``,
    a grid ``arm``) are added under their own name, never a ``config/`` copy of a value logged twice.
    """
    params = {**static, **run_params}
    params.update({k: v for k, v in config.items() if k not in params and not _restates_run_param(k)})
    return params


# ----------------------------------------------------------------------------- searcher

class WithBaselines(Searcher):
    """Hands out the fixed no-KD baseline configs first, then delegates to ``searcher``.

    Baselines are kept out of the inner searcher (Optuna), whose space they are not part of.
    """

    def __init__(self, searcher: Searcher, baselines: list[dict[str, Any]]) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.pending = list(baselines)
        self.baseline_ids: set[str] = set()

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict | None:
        if self.pending:
            self.baseline_ids.add(trial_id)
            return self.pending.pop(0)
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.baseline_ids:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.baseline_ids:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

    # Tune saves wrappers with get_state/set_state and the wrapped searcher on its own
    # (like ConcurrencyLimiter), so a restored study neither reruns nor forgets baselines.
    def get_state(self) -> dict:
        return {"pending": list(self.pending), "baseline_ids": set(self.baseline_ids)}

    def set_state(self, state: dict) -> None:
        self.pending, self.baseline_ids = list(state["pending"]), set(state["baseline_ids"])

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


class BaselineSafeASHA(ASHAScheduler):
    """ASHA that never stops a baseline trial (its full run is what KD is compared with) and keeps
    it out of the rungs, as it is kept out of Optuna.

    Why the second part: ASHA records a completed trial's *last* value in every rung it has no
    value for; a baseline, never recorded while it ran, put its final-epoch accuracy into the
    epoch-1 and epoch-2 rungs, and every search trial was then cut against it.
    """

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if trial.config.get("baseline"):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        if trial.config.get("baseline"):
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)


class PruningAwareOptunaSearch(OptunaSearch):
    """Ray's ``OptunaSearch``, but a trial the scheduler stopped is told to Optuna as PRUNED.

    Why: Ray tells every trial whose last result carries the metric as COMPLETE, so an
    ASHA-stopped trial reached TPE (and the parameter importances) with its epoch-1 value as if
    it were final. Here the state follows :func:`study.search.trial_state.classify`; each epoch's
    objective is an intermediate value (``trial.report``: Ray reports every epoch except the one
    on which the scheduler stops the trial, which is added here), so pruning-aware samplers see
    the learning curve. Multi-objective studies get no intermediate values (Optuna does not
    support them) but the same PRUNED state.
    """

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._ot_trials or trial_id in self._completed_trials or error or not result:
            return super().on_trial_complete(trial_id, result=result, error=error)
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr("tune_trial_id", trial_id)  # Optuna trial -> MLflow run (tag leveled_kd.trial_id)
        step = int(result.get("training_iteration", 0) or 0)
        if not isinstance(self.metric, list) and result.get(self.metric) is not None and step > 0:
            with warnings.catch_warnings():  # a step reported already is a no-op (and a warning)
                warnings.simplefilter("ignore")
                ot_trial.report(float(result[self.metric]), step)
        if states.classify(result, self.max_epochs, ended=True) == states.COMPLETED:
            return super().on_trial_complete(trial_id, result=result, error=error)
        self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


class _GridExhausted(logging.Filter):
    """Drops Ray's warning that Optuna's ``Study.stop`` was "invoked outside an objective function":
    Optuna's GridSampler stops the study when its last point is told, which is the end of a grid
    space's search and nothing for a user to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Study.stop" not in record.getMessage()


def make_searcher(space: Space, *, seed: int, multi_objective: bool, storage_url: str, study_name: str,
                  baselines: list[dict[str, Any]], max_epochs: int, objective: str = OBJECTIVE) -> WithBaselines:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if space.sampler == "grid":
        sampler = optuna.samplers.GridSampler(space.grid(), seed=seed)
        ray_optuna = logging.getLogger("ray.tune.search.optuna.optuna_search")
        if not any(isinstance(f, _GridExhausted) for f in ray_optuna.filters):
            ray_optuna.addFilter(_GridExhausted())
    elif space.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=4)
    metric = MULTI_OBJECTIVE if multi_objective else objective
    mode = ["max", "max"] if multi_objective else "max"
    with sqlite_store_lock(storage_url):  # a new store's tables are created once, not raced by two studies
        storage = optuna.storages.RDBStorage(storage_url, engine_kwargs={"connect_args": {"timeout": 60}})
    inner = PruningAwareOptunaSearch(space=space.suggest, metric=metric, mode=mode, sampler=sampler, seed=seed,
                                     storage=storage, study_name=study_name, max_epochs=max_epochs)
    return WithBaselines(inner, baselines)


def make_scheduler(use_asha: bool, max_epochs: int, objective: str = OBJECTIVE) -> TrialScheduler:
    if not use_asha or max_epochs < 2:
        return FIFOScheduler()
    return BaselineSafeASHA(time_attr="training_iteration", metric=objective, mode="max", max_t=max_epochs,
                            grace_period=1, reduction_factor=2)


# ----------------------------------------------------------------------------- callbacks

class MLflowTrialLogger(tune.Callback):
    """One nested MLflow run per trial: params at start, metrics per epoch, final state as a tag.

    Runs are looked up by trial id before being created, so restoring a study (or
    a trial retried after a node failure) continues the same run.
    """

    def __init__(self, tracker: Tracker, parent_id: str, max_epochs: int, static_params: dict[str, Any]) -> None:
        self.tracker, self.parent_id, self.max_epochs = tracker, parent_id, max_epochs
        self.static_params = static_params
        self.runs: dict[str, str] = {}

    def _run(self, trial: Trial) -> str:
        if trial.trial_id not in self.runs:
            from study.distill.config import run_spec

            spec = run_spec(trial.config, dataset=self.static_params["dataset"], epochs=self.max_epochs,
                            train_subset=self.static_params.get("train_subset"))
            name = ("baseline " if trial.config.get("baseline") else "") + f"trial {trial.trial_id}"
            params = trial_run_params(self.static_params, spec.params(), trial.config)
            self.runs[trial.trial_id] = self.tracker.trial_run(self.parent_id, trial.trial_id, name, params)
        return self.runs[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self.tracker.set_tags(self._run(trial), {"state": "running"})

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info) -> None:
        self.tracker.log_metrics(self._run(trial), result, step=int(result.get("training_iteration", 0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        state = trial_state(trial, self.max_epochs, ended=True)  # Tune marks it TERMINATED after this call
        run_id = self._run(trial)
        self.tracker.set_tags(run_id, {"state": state})
        self.tracker.finish(run_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        run_id = self._run(trial)
        self.tracker.set_tags(run_id, {"state": "failed"})
        self.tracker.finish(run_id, "FAILED")

    def on_trial_recover(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        # the trial failed (e.g. its node was lost) and Tune retries it from its last checkpoint
        # (FailureConfig max_failures): same run, state back to running when it restarts
        self.tracker.set_tags(self._run(trial), {"state": "retrying", "retries": trial.num_failures})

    def __getstate__(self) -> dict:
        return {**self.__dict__, "runs": {}}


class StudyProgress(tune.Callback):
    """One status line whenever a trial reports or ends: done / running / pruned / failed, best so far."""

    def __init__(self, planned: int, max_epochs: int, quiet: bool = False, objective: str = OBJECTIVE) -> None:
        self.planned, self.max_epochs, self.quiet, self.objective = planned, max_epochs, quiet, objective
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)

    def _line(self, trials: list[Trial], event: str) -> None:
        if self.quiet:
            return
        states = [trial_state(t, self.max_epochs) for t in trials]
        scored = [(t.last_result[self.objective], t.trial_id) for t in trials if self.objective in (t.last_result or {})]
        best = max(scored) if scored else None
        best_text = f" | best {self.objective} {best[0]:.4f} ({best[1]})" if best else ""
        self.console.print(
            f"[bold]{states.count('completed')}/{self.planned} done[/] · {states.count('running')} running · "
            f"{states.count('pruned')} pruned · {states.count('failed')} failed{best_text} · {event}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._line(trials, f"{trial.trial_id} epoch {result.get('training_iteration')}: "
                           f"{self.objective} {result.get(self.objective, float('nan')):.4f}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._line(trials, f"{trial.trial_id} {trial_state(trial, self.max_epochs, ended=True)}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._line(trials, f"{trial.trial_id} failed")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._line(trials, f"{trial.trial_id} lost (failure {trial.num_failures}); retrying from its last checkpoint")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "console"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2

    def as_dict(self) -> dict[str, float]:
        return {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial}
