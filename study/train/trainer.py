"""The one training loop of the project: teachers, students, tests and every Tune trial use it.

Design choices and why:
- Data are in-memory tensors (features, labels and any per-sample targets such
  as cached teacher outputs) sliced by a seeded permutation per epoch, so a
  step costs a gather, never per-sample Python, and the teacher is never run
  inside a student's loop: its outputs arrive as just more sliced tensors.
- The permutation of epoch ``e`` is a function of (seed, e), and the dropout
  RNG is part of the checkpoint, so a run resumed from a checkpoint (a restored
  or retried Tune trial, an extended teacher bank) continues exactly.
- Device is chosen automatically. ``precision`` (``auto`` / ``fp32`` / ``bf16``)
  decides whether the forward pass runs under bfloat16 autocast (no loss scaling
  needed): ``auto`` is bf16 on CUDA and on CPUs with native bf16 instructions,
  where a CNN_1 step costs half the CPU time of the old fp32 step
  (benchmarks/teacher_speed.py; study/train/runtime.py says how it is detected). cuDNN autotuning is on for CUDA. On CPU runs are seeded and
  deterministic in either precision, and a checkpoint records its precision so a
  resumed run continues in the precision it started with.
- Speed settings that are free: fused AdamW (one pass over the parameters instead
  of a dozen elementwise kernels), models' preferred memory format (ConvNets run
  channels_last), glibc's allocator told to keep activation buffers
  (:func:`study.train.runtime.tune_allocator`: without it a CNN step's system time is
  page faults), and on CUDA an optional CUDA-graph step (``step_mode="graphs"``,
  study/train/cuda_graphs.py) because a student step there is launch-bound.
- Callbacks (``on_step`` after every optimizer step, ``on_epoch_end``) are how
  snapshots, Tune reports and checkpoints hook in without copying the loop.
- A ``batch_transform`` (study/train/transforms.py) is how a scheme changes what a
  step sees (views of the images, the teacher snapshot of the epoch) without a
  branch in the loop: it gets each sliced batch, the epoch and a generator seeded
  by (seed, step), so its random choices are the same when a run is resumed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import nn

from losses import LeveledKDLoss
from models import ModelOutput

from study.train.cuda_graphs import GraphedStep, Tensors
from study.train.data import Shift
from study.train.evaluation import TranslationResult, translation_accuracy
from study.train.runtime import (PRECISIONS, apply_memory_format, autocast_context, default_precision, inference_model,
                      resolve_precision, tune_allocator)
from study.train.transforms import BatchTransform

__all__ = ["LR_SCHEDULES", "PRECISIONS", "STEP_MODES", "AtSteps", "Callback", "EveryEpoch", "TrainConfig", "Trainer",
           "autocast_context", "inference_model", "resolve_precision", "seed_everything", "select_device"]

#: ``constant``: the learning rate throughout; ``cosine``: annealed from ``lr`` to 0 over the run's
#: total steps (``epochs x steps per epoch``, or ``max_steps``), the "patient" schedule of Beyer et al.
LR_SCHEDULES = ("constant", "cosine")
#: ``eager``: plain PyTorch; ``graphs``: the whole step (forward, backward, AdamW) replayed as one
#: CUDA graph (CUDA only, full batches; study/train/cuda_graphs.py); ``auto``: eager (graphs is opt-in
#: until benchmarks/gpu_check.py has validated it on the GPU in use).
STEP_MODES = ("auto", "eager", "graphs")


@dataclass
class TrainConfig:
    """Optimization settings shared by teachers and students (the study's defaults)."""

    epochs: int = 5
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-3
    seed: int = 0
    device: str = "auto"
    #: ``auto`` (bf16 where the hardware runs it natively), ``fp32`` or ``bf16``: see study/train/runtime.py;
    #: the default is ``$LEVELED_KD_PRECISION`` (what ``--precision`` sets) or ``auto``
    precision: str = field(default_factory=default_precision)
    #: ``auto`` / ``eager`` / ``graphs`` (CUDA graphs for the whole step): see :data:`STEP_MODES`
    step_mode: str = "auto"
    #: ``constant`` or ``cosine`` (over the run's total steps; its state is in the checkpoint): :data:`LR_SCHEDULES`
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.epochs < 1 and self.max_steps is None:
            raise ValueError("epochs must be >= 1")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.step_mode not in STEP_MODES:
            raise ValueError(f"step_mode must be one of {', '.join(STEP_MODES)}, got {self.step_mode!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.step_mode == "graphs" and self.lr_schedule != "constant":
            raise ValueError("step_mode 'graphs' needs lr_schedule 'constant' (a captured step keeps its learning rate)")
        if self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("batch_size >= 1, lr > 0 and weight_decay >= 0 are required")


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an explicit ``cuda`` without a GPU is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available")
    return device


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators; call before building a model so its init is seeded."""
    torch.manual_seed(seed)


class Callback(Protocol):
    def on_step(self, trainer: "Trainer") -> None: ...
    def on_epoch_end(self, trainer: "Trainer") -> None: ...


class EveryEpoch:
    """Adapter: call ``fn(trainer)`` at the end of every epoch."""

    def __init__(self, fn: Callable[["Trainer"], None]) -> None:
        self.fn = fn

    def on_step(self, trainer: "Trainer") -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer") -> None:
        self.fn(trainer)


class AtSteps:
    """Adapter: call ``fn(trainer)`` after the optimizer steps for which ``when(step)`` holds."""

    def __init__(self, when: Callable[[int], bool], fn: Callable[["Trainer"], None]) -> None:
        self.when, self.fn = when, fn

    def on_step(self, trainer: "Trainer") -> None:
        if self.when(trainer.step):
            self.fn(trainer)

    def on_epoch_end(self, trainer: "Trainer") -> None:
        pass


def _take(value: "torch.Tensor | list[torch.Tensor]", index: torch.Tensor):
    return [v[index] for v in value] if isinstance(value, list) else value[index]


def _to(value: "torch.Tensor | list[torch.Tensor]", device: torch.device):
    return [v.to(device) for v in value] if isinstance(value, list) else value.to(device)


@dataclass
class Trainer:
    """Fits ``model`` to ``tensors`` (keys ``x``, ``y`` and optional ``teacher_logits`` /
    ``teacher_features`` lists, all indexed by sample) under ``loss``.

    ``loss``'s own parameters (feature-matching projectors) are optimized too. With a
    ``batch_transform``, every sliced batch goes through it first (``tensors`` may then hold
    per-sample inputs of the transform, e.g. view parameters, which it consumes).
    """

    model: nn.Module
    loss: LeveledKDLoss
    tensors: Tensors
    config: TrainConfig = field(default_factory=TrainConfig)
    callbacks: Sequence[Callback] = ()
    batch_transform: BatchTransform | None = None

    step: int = field(init=False, default=0)
    last_losses: dict[str, float] = field(init=False, default_factory=dict)
    should_stop: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        seed_everything(self.config.seed)  # dropout stream; the model's init is the caller's (seed_everything)
        self.device = select_device(self.config.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        else:
            tune_allocator()
        self.precision = resolve_precision(self.config.precision, self.device)
        apply_memory_format(self.model)
        self.model.to(self.device)
        self.loss.to(self.device)
        self.tensors = {k: _to(v, self.device) for k, v in self.tensors.items()}
        if self.batch_transform is not None:
            self.batch_transform = self.batch_transform.to(self.device)
        self.num_samples = len(self.tensors["x"])
        if self.num_samples == 0:
            raise ValueError("cannot train on an empty dataset")
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self._graph_step = None  # built on first use in graphs mode (study/train/cuda_graphs.py)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        """AdamW, fused (one kernel over all parameters) where this torch supports it on the device.

        Fused and the default (foreach) implementation compute the same update up to
        floating-point rounding; a CUDA-graph step also needs ``capturable`` (step counters on the GPU).
        """
        params = list(self.model.parameters()) + list(self.loss.parameters())
        options: dict[str, Any] = {"lr": self.config.lr, "weight_decay": self.config.weight_decay, "fused": True}
        if self.uses_graphs:
            options["capturable"] = True
        try:
            return torch.optim.AdamW(params, **options)
        except (RuntimeError, TypeError):  # an old torch or an unsupported device: the default implementation
            options.pop("fused")
            return torch.optim.AdamW(params, **options)

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler | None:
        """Cosine annealing to 0 over :attr:`total_steps`, stepped after every optimizer step; None for constant."""
        if self.config.lr_schedule == "constant":
            return None
        return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, self.total_steps))

    @property
    def uses_graphs(self) -> bool:
        return self.config.step_mode == "graphs" and self.device.type == "cuda"

    # -- progress -------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_samples / self.config.batch_size)

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self.step // self.steps_per_epoch

    @property
    def total_steps(self) -> int:
        by_epochs = self.config.epochs * self.steps_per_epoch
        return min(by_epochs, self.config.max_steps) if self.config.max_steps else by_epochs

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator).to(self.device)

    def step_generator(self) -> torch.Generator:
        """The batch transform's generator for the coming step: a function of (seed, step) only."""
        return torch.Generator().manual_seed((self.config.seed * 2**32 + self.step) % 2**63)

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> "Trainer":
        """Train until ``epochs`` (or ``max_steps``) are done, resuming from ``self.step``."""
        self.model.train()
        while self.step < self.total_steps and not self.should_stop:
            epoch = self.epoch
            order = self._permutation(epoch)
            sums: dict[str, torch.Tensor] = {}
            first = self.step - epoch * self.steps_per_epoch
            for b in range(first, self.steps_per_epoch):
                index = order[b * self.config.batch_size:(b + 1) * self.config.batch_size]
                batch = {k: _take(v, index) for k, v in self.tensors.items()}
                if self.batch_transform is not None:
                    batch = self.batch_transform(batch, epoch, self.step_generator())
                parts = self.train_step(batch)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0) + v
                for callback in self.callbacks:
                    callback.on_step(self)
                if self.step >= self.total_steps or self.should_stop:
                    break
            done = self.step - epoch * self.steps_per_epoch - first
            self.last_losses = {k: float(v) / max(1, done) for k, v in sums.items()}
            if self.step % self.steps_per_epoch == 0:
                for callback in self.callbacks:
                    callback.on_epoch_end(self)
        return self

    def train_step(self, batch: Tensors) -> dict[str, torch.Tensor]:
        """One optimizer step on ``batch``; returns the loss parts (detached)."""
        if self.uses_graphs and len(batch["x"]) == self.config.batch_size and "direction" not in batch:
            if self._graph_step is None:
                self._graph_step = GraphedStep(self)
            parts = self._graph_step(batch)
        else:
            parts = self.eager_step(batch)
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        return parts

    def eager_step(self, batch: Tensors) -> dict[str, torch.Tensor]:
        """Forward, backward and AdamW update, without advancing :attr:`step`.

        With ``batch["direction"]`` (Jacobian matching, study/train/directions.py), the forward pass
        carries each sample's direction as a forward-mode tangent: one pass gives the logits and their
        derivative along the direction, with the same dropout mask, and both are differentiable."""
        jvp: dict[str, torch.Tensor] = {}
        with autocast_context(self.device, self.precision):
            if "direction" in batch:
                import torch.autograd.forward_ad as fwAD

                with fwAD.dual_level():
                    dual = self.model(fwAD.make_dual(batch["x"], batch["direction"]))
                    logits, jvp["student_jvp"] = fwAD.unpack_dual(dual[0])
                    output = ModelOutput(logits, fwAD.unpack_dual(dual[1]).primal)
                jvp["teacher_jvp"] = batch["teacher_jvp"]
            else:
                output = self.model(batch["x"])
        parts = self.loss(output, batch["y"], batch.get("teacher_logits", ()), batch.get("teacher_features", ()),
                          soft_targets=batch.get("y_soft"), **jvp)
        self.optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        self.optimizer.step()
        return {k: v.detach() for k, v in parts.items()}

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, shifts: Sequence[Shift],
                 fill: torch.Tensor | float = 0.0) -> TranslationResult:
        """Clean and translated accuracy, in the run's precision (bf16 autocast when it trains in bf16)."""
        model = inference_model(self.model, self.device, self.precision)
        return translation_accuracy(model, images, labels, shifts, fill, device=self.device)

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, projector, optimizer, learning-rate
        schedule, step, RNG."""
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "step": self.step,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "precision": self.precision,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output, in the precision the checkpoint was written in
        (a run that started in bf16 stays bf16, so resuming is exact; older checkpoints have none)."""
        self.precision = state.get("precision", "fp32" if self.device.type == "cpu" else self.precision)
        self._graph_step = None  # the optimizer's state tensors are replaced: capture again
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            if state.get("scheduler") is None:
                raise ValueError("the checkpoint has no learning-rate schedule state; it was not trained with "
                                 f"lr_schedule {self.config.lr_schedule!r}")
            self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
