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

PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "leveled_kd.kind"
MAX_BATCH = 900  # MLflow's log_batch limit is 1000 entities
#: Opens the experiment in the MLflow UI's model-training view (runs table, charts), not the GenAI one.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class TrackingError(ConnectionError):
    """The tracking store cannot be reached or used; nothing is half-logged."""


def default_tracking_uri(output_dir: str | os.PathLike) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite file in the output directory (nothing to start)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(output_dir).expanduser().resolve() / 'mlflow.db'}"


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
        _check_reachable(tracking_uri)
        for noisy in ("mlflow", "alembic"):  # schema-creation INFO lines on a new store
            logging.getLogger(noisy).setLevel(logging.WARNING)
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
                "experiment_id": self.experiment_id}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.client = MlflowClient(self.tracking_uri)

    # -- finding and creating runs --------------------------------------------------------
    def find_run(self, **tags: str) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def get_or_create_run(self, name: str, tags: dict[str, str], params: dict[str, Any] | None = None,
                          parent_id: str | None = None) -> tuple[str, bool]:
        """(run_id, created): the run carrying ``tags`` (and parent), created once."""
        lookup = dict(tags, **({PARENT_TAG: parent_id} if parent_id else {}))
        existing = self.find_run(**lookup)
        if existing:
            return existing, False
        run = self.client.create_run(self.experiment_id, run_name=name, tags=lookup)
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
        """One run per teacher bank; accuracy per snapshot step logged once (new steps only)."""
        run_id, _ = self.get_or_create_run(f"teacher {key}", {KIND_TAG: "teacher", "leveled_kd.teacher": key},
                                           params, parent_id)
        done = self.logged_steps(run_id, "clean_acc")
        for step, record in sorted(manifest["snapshots"].items(), key=lambda kv: int(kv[0])):
            if int(step) not in done:
                self.log_metrics(run_id, {"clean_acc": record["clean_acc"],
                                          "translated_acc": record["translated_acc"]}, int(step))
        self.finish(run_id)
        return run_id

    def trial_run(self, parent_id: str, trial_id: str, name: str, params: dict[str, Any]) -> str:
        run_id, _ = self.get_or_create_run(name, {KIND_TAG: "trial", "leveled_kd.trial_id": trial_id},
                                           params, parent_id)
        return run_id

    def child_runs(self, parent_id: str, kind: str | None = None) -> list:
        query = f"tags.`{PARENT_TAG}` = '{parent_id}'" + (f" and tags.`{KIND_TAG}` = '{kind}'" if kind else "")
        return self.client.search_runs([self.experiment_id], filter_string=query, max_results=10_000)
