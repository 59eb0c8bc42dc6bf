"""Pretrained teachers: banks whose snapshots are the user's weights, imported instead of trained.

Why a bank: everything after stage 1 reads teacher banks (snapshot scores, output caches, the
teachers' evaluation on the students' test images, transfer ratios, MLflow teacher runs). A
teacher trained elsewhere becomes one by *importing* its weights: each snapshot is loaded into its
architecture, saved as the bank's ``step-<step>.pt`` with its sha256, and scored by the study's
evaluator, so the rest of the study cannot tell it from a bank it trained. Nothing is trained.

A pretrained teacher has a name (what ``teachers:`` says) and one of three sources:

- ``checkpoint: FILE``: one state dict, loaded into ``arch`` (a registered model); snapshot ``step``
  (default 1);
- ``snapshots: {STEP: FILE, ...}``: an ordered series of state dicts (the teacher's training steps),
  which ``teacher_step`` sweeps like a trained bank's (``bank``, ``weak``, ``strong``, a step);
- ``model_uri: URI``: an MLflow model (``models:/name/3``, ``models:/name@alias``, ``runs:/ID/model``),
  loaded with ``mlflow.pytorch.load_model`` (from ``tracking_uri``, default the current one); its
  own module is the architecture unless ``arch`` is given. A series may also name URIs.

The bank records each snapshot's source and the source's digest; a source that changed (a file
replaced, an alias moved) is imported again on the next ``ensure``. The teacher sees the study's
normalized images (the dataset's ``mean``/``std``): a checkpoint trained with another
normalization or another class order scores near chance, which :meth:`PretrainedBank.ensure` says.
"""
from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from models import build_model, register_model
from models.registry import model_names, unregister_model

from study.errors import UserError
from study.teachers.bank import SCORING, SnapshotError, TeacherBank, TeacherSpec, _atomic_save, sha256
from study.train.data import ImageData
from study.train.trainer import resolve_precision, select_device

#: The keys of a ``pretrained:`` entry in a space file.
OPTIONS = ("arch", "checkpoint", "snapshots", "model_uri", "step", "tracking_uri", "features")
#: A checkpoint file may hold the state dict under one of these keys (training scripts' habits).
STATE_KEYS = ("state_dict", "model_state_dict", "model")


#: MLflow models loaded in this process, by (tracking URI, model URI): a teacher is built many times.
_MLFLOW_MODULES: dict[tuple[str | None, str], torch.nn.Module] = {}


class PretrainedError(UserError, ValueError):
    """A pretrained teacher's entry, source or weights are unusable; the message says which and why."""


def is_uri(source: str) -> bool:
    return source.startswith(("models:/", "runs:/", "mlflow-artifacts:/"))


