"""Teacher snapshot banks and teacher-output caches.

A teacher is trained once per (dataset, architecture, seed, label smoothing) and
**snapshots** are kept on the study's schedule (every 50 iterations up to 500,
then every 500), so "which training stage of the teacher transfers the most
robustness" is a lookup, not a retraining. Each bank is a directory::

    <bank_root>/<dataset>/<arch>[-ls<eps>]/seed-<seed>/
        manifest.json            steps, clean/translated accuracy, sha256 of each file
        step-002500.pt           weights (loaded with weights_only=True, hash checked)
        step-002500.outputs.pt   teacher-output cache: logits + features on the training set
        train-state.pt           optimizer/RNG state of the last step, to extend the bank

Teacher outputs are fixed per snapshot, so they are computed the first time a
student needs them and reused by every later student: students never run the
teacher during training, and a snapshot no student uses costs nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from losses import LeveledKDConfig, LeveledKDLoss
from models import build_model

from .data import ImageData, shift_grid, train_val_split
from .evaluation import translation_accuracy
from .trainer import AtSteps, TrainConfig, Trainer, seed_everything, select_device

#: Test images each snapshot is scored on (a fixed prefix of the test set): the
#: full 33-shift grid on 10k images costs minutes per snapshot on a CPU.
SNAPSHOT_EVAL_IMAGES = 1000


class SnapshotError(RuntimeError):
    """A snapshot or cache is missing, corrupted or does not match its manifest."""


def snapshot_steps(max_steps: int) -> list[int]:
    """The study's schedule: 50, 100, ..., 500, then 1000, 1500, ... up to ``max_steps``."""
    early = range(50, min(500, max_steps) + 1, 50)
    late = range(1000, max_steps + 1, 500)
    return [*early, *late]


