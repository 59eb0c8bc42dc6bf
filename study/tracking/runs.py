"""MLflow tracking: a parent run per study, a child run per teacher bank and per trial.

Everything goes through ``MlflowClient`` with explicit run ids (no global
"active run"), from the driver only: trials on remote nodes never talk to the
tracking server, so a lost worker cannot leave half-written runs, and logging
is idempotent: runs are found again by tags (``leveled_kd.trial_id``,
``leveled_kd.teacher``) before one is created, so a restored study never
duplicates them.
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from study.errors import UserError

PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "leveled_kd.kind"
#: The tag that ties a trial's MLflow run to its Tune trial id.
TRIAL_TAG = "leveled_kd.trial_id"
MAX_BATCH = 900  # MLflow's log_batch limit is 1000 entities
#: Opens the experiment in the MLflow UI's model-training view (runs table, charts), not the GenAI one.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class TrackingError(UserError, ConnectionError):
    """The tracking store cannot be reached or used; nothing is half-logged."""


def default_tracking_uri(output_dir: str | os.PathLike) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite file in the output directory (nothing to start)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(output_dir).expanduser().resolve() / 'mlflow.db'}"


def browse_hint(tracking_uri: str) -> str:
    """How to look at a study's runs: a server is already serving its UI, a SQLite file needs one."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri.rstrip('/')}"
    if tracking_uri.startswith("databricks"):
        return "open the experiment in your Databricks workspace"
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1"


def quiet_mlflow() -> None:
    """No "View run ... at <url>" lines: with a tracking server MLflow writes two of them to stdout
    (``print``, not a logger) every time a run ends, i.e. for every trial, into the progress output.
    ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`` is MLflow's own switch; the summary's browse hint
    gives the one URL that matters."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for noisy in ("mlflow", "alembic"):  # schema-creation INFO lines on a new store
        logging.getLogger(noisy).setLevel(logging.WARNING)


def study_tags(study: str, space: str, dataset: str, budget: dict[str, Any]) -> dict[str, str]:
    """Tags on every run of a study, so runs can be filtered across studies and experiments:
    ``tags.`leveled_kd.space` = 'kd_types'``; the budget as one JSON tag (sorted keys)."""
    return {"leveled_kd.study": study, "leveled_kd.space": space, "leveled_kd.dataset": dataset,
            "leveled_kd.budget": json.dumps(budget, sort_keys=True, default=str)}


def _chunks(items: list, size: int = MAX_BATCH) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)


@contextmanager
def sqlite_store_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise the first open of a SQLite store across processes.

    Opening a new SQLite store runs MLflow's schema migrations; two studies started at once
    into one output directory would otherwise race and one would fail half-way
    ("Online migration expected to match one row"). Servers (http URIs) serialise themselves.
    """
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_reachable(tracking_uri: str, timeout: float = 10.0) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when a tracking server is down."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except requests.RequestException as error:
        reason = type(error).__name__ if isinstance(error, requests.ConnectionError) else str(error)[:200]
        raise TrackingError(f"cannot reach the MLflow tracking server at {tracking_uri} ({reason}); "
                            f"is it running? (start one with: mlflow server --host 127.0.0.1)") from None


