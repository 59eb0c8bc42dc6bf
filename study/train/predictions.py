"""Per-image results: which images each shift got right, so two runs can be compared *paired*.

Counts (accuracy per shift) cannot tell a real difference between two students from
test-set noise; per-image correctness on the same images can (a paired test). Every
final evaluation of a trial is saved as one ``.npz``:

    shifts            int16 [S, 2]   (dx, dy) of every shift; row 0 is (0, 0)
    <split>_indices   int64 [N]      which images: rows of ``data.test_x`` (test) or ``data.train_x`` (val)
    <split>_correct   uint8 [S, ceil(N/8)]   ``np.packbits`` of the bool [S, N] correctness, along axis 1
    <split>_n         int64 []       N (to unpack the bits)

for ``split`` in ``val`` and ``test``. Two files are comparable when their indices are equal.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from study.train.data import Shift

#: How many of a grid's smallest shift magnitudes (pixels, max(|dx|, |dy|)) the "small-shift" metric
#: averages: 2 and 4 px on the default grid, where an MLP is still above chance, unlike 6-8 px, so
#: gains there are not noise around chance level (a grid scaled for larger images keeps the fractions).
SMALL_SHIFT_COUNT = 2


def small_magnitudes(shifts: Sequence[Shift]) -> tuple[int, ...]:
    """The grid's ``SMALL_SHIFT_COUNT`` smallest non-zero magnitudes (2 and 4 px on the default grid)."""
    return tuple(sorted({max(abs(dx), abs(dy)) for dx, dy in shifts} - {0})[:SMALL_SHIFT_COUNT])


@dataclass(frozen=True)
class PerImage:
    """Correctness of one evaluation: ``correct[s, i]`` is whether shift ``shifts[s]`` of image
    ``indices[i]`` was classified correctly."""

    shifts: tuple[Shift, ...]
    indices: np.ndarray
    correct: np.ndarray  # bool [S, N]

    def __post_init__(self) -> None:
        if self.correct.shape != (len(self.shifts), len(self.indices)):
            raise ValueError(f"correct has shape {self.correct.shape}, expected ({len(self.shifts)}, {len(self.indices)})")

    def shift_mask(self, metric: str) -> np.ndarray:
        """Which rows a metric averages: ``clean`` (0, 0); ``translated`` every non-zero shift;
        ``small_shift`` the non-zero shifts of the grid's two smallest magnitudes (2 and 4 px)."""
        magnitude = np.array([max(abs(dx), abs(dy)) for dx, dy in self.shifts])
        if metric == "clean":
            return magnitude == 0
        if metric == "translated":
            return magnitude > 0
        if metric == "small_shift":
            return np.isin(magnitude, small_magnitudes(self.shifts))
        raise ValueError(f"unknown metric {metric!r}; valid: clean, translated, small_shift")

    def scores(self, metric: str) -> np.ndarray:
        """Per-image score in [0, 1]: the fraction of the metric's shifts the image got right."""
        mask = self.shift_mask(metric)
        if not mask.any():
            raise ValueError(f"metric {metric!r} has no shifts in {self.shifts}")
        return self.correct[mask].mean(axis=0)

    def accuracy(self, metric: str) -> float:
        return float(self.scores(metric).mean())


def save_predictions(path: str | os.PathLike, results: Mapping[str, PerImage]) -> Path:
    """Write ``{split: PerImage}`` (all with the same shifts) atomically to ``path``."""
    if not results:
        raise ValueError("nothing to save")
    shifts = {r.shifts for r in results.values()}
    if len(shifts) != 1:
        raise ValueError("every split of one predictions file must use the same shifts")
    arrays: dict[str, np.ndarray] = {"shifts": np.asarray(next(iter(shifts)), dtype=np.int16).reshape(-1, 2)}
    for split, result in results.items():
        arrays[f"{split}_indices"] = np.asarray(result.indices, dtype=np.int64)
        arrays[f"{split}_correct"] = np.packbits(result.correct.astype(bool), axis=1)
        arrays[f"{split}_n"] = np.int64(len(result.indices))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path


def load_predictions(path: str | os.PathLike) -> dict[str, PerImage]:
    """Read a predictions file back into ``{split: PerImage}``."""
    with np.load(path) as npz:
        shifts = tuple((int(dx), int(dy)) for dx, dy in npz["shifts"])
        splits = sorted(k.removesuffix("_indices") for k in npz.files if k.endswith("_indices"))
        out = {}
        for split in splits:
            n = int(npz[f"{split}_n"])
            correct = np.unpackbits(npz[f"{split}_correct"], axis=1, count=n).astype(bool)
            out[split] = PerImage(shifts, npz[f"{split}_indices"], correct)
    return out