def is_snapshot_step(step: int) -> bool:
    return step > 0 and (step % 50 == 0 if step <= 500 else step % 500 == 0)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_save(obj: object, path: Path) -> str:
    """Write via a temp file and rename, so an interrupted save never leaves a half file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return sha256(path)


@dataclass(frozen=True)
class TeacherSpec:
    """Which teacher: dataset, architecture, seed and label smoothing of its CE loss."""

    dataset: str
    arch: str
    seed: int = 0
    label_smoothing: float = 0.0

    @property
    def key(self) -> str:
        ls = f"-ls{self.label_smoothing:g}" if self.label_smoothing else ""
        return f"{self.dataset}/{self.arch}{ls}/seed-{self.seed}"


class TeacherBank:
    """The snapshots of one teacher, on disk, with their manifest."""

    def __init__(self, root: str | os.PathLike, spec: TeacherSpec, eval_images: int = SNAPSHOT_EVAL_IMAGES) -> None:
        self.spec = spec
        self.eval_images = eval_images
        self.dir = Path(root).expanduser() / spec.key
        self.manifest_path = self.dir / "manifest.json"

    # -- manifest ------------------------------------------------------------------------
    def manifest(self) -> dict:
        if not self.manifest_path.is_file():
            return {"teacher": asdict(self.spec), "snapshots": {}}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise SnapshotError(f"corrupted manifest {self.manifest_path}: {error}; delete the bank directory") from None

    def _write_manifest(self, manifest: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.replace(tmp, self.manifest_path)

    def steps(self) -> list[int]:
        return sorted(int(s) for s in self.manifest()["snapshots"])

    def record(self, step: int) -> dict:
        try:
            return self.manifest()["snapshots"][str(step)]
        except KeyError:
            raise SnapshotError(
                f"teacher {self.spec.key} has no snapshot at step {step}; available: {self.steps() or 'none'}"
            ) from None

    def snapshot_path(self, step: int) -> Path:
        return self.dir / f"step-{step:06d}.pt"

    def outputs_path(self, step: int) -> Path:
        return self.dir / f"step-{step:06d}.outputs.pt"

    # -- loading -------------------------------------------------------------------------
    def _checked_load(self, path: Path, expected_hash: str | None) -> dict:
        if not path.is_file():
            raise SnapshotError(f"missing snapshot file {path}; delete {self.dir} to rebuild the bank")
        if expected_hash is not None and sha256(path) != expected_hash:
            raise SnapshotError(f"{path} does not match the sha256 in its manifest (corrupted or replaced); "
                                f"delete it and rerun to rebuild")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise SnapshotError(f"cannot read {path}: {error}") from None

    def load(self, step: int, data: ImageData, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The teacher at ``step``, hash-checked, in eval mode."""
        record = self.record(step)
        model = build_model(self.spec.arch, data.input_shape, data.num_classes)
        model.load_state_dict(self._checked_load(self.snapshot_path(step), record["sha256"]))
        return model.to(device).eval()

    # -- training ------------------------------------------------------------------------
    def ensure(self, data: ImageData, max_steps: int, device: str = "auto",
               progress: Callable[[str], None] | None = None) -> list[int]:
        """Make sure every scheduled snapshot up to ``max_steps`` exists; train only what is missing.

        A bank that already reaches ``max_steps`` trains nothing; a shorter one is
        extended from its saved training state, not retrained. Teachers train on the
        whole training split (never on the validation images, whatever a student's subset).
        """
        wanted = snapshot_steps(max_steps)
        if not wanted:
            raise ValueError(f"teacher steps must be >= 50 (the first snapshot), got {max_steps}")
        have = set(self.steps())
        if set(wanted) <= have:
            return wanted
        manifest = self.manifest()
        spec = self.spec
        seed_everything(spec.seed)
        model = build_model(spec.arch, data.input_shape, data.num_classes)
        loss = LeveledKDLoss(LeveledKDConfig(alpha=1.0, label_smoothing=spec.label_smoothing))
        eval_x, eval_y = data.test_x[:self.eval_images], data.test_y[:self.eval_images]
        shifts = shift_grid()

        def save_snapshot(trainer: Trainer) -> None:
            path = self.snapshot_path(trainer.step)
            digest = _atomic_save(trainer.model.state_dict(), path)
            result = trainer.evaluate(eval_x, eval_y, shifts, data.fill)
            manifest["snapshots"][str(trainer.step)] = {
                "file": path.name, "sha256": digest, "clean_acc": result.clean_acc,
                "translated_acc": result.translated_acc, "eval_images": len(eval_x),
            }
            state_path = self.dir / "train-state.pt"
            manifest["train_state_sha256"] = _atomic_save(trainer.state_dict(), state_path)
            self._write_manifest(manifest)
            if progress:
                progress(f"{spec.key} step {trainer.step}: clean {result.clean_acc:.4f} "
                         f"translated {result.translated_acc:.4f}")

        self.dir.mkdir(parents=True, exist_ok=True)
        split = train_val_split(data)
        trainer = Trainer(
            model, loss, {"x": data.train_x[split.train], "y": data.train_y[split.train]},
            TrainConfig(epochs=10**9, max_steps=max_steps, seed=spec.seed, device=device),
            callbacks=[AtSteps(is_snapshot_step, save_snapshot)],
        )
        if have:
            state = self._checked_load(self.dir / "train-state.pt", manifest.get("train_state_sha256"))
            trainer.load_state_dict(state)
        trainer.fit()
        return wanted

    # -- teacher-output cache ------------------------------------------------------------
    @staticmethod
    def _indices_tag(indices: torch.Tensor | None) -> str:
        if indices is None:
            return "all"
        return hashlib.sha256(indices.to(torch.int64).numpy().tobytes()).hexdigest()[:12]

    def outputs_path(self, step: int, indices: torch.Tensor | None = None) -> Path:
        tag = self._indices_tag(indices)
        return self.dir / (f"step-{step:06d}.outputs.pt" if tag == "all" else f"step-{step:06d}.outputs-{tag}.pt")

    def outputs(self, step: int, data: ImageData, indices: torch.Tensor | None = None, device: str = "auto",
                batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features) of the snapshot on ``data.train_x[indices]`` (default: every
        training image), computed once, cached beside the snapshot and hash-checked.

        A study over a training subset caches just that subset (seconds, not minutes, on a CPU).
        """
        record = self.record(step)
        tag = self._indices_tag(indices)
        path = self.outputs_path(step, indices)
        expected = record.get("outputs", {}).get(tag)
        if path.is_file() and expected:
            cached = self._checked_load(path, expected)
            if cached.get("snapshot_sha256") == record["sha256"]:
                return cached["logits"], cached["features"]
        images = data.train_x if indices is None else data.train_x[indices]
        dev = select_device(device)
        model = self.load(step, data, dev)
        logits, features = [], []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                out = model(images[start:start + batch_size].to(dev))
                logits.append(out.logits.float().cpu())
                features.append(out.features.float().cpu())
        cached = {"logits": torch.cat(logits), "features": torch.cat(features), "snapshot_sha256": record["sha256"]}
        digest = _atomic_save(cached, path)
        manifest = self.manifest()
        manifest["snapshots"][str(step)].setdefault("outputs", {})[tag] = digest
        self._write_manifest(manifest)
        return cached["logits"], cached["features"]


def teacher_bank_root(output_dir: str | os.PathLike | None = None) -> Path:
    """Where banks live: ``$LEVELED_KD_BANK`` if set (shared storage on a cluster), else ``<output_dir>/teachers``."""
    env = os.environ.get("LEVELED_KD_BANK")
    if env:
        return Path(env).expanduser()
    return Path(output_dir or "runs").expanduser() / "teachers"


def ensure_banks(specs: Iterable[TeacherSpec], root: Path, data: ImageData, max_steps: int,
                 device: str = "auto", progress: Callable[[str], None] | None = None) -> dict[TeacherSpec, TeacherBank]:
    banks = {}
    for spec in specs:
        bank = TeacherBank(root, spec)
        bank.ensure(data, max_steps, device=device, progress=progress)
        banks[spec] = bank
    return banks