@dataclass(frozen=True)
class PretrainedTeacher:
    """A teacher trained elsewhere: its name in runs, its architecture and its snapshots (step, source)."""

    name: str
    arch: str | None
    snapshots: tuple[tuple[int, str], ...]
    tracking_uri: str | None = None
    #: for an MLflow model that returns logits only: the layer whose input is its feature vector
    features: str | None = None

    @property
    def steps(self) -> list[int]:
        return [step for step, _ in self.snapshots]

    @property
    def kind(self) -> str:
        if any(is_uri(src) for _, src in self.snapshots):
            return "mlflow"
        return "checkpoint" if len(self.snapshots) == 1 else "series"

    def register(self) -> "PretrainedTeacher":
        """Register this teacher (:func:`register_pretrained`) unless it already is, as is."""
        return self if _PRETRAINED.get(self.name) == self else register_pretrained(self)

    def describe(self) -> str:
        first = self.snapshots[0][1]
        more = f" (+{len(self.snapshots) - 1} more)" if len(self.snapshots) > 1 else ""
        return f"{self.kind}: {first}{more}, steps {', '.join(map(str, self.steps))}, arch {self.arch or 'its own'}"

    # -- sources -----------------------------------------------------------------------------
    def mlflow_module(self, uri: str) -> torch.nn.Module:
        """The module MLflow logged at ``uri`` (loaded once per process), on the CPU."""
        key = (self.tracking_uri, uri)
        if key not in _MLFLOW_MODULES:
            import mlflow
            import mlflow.pytorch

            from study.tracking.logged_models import tracking_uri_for_a_moment

            previous = mlflow.get_tracking_uri()
            try:
                with tracking_uri_for_a_moment(self.tracking_uri or None):
                    _MLFLOW_MODULES[key] = mlflow.pytorch.load_model(uri, map_location="cpu")
            except Exception as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise PretrainedError(f"pretrained teacher {self.name!r}: cannot load MLflow model {uri} from "
                                      f"{self.tracking_uri or previous}: {first}") from None
        return _MLFLOW_MODULES[key]

    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> torch.nn.Module:
        """The architecture the snapshots load into: ``arch`` built for the dataset, or the MLflow model."""
        if self.arch:
            return build_model(self.arch, input_shape, num_classes)
        from models.adapters import as_model_output

        module = copy.deepcopy(self.mlflow_module(self.snapshots[0][1]))
        probe = module.eval()(torch.zeros(1, *input_shape))
        if isinstance(probe, torch.Tensor):
            module = as_model_output(module, self.features)
        return module

    def state(self, source: str) -> dict[str, torch.Tensor]:
        """The weights of one snapshot source, as a state dict on the CPU."""
        if is_uri(source):
            return {k: v.detach().clone() for k, v in self.mlflow_module(source).state_dict().items()}
        return load_state_dict(Path(source), self.name)

    def check(self, data: ImageData) -> None:
        """What the study's driver checks before anything is created: every source is there, and the
        last snapshot loads into the architecture built for ``data`` (one line if not)."""
        for _, src in self.snapshots:
            if not is_uri(src) and not Path(src).is_file():
                raise PretrainedError(f"pretrained teacher {self.name!r}: checkpoint {src} does not exist")
        step, src = self.snapshots[-1]
        where = f"{data.name} ({'x'.join(map(str, data.input_shape))}, {data.num_classes} classes)"
        fit_state(self.build(data.input_shape, data.num_classes), self.state(src), self.name, src, where,
                  data.num_classes)

    def digest(self, source: str) -> str:
        """What identifies a source's content: a file's sha256, an MLflow model's weights' digest."""
        if is_uri(source):
            return state_digest(self.state(source))
        path = Path(source)
        if not path.is_file():
            raise PretrainedError(f"pretrained teacher {self.name!r}: checkpoint {path} does not exist")
        return sha256(path)


