"""Tiny studies for the tests and ``benchmarks/faults.py``: data, a model, and ways to watch a study.

- :func:`write_tiny_mnist`: an MNIST root in torchvision's layout with a 2,000/500 slice of the
  shared MNIST copy (``$LEVELED_KD_SHARED_DATA/mnist``, default ``../shared/data/mnist`` beside the
  checkout), or learnable synthetic digits without it.
- ``tiny_cnn``: a deliberately tiny CNN teacher, registered the way any new architecture is (one
  decorated class) when this module is imported, so teacher-bank tests train in seconds.
- :func:`runs_of`, :func:`free_port`, :func:`wait_until_healthy`: a study's MLflow runs, loopback
  ports, an MLflow server's health.
- :func:`raylet_pid`, :func:`trial_results`, :func:`running_trial_on_a_worker`: which node of a
  loopback Ray cluster runs a reporting trial (to remove that node mid-trial).

Nothing here runs unless asked; importing it only registers ``tiny_cnn``.
"""
from __future__ import annotations

import gzip
import json
import os
import socket
import struct
import time
from pathlib import Path

import torch
from torch import nn

from models import ModelOutput, register_model

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(os.environ.get("LEVELED_KD_SHARED_DATA", ROOT.parent / "shared" / "data")) / "mnist"
TINY_TRAIN, TINY_TEST = 2000, 500
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


# ----------------------------------------------------------------------------- data

def write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor in the IDX format torchvision's MNIST reads."""
    magic = 0x0800 | array.dim()
    header = struct.pack(">I" + "I" * array.dim(), magic, *array.shape)
    path.write_bytes(header + array.to(torch.uint8).contiguous().numpy().tobytes())


def read_idx_gz(path: Path) -> torch.Tensor:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).view(*shape)


def synthetic_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable 28x28 'digits': class k is a bright 6x6 square at a class-specific place, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = (torch.rand(n, 28, 28, generator=g) * 60).to(torch.uint8)
    for k in range(10):
        r, c = 4 + (k // 5) * 12, 2 + (k % 5) * 5
        images[labels == k, r:r + 6, c:c + 6] = 255
    return images, labels


def write_tiny_mnist(root: Path, shared: Path = SHARED_MNIST, train: int = TINY_TRAIN, test: int = TINY_TEST) -> Path:
    """An MNIST root in torchvision's layout under ``root``: the first ``train`` / ``test`` images of
    the IDX files in ``shared`` when they are there, else synthetic digits; returns ``root``."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    if (shared / f"{MNIST_FILES[0]}.gz").is_file():
        parts = {name: read_idx_gz(shared / f"{name}.gz")[:train if name.startswith("train") else test]
                 for name in MNIST_FILES}
    else:
        (tx, ty), (vx, vy) = synthetic_digits(train, 0), synthetic_digits(test, 1)
        parts = dict(zip(MNIST_FILES, (tx, ty, vx, vy)))
    for name, array in parts.items():
        write_idx(raw / name, array)
    return Path(root)


# ----------------------------------------------------------------------------- a tiny teacher

@register_model("tiny_cnn")
class TinyCNN(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(input_shape[0], 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, num_classes)
        self.feature_dim = 8

    def forward(self, x):
        features = self.body(x)
        return ModelOutput(self.head(features), features)


# ----------------------------------------------------------------------------- MLflow and ports

def runs_of(tracking_uri: str, experiment: str):
    """(client, {leveled_kd.kind: [runs]}) of one study's MLflow experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_kind: dict = {}
    for run in runs:
        by_kind.setdefault(run.data.tags.get("leveled_kd.kind"), []).append(run)
    return client, by_kind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(uri: str, timeout: float = 90.0) -> bool:
    """Poll an MLflow server's /health until it answers."""
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(uri + "/health", timeout=2).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


# ----------------------------------------------------------------------------- loopback Ray clusters

def raylet_pid(node) -> int:
    """The raylet process of a ``ray.cluster_utils.Cluster`` node."""
    return node.all_processes["raylet"][0].process.pid


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def trial_results(trial_dir: Path) -> list[dict]:
    """The rows of a Tune trial's result.json (none while it is absent or half-written)."""
    try:
        return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return []


def running_trial_on_a_worker(tune_dir: Path, raylets: dict, max_epochs: int):
    """(trial dir, node) of a trial that has reported, is not done, and runs on a worker node;
    ``raylets`` maps :func:`raylet_pid` to the node. None when there is no such trial yet."""
    for trial_dir in sorted(tune_dir.glob("trial_*")):
        results = trial_results(trial_dir)
        if results and results[-1]["training_iteration"] < max_epochs:
            node = raylets.get(parent_pid(results[-1]["pid"]))  # trial actors are children of their raylet
            if node is not None:
                return trial_dir, node
    return None
