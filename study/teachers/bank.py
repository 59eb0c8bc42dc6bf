"""Teacher snapshot banks and teacher-output caches.

A teacher is trained once per (dataset, architecture, seed, label smoothing) and
**snapshots** are kept on the study's schedule (every 50 iterations up to 500,
then every 500), so "which training stage of the teacher transfers the most
robustness" is a lookup, not a retraining. Each bank is a directory::

    <bank_root>/<dataset>/<arch>[-ls<eps>]/seed-<seed>/
        manifest.json            steps, clean/translated accuracy, sha256 of each file
        step-002500.pt           weights (loaded with weights_only=True, hash checked)
        step-002500.outputs.pt   teacher-output cache: logits + features on the training set
        step-002500.outputs-<indices>[-<views>].pt   the same on a subset, or on K views of each image
        train-state.pt           optimizer/RNG state of the last step, to extend the bank

Teacher outputs are fixed per snapshot, so they are computed the first time a
student needs them and reused by every later student: students never run the
teacher during training, and a snapshot no student uses costs nothing. The same
holds for the outputs on fixed views of the training images (function matching,
study/train/views.py): one cache per (snapshot, view set, training indices).

Several studies (processes, nodes) may use one bank at once: every read-modify-write
of the manifest, and the training and caching that lead to one, happen under the
bank's file lock (``.bank.lock``), and every file is written to a private temp file
and renamed. The manifest and each cache carry a **format** number: a bank written
before formats existed is upgraded (its snapshots kept, its caches recomputed), one
written by a newer version is refused, never misread.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from filelock import FileLock, Timeout

from losses import LeveledKDConfig, LeveledKDLoss
from models import build_model

from study.train.data import EVAL_SEED, EVAL_SUBSET, ImageData, evaluation_indices, train_val_split
from study.errors import UserError
from study.train.runtime import default_precision
from study.train.evaluation import TranslationResult, translation_accuracy
from study.train.predictions import PerImage, load_predictions, save_predictions
from study.train.trainer import AtSteps, TrainConfig, Trainer, inference_model, resolve_precision, seed_everything, select_device
from study.train.directions import DirectionSet
from study.train.views import ViewSet

#: Test images each snapshot is scored on (a seeded, stratified sample of the test set, the same
#: for every snapshot and bank): the full 33-shift grid on 10k images costs minutes per snapshot on a CPU.
SNAPSHOT_EVAL_IMAGES = 1000
#: Layout of ``manifest.json``. 1: before formats were recorded (no ``format`` key; snapshot
#: records as now, caches without a format), 2: ``format`` key, caches carry ``CACHE_FORMAT``,
#: 3: ``scoring`` key (how the scoring images were chosen). Formats 1 and 2 scored snapshots on a
#: *prefix* of the test set, which on a class-sorted dataset is one class: :meth:`TeacherBank.ensure`
#: rescores them, keeping the snapshots and the old numbers (``prefix_scores``).
MANIFEST_FORMAT = 3
#: How this version chooses a bank's scoring images (recorded in the manifest as ``scoring``).
SCORING = {"subset": EVAL_SUBSET, "seed": EVAL_SEED}
#: Layout of a teacher-output cache file (``{"format", "logits", "features", "snapshot_sha256"}``).
CACHE_FORMAT = 1


class SnapshotError(UserError, RuntimeError):
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
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")  # private: two writers never share one
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

    @classmethod
    def from_key(cls, key: str) -> "TeacherSpec":
        """The spec whose :attr:`key` is ``key`` (``mnist/cnn_2-ls0.1/seed-1``): studies record
        their banks by key, and reading one back goes through :class:`TeacherBank`."""
        try:
            dataset, name, seed = key.split("/")
            arch, _, smoothing = name.partition("-ls")
            if not seed.startswith("seed-") or not dataset or not arch:
                raise ValueError
            return cls(dataset, arch, int(seed.removeprefix("seed-")), float(smoothing) if smoothing else 0.0)
        except ValueError:
            raise ValueError(f"not a teacher-bank key (dataset/arch[-lsX]/seed-N): {key!r}") from None


def bank_record(manifest: dict) -> dict:
    """What a study and a result file record of a bank: the precision it was trained in (banks from
    before precisions were recorded are fp32) and its last snapshot step."""
    return {"precision": manifest.get("precision", "fp32"), "steps": max(map(int, manifest["snapshots"]))}


class TeacherBank:
    """The snapshots of one teacher, on disk, with their manifest."""

    def __init__(self, root: str | os.PathLike, spec: TeacherSpec, eval_images: int = SNAPSHOT_EVAL_IMAGES) -> None:
        self.spec = spec
        self.eval_images = eval_images
        self.dir = Path(root).expanduser() / spec.key
        self.manifest_path = self.dir / "manifest.json"

    # -- manifest ------------------------------------------------------------------------
    def manifest(self) -> dict:
        """The manifest in the current format (an older bank's is upgraded in memory; written back
        on the next change)."""
        if not self.manifest_path.is_file():
            return {"format": MANIFEST_FORMAT, "teacher": asdict(self.spec), "snapshots": {}, "scoring": dict(SCORING)}
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise SnapshotError(f"corrupted manifest {self.manifest_path}: {error}; delete the bank directory") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("snapshots"), dict):
            raise SnapshotError(f"{self.manifest_path} is not a teacher-bank manifest; delete the bank directory")
        return _upgrade_manifest(manifest, self.manifest_path)

    @contextmanager
    def _lock(self, progress: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the bank's inter-process lock (``.bank.lock``) for the ``with`` block.

        Says so (through ``progress``) when another process holds it, e.g. is training this teacher.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.dir / ".bank.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if progress:
                progress(f"{self.spec.key}: waiting for another process that is writing this bank")
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def _write_manifest(self, manifest: dict) -> None:
        """Call with the bank's lock held (a read-modify-write must not interleave with another)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest["format"] = MANIFEST_FORMAT
        tmp = self.manifest_path.with_suffix(f".json.{os.getpid()}.tmp")
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
               progress: Callable[[str], None] | None = None, precision: str | None = None) -> list[int]:
        """Make sure every scheduled snapshot up to ``max_steps`` exists; train only what is missing.

        A bank that already reaches ``max_steps`` trains nothing; a shorter one is
        extended from its saved training state, not retrained. Teachers train on the
        whole training split (never on the validation images, whatever a student's subset).
        ``precision`` (``auto`` / ``fp32`` / ``bf16``; None: ``$LEVELED_KD_PRECISION`` or auto)
        applies to a new bank; an extended bank continues in the precision it was trained in
        (its training state records it), so extending is exact. When an explicit precision
        differs from an existing bank's, ``progress`` says so: a study asked to run in fp32 must
        not silently distil from bf16 teachers.
        """
        wanted = snapshot_steps(max_steps)
        if not wanted:
            raise ValueError(f"teacher steps must be >= 50 (the first snapshot), got {max_steps}")
        note = self.precision_note(precision or default_precision())
        if note and progress:
            progress(note)
        if set(wanted) <= set(self.steps()) and self.scored_as_now():
            return wanted
        with self._lock(progress):
            if not self.scored_as_now():  # checked again: another study may have rescored it meanwhile
                self.rescore(data, device, progress)
            have = set(self.steps())  # another study may have trained them while this one waited
            if set(wanted) <= have:
                return wanted
            self._train(data, max_steps, have, device, progress, precision)
        return wanted

    # -- scoring -------------------------------------------------------------------------
    def scoring_indices(self, data: ImageData, images: int | None = None) -> torch.Tensor:
        """Rows of ``data.test_x`` a snapshot is scored on: a seeded, stratified sample of
        ``images`` (default: the bank's ``eval_images``), never a prefix."""
        return evaluation_indices(data.test_y, images or self.eval_images)

    def scored_as_now(self) -> bool:
        """Whether every snapshot was scored on the images this version chooses (a bank from before
        ``scoring`` was recorded was scored on a prefix of the test set)."""
        manifest = self.manifest()
        return not manifest["snapshots"] or manifest.get("scoring") == SCORING

    def score(self, model: torch.nn.Module, data: ImageData, device: torch.device, precision: str,
              images: int | None = None) -> TranslationResult:
        """Clean and translated accuracy of a snapshot on its scoring images, in ``precision``."""
        rows = self.scoring_indices(data, images)
        return translation_accuracy(inference_model(model, device, precision), data.test_x[rows], data.test_y[rows],
                                    data.shifts, data.fill, device=device)

    def rescore(self, data: ImageData, device: str = "auto", progress: Callable[[str], None] | None = None) -> None:
        """Score every snapshot again on this version's scoring images (same number of images as
        before), keeping the snapshots; the old numbers stay in each record as ``prefix_scores``.
        The caller holds the bank's lock."""
        manifest = self.manifest()
        if progress:
            progress(f"teacher {self.spec.key}: rescoring {len(manifest['snapshots'])} snapshots on a stratified "
                     f"sample of the test set (they were scored on a prefix of it)")
        dev = select_device(device)
        precision = resolve_precision(manifest.get("precision", "fp32"), dev)
        for step, record in sorted(manifest["snapshots"].items(), key=lambda item: int(item[0])):
            images = int(record.get("eval_images") or self.eval_images)
            result = self.score(self.load(int(step), data, dev), data, dev, precision, images)
            if manifest.get("scoring") is None:  # the first rescore keeps what the prefix said
                record["prefix_scores"] = {"clean_acc": record["clean_acc"], "translated_acc": record["translated_acc"]}
            record.update(clean_acc=result.clean_acc, translated_acc=result.translated_acc, eval_images=images)
        manifest["scoring"] = dict(SCORING)
        self._write_manifest(manifest)

    def precision_note(self, asked: str) -> str | None:
        """A line saying that this existing bank was trained in another precision than ``asked``
        (``fp32`` / ``bf16``; ``auto`` asks for nothing), or None."""
        if asked == "auto" or not self.manifest_path.is_file():
            return None
        trained_in = self.manifest().get("precision", "fp32")
        if trained_in == asked:
            return None
        return (f"teacher {self.spec.key}: the bank was trained in {trained_in} and keeps it (a bank continues in "
                f"the precision it was started in), although {asked} was asked for")

    def _train(self, data: ImageData, max_steps: int, have: set[int], device: str,
               progress: Callable[[str], None] | None, precision: str | None = None) -> None:
        """Train (or extend) the bank to ``max_steps``; the caller holds the bank's lock."""
        manifest = self.manifest()
        spec = self.spec
        seed_everything(spec.seed)
        model = build_model(spec.arch, data.input_shape, data.num_classes)
        loss = LeveledKDLoss(LeveledKDConfig(alpha=1.0, label_smoothing=spec.label_smoothing))
        rows = self.scoring_indices(data)
        eval_x, eval_y = data.test_x[rows], data.test_y[rows]
        shifts = data.shifts
        manifest["scoring"] = dict(SCORING)  # ensure() rescored any older snapshots before this

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
            TrainConfig(epochs=10**9, max_steps=max_steps, seed=spec.seed, device=device,
                        **({"precision": precision} if precision else {})),
            callbacks=[AtSteps(is_snapshot_step, save_snapshot)],
        )
        if have:
            state = self._checked_load(self.dir / "train-state.pt", manifest.get("train_state_sha256"))
            trainer.load_state_dict(state)
        manifest["precision"] = trainer.precision  # what the snapshots were trained and scored in
        trainer.fit()

    # -- evaluation on a study's test images ---------------------------------------------
    def evaluation_path(self, step: int, rows: torch.Tensor, split: str = "test") -> Path:
        """``step-<step>.eval[-val]-<images>-<snapshot sha256>.npz``: named by the split, the images and
        the snapshot's hash, so a replaced snapshot is never answered by an older evaluation."""
        kind = "eval" if split == "test" else f"eval-{split}"
        return self.dir / f"step-{step:06d}.{kind}-{self._indices_tag(rows)}-{self.record(step)['sha256'][:12]}.npz"

    def evaluation(self, step: int, data: ImageData, rows: torch.Tensor, device: str = "auto",
                   split: str = "test") -> PerImage:
        """Which of the ``split`` images ``rows`` (rows of ``data.test_x``, or of ``data.train_x`` for
        ``val``) the snapshot classifies correctly under every shift of the grid, by the evaluator and in
        the precision that score students: the teacher's side of a transfer ratio
        (:mod:`study.analysis.transfer`; on validation, the transfer objective), on exactly the images
        its students are scored on. Computed once per (snapshot, images) and cached beside the snapshot."""
        if split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val', got {split!r}")
        path = self.evaluation_path(step, rows, split)
        if not path.is_file():
            with self._lock():  # one process evaluates; the others wait and read its file
                if not path.is_file():
                    dev = select_device(device)
                    precision = resolve_precision(self.manifest().get("precision", "fp32"), dev)
                    model = inference_model(self.load(step, data, dev), dev, precision)
                    x, y = (data.test_x, data.test_y) if split == "test" else (data.train_x, data.train_y)
                    result = translation_accuracy(model, x[rows], y[rows], data.shifts, data.fill, device=dev,
                                                  keep_per_image=True)
                    save_predictions(path, {split: result.per_image(rows)})
        return load_predictions(path)[split]

    # -- teacher-output cache ------------------------------------------------------------
    @staticmethod
    def _indices_tag(indices: torch.Tensor | None) -> str:
        if indices is None:
            return "all"
        return hashlib.sha256(indices.to(torch.int64).numpy().tobytes()).hexdigest()[:12]

    @classmethod
    def _cache_tag(cls, indices: torch.Tensor | None, views: ViewSet | None = None) -> str:
        """The manifest's name of a cache: its training indices and, for view caches, the view set."""
        tag = cls._indices_tag(indices)
        return tag if views is None else f"{tag}-{views.tag}"

    def _cache_path(self, step: int, tag: str) -> Path:
        return self.dir / (f"step-{step:06d}.outputs.pt" if tag == "all" else f"step-{step:06d}.outputs-{tag}.pt")

    def outputs_path(self, step: int, indices: torch.Tensor | None = None, views: ViewSet | None = None) -> Path:
        return self._cache_path(step, self._cache_tag(indices, views))

    def outputs(self, step: int, data: ImageData, indices: torch.Tensor | None = None, device: str = "auto",
                batch_size: int = 512, precision: str | None = None,
                views: ViewSet | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features) of the snapshot on ``data.train_x[indices]`` (default: every
        training image), computed once, cached beside the snapshot and hash-checked.

        A study over a training subset caches just that subset (seconds, not minutes, on a CPU).
        A new cache is computed in ``precision`` (None: the bank's training precision; the
        cache records it); an existing cache is reused whatever precision computed it.

        With ``views``, the outputs on each image's ``K`` fixed views ([N, K, C] and [N, K, F]),
        in the order of ``views.draw(N, ...)``: ``K`` times the size of the plain cache and ``K``
        teacher passes to compute, once per (snapshot, view set, indices).
        """
        cached = self._cache(step, self._cache_tag(indices, views), {"views": views.describe() if views else None},
                             lambda: self._compute_outputs(step, data, indices, device, batch_size, precision, views))
        return cached["logits"], cached["features"]

    def directional(self, step: int, data: ImageData, indices: torch.Tensor | None, directions: DirectionSet,
                    device: str = "auto", batch_size: int = 256) -> torch.Tensor:
        """The snapshot's derivatives of its logits along each training image's ``K`` fixed directions
        (Jacobian matching), [N, K, classes], in the order of ``directions.draw(N, ...)``: computed
        once with forward-mode AD in fp32 (exact: a derivative in bf16 would be mostly rounding),
        cached beside the snapshot under the bank's lock, hash-checked. Costs ``K`` forward-mode
        teacher passes (about 2-3 forward passes each) and ``K x [N, classes]`` floats."""
        tag = f"{self._indices_tag(indices)}-{directions.tag}"
        cached = self._cache(step, tag, {"directions": directions.describe()},
                             lambda: self._compute_directional(step, data, indices, directions, device, batch_size))
        return cached["jvp"]

    def _cache(self, step: int, tag: str, identity: dict, compute: Callable[[], dict]) -> dict:
        """The snapshot's cache ``tag``: read if it exists, matches the manifest's hash, the snapshot, the
        current cache format and ``identity`` (what defines it: a view set, a direction set); else
        computed once under the bank's lock (the other processes wait and read it), saved and recorded."""
        cached = self._read_cache(step, tag, identity)
        if cached is None:
            with self._lock():
                cached = self._read_cache(step, tag, identity)
                if cached is None:
                    cached = {"format": CACHE_FORMAT, "snapshot_sha256": self.record(step)["sha256"], **identity,
                              **compute()}
                    digest = _atomic_save(cached, self._cache_path(step, tag))
                    manifest = self.manifest()
                    manifest["snapshots"][str(step)].setdefault("outputs", {})[tag] = digest
                    self._write_manifest(manifest)
        return cached

    def _read_cache(self, step: int, tag: str, identity: dict) -> dict | None:
        record = self.record(step)
        path = self._cache_path(step, tag)
        expected = record.get("outputs", {}).get(tag)
        if path.is_file() and expected:
            cached = self._checked_load(path, expected)
            if cached.get("snapshot_sha256") == record["sha256"] and cached.get("format") == CACHE_FORMAT and \
                    all(cached.get(key) == value for key, value in identity.items()):
                return cached
        return None

    def _compute_outputs(self, step: int, data: ImageData, indices: torch.Tensor | None, device: str,
                         batch_size: int, precision: str | None = None, views: ViewSet | None = None) -> dict:
        """Run the snapshot once (``K`` times with views): its logits, features and the precision it ran in."""
        images = data.train_x if indices is None else data.train_x[indices]
        dev = select_device(device)
        precision = resolve_precision(precision or self.manifest().get("precision", "fp32"), dev)
        model = inference_model(self.load(step, data, dev), dev, precision)
        if views is not None:
            params = views.draw(len(images), tuple(images.shape[1:]))
            source, fill = images.to(dev), data.fill.to(dev)
            shared = {name: value.to(dev) for name, value in params.shared.items()}
        logits, features = [], []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                rows = slice(start, start + batch_size)
                x = images[rows].to(dev)
                if views is None:
                    out = model(x)
                    logits.append(out.logits.float().cpu())
                    features.append(out.features.float().cpu())
                    continue
                per_view = []
                for k in range(views.k):
                    per = {name: value.to(dev) for name, value in params.of(rows, k).items()}
                    per_view.append(model(views.build(x, per, shared, source, fill)))
                logits.append(torch.stack([o.logits.float().cpu() for o in per_view], dim=1))
                features.append(torch.stack([o.features.float().cpu() for o in per_view], dim=1))
        return {"logits": torch.cat(logits), "features": torch.cat(features), "precision": precision}

    def _compute_directional(self, step: int, data: ImageData, indices: torch.Tensor | None,
                             directions: DirectionSet, device: str, batch_size: int) -> dict:
        """The snapshot's logits' derivatives along each image's directions (forward-mode AD, fp32)."""
        images = data.train_x if indices is None else data.train_x[indices]
        dev = select_device(device)
        model = self.load(step, data, dev).eval()
        index, bank = directions.draw(len(images), tuple(images.shape[1:]))
        bank = bank.to(dev)

        def logits_of(x: torch.Tensor) -> torch.Tensor:
            return model(x)[0]

        parts = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = images[start:start + batch_size].to(dev)
                per_k = [torch.func.jvp(logits_of, (x,), (bank[index[start:start + batch_size, k].to(dev)],))[1]
                         for k in range(directions.k)]
                parts.append(torch.stack(per_k, dim=1).float().cpu())
        return {"jvp": torch.cat(parts), "precision": "fp32"}


def _upgrade_manifest(manifest: dict, path: Path) -> dict:
    """``manifest`` in the current format, or :class:`SnapshotError` if it cannot be read safely.

    Format 1 (no ``format`` key) has today's snapshot records, so its snapshots are kept and the
    bank is extended, not retrained; its caches predate the cache format and are forgotten, so
    they are recomputed on first use rather than trusted.
    """
    version = manifest.get("format", 1)
    if not isinstance(version, int) or version < 1:
        raise SnapshotError(f"{path}: unknown manifest format {version!r}; delete the bank directory to rebuild it")
    if version > MANIFEST_FORMAT:
        raise SnapshotError(f"{path} was written by a newer leveled-kd (bank format {version}, this one reads "
                            f"up to {MANIFEST_FORMAT}); update, or use another --bank-dir")
    if version == 1:
        for record in manifest["snapshots"].values():
            record.pop("outputs", None)
    manifest["format"] = MANIFEST_FORMAT
    return manifest


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
