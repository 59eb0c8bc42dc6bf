"""Shared fixtures: small real data (a slice of the shared MNIST copy) or data the tests make.

No test needs a GPU or the internet. Ray and MLflow are kept on loopback and quiet.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

# registers tiny_cnn, a deliberately tiny CNN teacher, so teacher-bank tests train in seconds
from study.testing import write_tiny_mnist  # noqa: E402


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """An MNIST root in torchvision's layout with a small slice of real MNIST
    (2,000 train / 500 test) when the shared copy is beside the checkout, else synthetic digits."""
    return write_tiny_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def bank_dir(tmp_path_factory) -> Path:
    """Teacher banks shared by every end-to-end study of the session (the tiny teacher trains once)."""
    return tmp_path_factory.mktemp("teachers")


@pytest.fixture(scope="session")
def mnist(mnist_root):
    from study.train.data import load_dataset

    return load_dataset("mnist", mnist_root, download=False)


@pytest.fixture
def forget_plugins():
    """What a test's plug-ins and spaces registered is forgotten afterwards (they run in this process)."""
    from models import registry
    from study.teachers import pretrained
    from study.train import datasets

    saved = [dict(t) for t in (registry._MODELS, registry._ROLES, registry._ADAPT, datasets._DATASETS,
                               pretrained._PRETRAINED)]
    modules = set(sys.modules)
    yield
    for table, before in zip((registry._MODELS, registry._ROLES, registry._ADAPT, datasets._DATASETS,
                              pretrained._PRETRAINED), saved):
        table.clear()
        table.update(before)
    for name in set(sys.modules) - modules:
        if name.startswith("lkd_"):
            del sys.modules[name]
