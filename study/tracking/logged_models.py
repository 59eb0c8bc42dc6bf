"""Students as MLflow models: logged on their run, saved to a folder, registered in the Model Registry.

One format everywhere (the study's best trials, ``python -m study.distill --save`` and
``--tracking-uri``): ``mlflow.pytorch`` with the module **pickled** (not ``torch.export``,
MLflow 3's default), so that what loads is the real :class:`models.export.LogitsOnly`
around the real student, which can be inspected, fine-tuned or moved to a GPU.
Pickling stores classes by reference, so the ``models/`` package travels with the
model (``code_paths``), and so does the plug-in file of a user's own student
(:func:`study.train.plugins.plugin_files`): loading needs torch and MLflow, not this project.

Every model carries a signature (``float32 [-1, C*H*W]`` -> ``float32 [-1, classes]``),
an input example (a few normalized, flattened test images) and, as metadata, the
normalization a raw image needs. Everything here runs in the driver / CLI process:
trials never talk to MLflow.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from models.export import LogitsOnly, logits_only

from study.train.data import ImageData
from study.train.plugins import plugin_files

#: Artifact path (MLflow 3: the logged model's name) of a student on its run: ``runs:/<run id>/model``.
MODEL_NAME = "model"
#: Registry alias that always points at the study's best version: ``models:/<name>@best``.
BEST_ALIAS = "best"
MODELS_PACKAGE = Path(__file__).resolve().parents[2] / "models"
INPUT_EXAMPLE_IMAGES = 4


@dataclass(frozen=True)
class LoggedStudent:
    """Where a logged student is: its logged-model id and the URIs that load it."""

    model_id: str
    run_id: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_id}"

    @property
    def run_uri(self) -> str:
        return f"runs:/{self.run_id}/{MODEL_NAME}"


def registered_model_name(study: str) -> str:
    """The registry name of a study's best student (one name per study, a version per best-so-far)."""
    return f"leveled-kd-{study}"


def serving_module(model: torch.nn.Module, data: ImageData) -> LogitsOnly:
    """``model`` as a CPU, eval-mode classifier of ``data``'s (normalized) images."""
    return logits_only(model, data.input_shape, data.mean, data.std)


def input_example(data: ImageData, n: int = INPUT_EXAMPLE_IMAGES) -> np.ndarray:
    """The first ``n`` test images, normalized and flattened: what the signature describes."""
    return data.test_x[:n].flatten(1).numpy().astype(np.float32)


def model_metadata(data: ImageData, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a user needs to feed the model raw images (kept in the MLmodel file)."""
    return {"dataset": data.name, "input_shape": list(data.input_shape), "num_classes": data.num_classes,
            "mean": list(data.mean), "std": list(data.std),
            "input": "float32 [N, C*H*W] (or [N, C, H, W]) images normalized as (pixels / 255 - mean) / std",
            "output": "float32 [N, num_classes] logits", **(extra or {})}


def _flavor_kwargs(module: LogitsOnly, data: ImageData, code_dir: Path,
                   metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    from mlflow.models import infer_signature

    example = input_example(data)
    with torch.no_grad():
        logits = module(torch.from_numpy(example)).numpy()
    torch_version = torch.__version__.split("+")[0]  # "2.14.1+cu130": the local tag is not on the package index
    return {"signature": infer_signature(example, logits), "input_example": example,
            "code_paths": [str(code_dir), *plugin_files(type(m) for m in module.modules())],
            "serialization_format": "pickle",
            "pip_requirements": [f"torch=={torch_version}"], "metadata": model_metadata(data, metadata)}


@contextmanager
def _models_package() -> Iterator[Path]:
    """A clean copy of ``models/`` (no ``__pycache__``) for ``code_paths``.

    Also mutes ``mlflow.pytorch``'s warning that pickled models run code when loaded: pickling is
    the choice made above (load only models you logged), and the warning would print per student.
    """
    pytorch_log = logging.getLogger("mlflow.pytorch")
    level = pytorch_log.level
    pytorch_log.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="lkd-code-") as tmp:
            target = Path(tmp) / "models"
            shutil.copytree(MODELS_PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            yield target
    finally:
        pytorch_log.setLevel(level)


@contextmanager
def tracking_uri_for_a_moment(uri: str | None) -> Iterator[None]:
    """Point MLflow's fluent API (which ``log_model`` and ``load_model`` use) at ``uri`` for a moment,
    then restore it, ``$MLFLOW_TRACKING_URI`` included: ``mlflow.set_tracking_uri`` also sets that
    variable, and a value left behind would send every later study of the process (and its
    subprocesses) to another store. The project otherwise passes URIs explicitly
    (``MlflowClient(uri)``) and never sets global state. ``None``: leave it as it is."""
    import os

    import mlflow

    if uri is None:
        yield
        return
    saved_env, previous = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def save_student(path: str | Path, module: LogitsOnly, data: ImageData,
                 metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``module`` as a self-contained MLflow model folder (``mlflow.pytorch.load_model(path)``)."""
    import mlflow.pytorch

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)  # save_model refuses an existing folder; --save DIR may be reused
    with _models_package() as code:
        mlflow.pytorch.save_model(module, str(path), **_flavor_kwargs(module, data, code, metadata))
    return path


def find_logged_student(client, experiment_id: str, run_id: str) -> LoggedStudent | None:
    """The student already logged on ``run_id`` (a resumed study logs it once)."""
    found = client.search_logged_models([experiment_id], max_results=1,
                                        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_NAME}'")
    return LoggedStudent(found[0].model_id, run_id) if found else None


def log_student(client, experiment_id: str, run_id: str, module: LogitsOnly, data: ImageData,
                tags: Mapping[str, str] | None = None, metadata: Mapping[str, Any] | None = None) -> LoggedStudent:
    """Log ``module`` on the existing run ``run_id`` as ``runs:/<run_id>/model`` (once).

    The logged model is created explicitly in the run's experiment: ``mlflow.pytorch.log_model``
    alone would create it in the fluent API's *active* experiment, whatever the run's.
    """
    import mlflow.pytorch

    existing = find_logged_student(client, experiment_id, run_id)
    if existing is not None:
        return existing
    logged = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                        tags={k: str(v) for k, v in (tags or {}).items()})
    with _models_package() as code, tracking_uri_for_a_moment(client.tracking_uri):
        mlflow.pytorch.log_model(module, name=MODEL_NAME, run_id=run_id, model_id=logged.model_id,
                                 **_flavor_kwargs(module, data, code, metadata))
    return LoggedStudent(logged.model_id, run_id)


def register_student(client, name: str, student: LoggedStudent, tags: Mapping[str, Any],
                     description: str = "", model_tags: Mapping[str, Any] | None = None,
                     model_description: str = "") -> str:
    """Register ``student`` as a version of ``name`` (once per run) and point the ``best`` alias at it.

    Returns the version number. ``tags`` and ``description`` go on the version (its metrics
    and trial), ``model_tags`` and ``model_description`` on the registered model (its study).
    """
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags={k: str(v) for k, v in (model_tags or {}).items()},
                                       description=model_description or None)
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{student.run_id}'")
    if versions:
        version = versions[0].version
    else:
        with tracking_uri_for_a_moment(client.tracking_uri):  # the SQL registry looks the logged model up through it
            version = client.create_model_version(name, source=student.model_uri, run_id=student.run_id,
                                                  model_id=student.model_id, description=description or None,
                                                  tags={k: str(v) for k, v in tags.items()}).version
    client.set_registered_model_alias(name, BEST_ALIAS, version)
    return str(version)
