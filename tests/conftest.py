"""Shared fixtures: small real data (a slice of the shared MNIST copy) or data the tests make.

No test needs a GPU or the internet. Ray and MLflow are kept on loopback and quiet.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(os.environ.get("LEVELED_KD_SHARED_DATA", ROOT.parent / "shared" / "data")) / "mnist"

TINY_TRAIN, TINY_TEST = 2000, 500


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


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """An MNIST root in torchvision's layout with a small slice of real MNIST
    (2,000 train / 500 test) when the shared copy is beside the checkout, else synthetic digits."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    if (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        parts = {
            "train-images-idx3-ubyte": read_idx_gz(SHARED_MNIST / "train-images-idx3-ubyte.gz")[:TINY_TRAIN],
            "train-labels-idx1-ubyte": read_idx_gz(SHARED_MNIST / "train-labels-idx1-ubyte.gz")[:TINY_TRAIN],
            "t10k-images-idx3-ubyte": read_idx_gz(SHARED_MNIST / "t10k-images-idx3-ubyte.gz")[:TINY_TEST],
            "t10k-labels-idx1-ubyte": read_idx_gz(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")[:TINY_TEST],
        }
    else:
        (tx, ty), (vx, vy) = synthetic_digits(TINY_TRAIN, 0), synthetic_digits(TINY_TEST, 1)
        parts = {"train-images-idx3-ubyte": tx, "train-labels-idx1-ubyte": ty,
                 "t10k-images-idx3-ubyte": vx, "t10k-labels-idx1-ubyte": vy}
    for name, array in parts.items():
        write_idx(raw / name, array)
    return root


@pytest.fixture(scope="session")
def bank_dir(tmp_path_factory) -> Path:
    """Teacher banks shared by every end-to-end study of the session (the tiny teacher trains once)."""
    return tmp_path_factory.mktemp("teachers")


@pytest.fixture(scope="session")
def mnist(mnist_root):
    from study.data import load_dataset

    return load_dataset("mnist", mnist_root, download=False)


# A deliberately tiny CNN teacher, registered the way any new architecture is (one decorated
# class), so teacher-bank tests train in seconds.
from torch import nn  # noqa: E402

from models import ModelOutput, register_model  # noqa: E402


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