class Tracker:
    """Thin, idempotent layer over ``MlflowClient`` for one study's experiment."""

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        #: tags every new run gets (the study's name, space, dataset, budget): filters across studies
        self.run_tags: dict[str, str] = {}
        _check_reachable(tracking_uri)
        quiet_mlflow()
        try:
            with sqlite_store_lock(tracking_uri):
                self.client = MlflowClient(tracking_uri)
                experiment = self.client.get_experiment_by_name(experiment_name)
                self.experiment_id = (experiment.experiment_id if experiment is not None
                                      else self.client.create_experiment(experiment_name, tags=EXPERIMENT_TAGS))
        except Exception as error:  # MlflowException, requests' ConnectionError, sqlite errors...
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TrackingError(f"cannot use the MLflow tracking store {tracking_uri}: {first[:200]}") from None

    def __getstate__(self) -> dict:  # Tune pickles callbacks: keep only what rebuilds the client
        return {"tracking_uri": self.tracking_uri, "experiment_name": self.experiment_name,
                "experiment_id": self.experiment_id, "run_tags": dict(getattr(self, "run_tags", {}))}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        quiet_mlflow()
        self.client = MlflowClient(self.tracking_uri)

    # -- finding and creating runs --------------------------------------------------------
    def find_run(self, **tags: str) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def get_or_create_run(self, name: str, tags: dict[str, str], params: dict[str, Any] | None = None,
                          parent_id: str | None = None, start_time: float | None = None) -> tuple[str, bool]:
        """(run_id, created): the run carrying ``tags`` (and parent), created once.

        A new run also gets :attr:`run_tags`; ``start_time`` (epoch seconds) backdates it to when
        its work really began (a teacher bank trained in a Ray task before the driver logs it).
        """
        lookup = dict(tags, **({PARENT_TAG: parent_id} if parent_id else {}))
        existing = self.find_run(**lookup)
        if existing:
            return existing, False
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={**getattr(self, "run_tags", {}), **lookup},
                                     start_time=None if start_time is None else int(start_time * 1000))
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id, True

    # -- logging --------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, _param_value(v)[:6000]) for k, v in params.items()]
        for chunk in _chunks(items):
            self.client.log_batch(run_id, params=chunk)

    def log_metrics(self, run_id: str, metrics: dict[str, Any], step: int) -> None:
        import time

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for chunk in _chunks(items):
            self.client.log_batch(run_id, metrics=chunk)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def log_artifact(self, run_id: str, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def logged_steps(self, run_id: str, metric: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, metric)}

    # -- the study's runs -----------------------------------------------------------------
    def study_run(self, study_name: str, params: dict[str, Any]) -> str:
        run_id, _ = self.get_or_create_run(study_name, {KIND_TAG: "study", "leveled_kd.study": study_name}, params)
        return run_id

    def teacher_run(self, parent_id: str, key: str, params: dict[str, Any], manifest: dict) -> str:
        """One run per teacher bank; accuracy per snapshot step logged once (new steps only).

        ``manifest["started"]`` / ``["finished"]`` (epoch seconds, set by stage 1 around the bank's
        training and caching) become the run's start and end, so its duration is the bank's real
        one, not the instant the driver logged it. A run found again (resumed study) keeps its times.
        """
        started, finished = manifest.get("started"), manifest.get("finished")
        run_id, created = self.get_or_create_run(f"teacher {key}", {KIND_TAG: "teacher", "leveled_kd.teacher": key},
                                                 params, parent_id, start_time=started)
        done = self.logged_steps(run_id, "clean_acc")
        for step, record in sorted(manifest["snapshots"].items(), key=lambda kv: int(kv[0])):
            if int(step) not in done:
                self.log_metrics(run_id, {"clean_acc": record["clean_acc"],
                                          "translated_acc": record["translated_acc"]}, int(step))
        if created or self.client.get_run(run_id).info.status != "FINISHED":
            self.client.set_terminated(run_id, "FINISHED",
                                       end_time=int(finished * 1000) if created and finished is not None else None)
        return run_id

    def trial_run(self, parent_id: str, trial_id: str, name: str, params: dict[str, Any]) -> str:
        run_id, _ = self.get_or_create_run(name, {KIND_TAG: "trial", "leveled_kd.trial_id": trial_id},
                                           params, parent_id)
        return run_id

    def trial_run_ids(self, parent_id: str) -> dict[str, str]:
        """``{trial id: run id}`` of every trial run under ``parent_id``: one query for a whole
        study's finishing steps, instead of one search per trial and step."""
        return {run.data.tags[TRIAL_TAG]: run.info.run_id for run in self.child_runs(parent_id, "trial")
                if TRIAL_TAG in run.data.tags}

    def child_runs(self, parent_id: str, kind: str | None = None) -> list:
        query = f"tags.`{PARENT_TAG}` = '{parent_id}'" + (f" and tags.`{KIND_TAG}` = '{kind}'" if kind else "")
        return self.client.search_runs([self.experiment_id], filter_string=query, max_results=10_000)