def load_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    """A checkpoint file's state dict (or the one under ``state_dict``/``model_state_dict``/``model``),
    loaded safely (``weights_only=True``), a ``module.`` prefix (DataParallel) removed."""
    if not path.is_file():
        raise PretrainedError(f"pretrained teacher {name!r}: checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise PretrainedError(f"pretrained teacher {name!r}: {path} is not a state dict torch loads safely "
                              f"(weights_only=True): {first[:160]}; save model.state_dict() instead") from None
    if isinstance(state, Mapping):
        for key in STATE_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedError(f"pretrained teacher {name!r}: {path} holds a {type(state).__name__}, not a state "
                              f"dict of tensors; save model.state_dict()")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{list(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def fit_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], teacher: str, source: str,
              where: str, num_classes: int = -1) -> None:
    """Load ``state`` into ``model`` strictly, or say in one line which keys or shapes do not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}" for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    heads = [k for k in expected if k in state and state[k].dim() and expected[k].dim() and
             expected[k].shape[0] == num_classes != state[k].shape[0] and state[k].shape[1:] == expected[k].shape[1:]]
    if heads and not missing and not unexpected and len(heads) == len(shapes):
        raise PretrainedError(f"pretrained teacher {teacher!r}: {source} was trained for {state[heads[0]].shape[0]} "
                              f"classes ({heads[0]}), but {where.split(' (')[0]} has {num_classes}; give it the "
                              f"dataset it was trained on, or a checkpoint trained on these classes (sorted folder "
                              f"names)")
    if missing or unexpected or shapes:
        parts = [f"{label} {items[:3]}{' ...' if len(items) > 3 else ''}" for label, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shapes (checkpoint vs model)", shapes))
                 if items]
        raise PretrainedError(f"pretrained teacher {teacher!r}: {source} does not fit its architecture built for "
                              f"{where}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- registry

_PRETRAINED: dict[str, PretrainedTeacher] = {}


def register_pretrained(teacher: PretrainedTeacher) -> PretrainedTeacher:
    """Make ``teacher.name`` a teacher model (built as its architecture) and remember its snapshots.
    Registering it again (a worker, a second load of the space) replaces the earlier entry."""
    if teacher.name not in _PRETRAINED and teacher.name in model_names():
        raise PretrainedError(f"pretrained teacher {teacher.name!r} has the name of a registered model; give it "
                              f"another name (its architecture goes in arch:)")
    if teacher.arch and teacher.arch not in model_names():
        raise PretrainedError(f"pretrained teacher {teacher.name!r}: unknown arch {teacher.arch!r}; registered "
                              f"models: {', '.join(model_names())} (register yours in a module named by imports:)")
    unregister_model(teacher.name)

    def build(input_shape: tuple[int, int, int], num_classes: int) -> torch.nn.Module:
        return teacher.build(input_shape, num_classes)

    build.__module__, build.__qualname__ = __name__, f"pretrained:{teacher.name}"
    register_model(teacher.name, roles=("teacher",))(build)
    _PRETRAINED[teacher.name] = teacher
    return teacher


def pretrained_teacher(name: str) -> PretrainedTeacher | None:
    return _PRETRAINED.get(name)


def pretrained_names() -> list[str]:
    return sorted(_PRETRAINED)


def parse_pretrained(name: str, raw: Any, base: str | os.PathLike | None = None) -> PretrainedTeacher:
    """One entry of a space's ``pretrained:`` section; file paths are relative to ``base`` (the space
    file's folder)."""
    if not isinstance(raw, Mapping):
        raise PretrainedError(f"pretrained teacher {name!r} must be a mapping with checkpoint:, snapshots: or "
                              f"model_uri:")
    unknown = sorted(set(raw) - set(OPTIONS))
    if unknown:
        raise PretrainedError(f"pretrained teacher {name!r} has unknown option(s) {unknown}; valid: "
                              f"{', '.join(OPTIONS)}")
    sources = [k for k in ("checkpoint", "snapshots", "model_uri") if k in raw]
    if len(sources) != 1:
        raise PretrainedError(f"pretrained teacher {name!r} needs exactly one of checkpoint:, snapshots: or "
                              f"model_uri:, got {sources or 'none'}")

    def source(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise PretrainedError(f"pretrained teacher {name!r}: a source must be a file path or an MLflow URI, "
                                  f"got {value!r}")
        if is_uri(value):
            return value
        path = Path(value).expanduser()
        return str((path if path.is_absolute() else Path(base or ".") / path).resolve())

    step = raw.get("step", 1)
    if sources[0] == "snapshots":
        if "step" in raw:
            raise PretrainedError(f"pretrained teacher {name!r}: snapshots: names its steps; step: is for one "
                                  f"checkpoint: or model_uri:")
        series = raw["snapshots"]
        if not isinstance(series, Mapping) or not series:
            raise PretrainedError(f"pretrained teacher {name!r}: snapshots: must map steps to files, e.g. "
                                  f"{{500: ckpt/step-500.pt, 2500: ckpt/step-2500.pt}}")
        snapshots = []
        for key, value in series.items():
            if isinstance(key, bool) or not isinstance(key, int) or key < 1:
                raise PretrainedError(f"pretrained teacher {name!r}: snapshot step {key!r} is not a positive "
                                      f"integer")
            snapshots.append((key, source(value)))
        snapshots.sort()
    else:
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise PretrainedError(f"pretrained teacher {name!r}: step must be a positive integer, got {step!r}")
        snapshots = [(step, source(raw[sources[0]]))]
    arch = raw.get("arch")
    if arch is None and sources[0] != "model_uri" and not all(is_uri(s) for _, s in snapshots):
        raise PretrainedError(f"pretrained teacher {name!r} needs arch: (the registered model its weights load "
                              f"into)")
    if arch is not None and not isinstance(arch, str):
        raise PretrainedError(f"pretrained teacher {name!r}: arch must be a model name, got {arch!r}")
    if sources[0] == "model_uri" and not is_uri(snapshots[0][1]):
        raise PretrainedError(f"pretrained teacher {name!r}: model_uri {raw['model_uri']!r} is not an MLflow model "
                              f"URI (models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH)")
    return PretrainedTeacher(name, arch, tuple(snapshots), raw.get("tracking_uri"), raw.get("features"))


# ----------------------------------------------------------------------------- the bank

class PretrainedBank(TeacherBank):
    """A teacher bank whose snapshots are imported from a :class:`PretrainedTeacher`'s sources."""

    def __init__(self, root: str | os.PathLike, spec: TeacherSpec, teacher: PretrainedTeacher,
                 eval_images: int | None = None) -> None:
        super().__init__(root, spec, **({"eval_images": eval_images} if eval_images else {}))
        self.teacher = teacher

    def check_owner(self) -> dict:
        """The manifest, unless the folder holds a bank the study trained (same name): never overwritten."""
        manifest = self.manifest()
        if manifest["snapshots"] and "pretrained" not in manifest:
            raise PretrainedError(f"pretrained teacher {self.teacher.name!r}: {self.dir} holds a bank the study "
                                  f"trained; give the pretrained teacher another name or use another --bank-dir")
        return manifest

    def ensure(self, data: ImageData, max_steps: int | None = None, device: str = "auto",
               progress: Callable[[str], None] | None = None, precision: str | None = None) -> list[int]:
        """Import every snapshot whose source is new or changed, score it, and drop snapshots the
        series no longer has. ``max_steps`` and ``precision`` are ignored: nothing is trained, and the
        snapshots are scored and cached in fp32 (how they were trained is not known)."""
        teacher = self.teacher
        with self._lock(progress):
            manifest = self.check_owner()
            dev = select_device(device)
            precision = resolve_precision("fp32", dev)
            where = f"{data.name} ({'x'.join(map(str, data.input_shape))}, {data.num_classes} classes)"
            wanted = {str(step): src for step, src in teacher.snapshots}
            dropped = [s for s in manifest["snapshots"] if s not in wanted]
            for step in dropped:
                manifest["snapshots"].pop(step)
            changed = bool(dropped)
            for step, src in teacher.snapshots:
                digest = teacher.digest(src)
                record = manifest["snapshots"].get(str(step), {})
                if record.get("source") == src and record.get("source_digest") == digest and \
                        self.snapshot_path(step).is_file() and manifest.get("scoring") == SCORING:
                    continue
                model = teacher.build(data.input_shape, data.num_classes)
                fit_state(model, teacher.state(src), teacher.name, src, where, data.num_classes)
                path = self.snapshot_path(step)
                checksum = _atomic_save(model.state_dict(), path)
                result = self.score(model, data, dev, precision)
                manifest["snapshots"][str(step)] = {
                    "file": path.name, "sha256": checksum, "clean_acc": result.clean_acc,
                    "translated_acc": result.translated_acc, "eval_images": min(self.eval_images, len(data.test_y)),
                    "source": src, "source_digest": digest}
                changed = True
                if progress:
                    progress(f"pretrained teacher {self.spec.key} step {step} imported from {src}: clean "
                             f"{result.clean_acc:.4f} translated {result.translated_acc:.4f}")
                if result.clean_acc < 1.5 / max(2, data.num_classes) and progress:
                    progress(f"pretrained teacher {teacher.name!r} step {step} scores near chance on {data.name} "
                             f"(clean {result.clean_acc:.3f}): was it trained on this dataset, with its class order "
                             f"(sorted folder names) and its normalization (mean {[round(m, 4) for m in data.mean]}, "
                             f"std {[round(s, 4) for s in data.std]})?")
            manifest.update(pretrained={"name": teacher.name, "kind": teacher.kind, "arch": teacher.arch},
                            precision="fp32", scoring=dict(SCORING))
            if changed or not self.manifest_path.is_file():
                self._write_manifest(manifest)
        return teacher.steps


def bank_for(root: str | os.PathLike, spec: TeacherSpec, eval_images: int | None = None) -> TeacherBank:
    """The bank of ``spec``: a :class:`PretrainedBank` when its architecture is a registered pretrained
    teacher, else a bank the study trains."""
    teacher = pretrained_teacher(spec.arch)
    if teacher is not None:
        if spec.seed != 0 or spec.label_smoothing:
            raise SnapshotError(f"pretrained teacher {spec.arch!r} has one bank (teacher_seed 0, no "
                                f"teacher_label_smoothing), not {spec.key}")
        return PretrainedBank(root, spec, teacher, eval_images)
    return TeacherBank(root, spec, **({"eval_images": eval_images} if eval_images else {}))
