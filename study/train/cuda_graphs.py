"""The trainer's whole step as one CUDA graph: ``TrainConfig(step_mode="graphs")`` on CUDA.

Why: an MLP student step on a GPU is launch-bound (an H100 epoch of 422 steps
took 1.07 s, ~2.5 ms a step, for ~3 GFLOP of matmuls: the GPU waits for Python to
launch a hundred small kernels). Replaying a captured graph launches them all at
once. Why not ``torch.compile(mode="reduce-overhead")``: it does the same replay
but compiles first, and its compile time (tens of seconds) is longer than a whole
trial's training at the study's budgets.

How (PyTorch's "whole network capture" recipe): a few eager steps on a side
stream warm up cuBLAS/cuDNN and the allocator, then forward + loss + backward +
AdamW (``capturable=True``, step counters on the GPU) are captured once into
static input buffers; each later step copies its batch into those buffers and
replays. Gradients live in the graph's private memory and are overwritten, not
accumulated, by every replay. Dropout stays random: the default CUDA generator is
registered with the graph and advances its offset on each replay. The warm-up
steps are real training steps. A batch of another size (an epoch's last, partial
batch) runs eagerly on the same parameters and optimizer state; loading a
checkpoint replaces the optimizer's state tensors, so the trainer drops the graph
and captures again.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from study.train.runtime import autocast_context

#: A batch as the trainer slices it: named tensors (a list of tensors for per-teacher outputs).
Tensors = dict[str, "torch.Tensor | list[torch.Tensor]"]


class Steppable(Protocol):
    """What a graphed step needs of its trainer (:class:`study.train.trainer.Trainer` is one).

    A protocol, not an import of the trainer: the trainer builds a :class:`GraphedStep`, so
    importing it back would tie the two modules into a cycle."""

    device: torch.device
    precision: str
    model: nn.Module
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    eager_step: Callable[[Tensors], dict[str, torch.Tensor]]

WARMUP_STEPS = 3


def _clone(value: "torch.Tensor | list[torch.Tensor]"):
    return [v.clone() for v in value] if isinstance(value, list) else value.clone()


def _copy(dst: "torch.Tensor | list[torch.Tensor]", src: "torch.Tensor | list[torch.Tensor]") -> None:
    if isinstance(dst, list):
        for d, s in zip(dst, src):
            d.copy_(s, non_blocking=True)
    else:
        dst.copy_(src, non_blocking=True)


class GraphedStep:
    """Callable like :meth:`Trainer.eager_step` (full-size batches only); captures on first use."""

    def __init__(self, trainer: Steppable) -> None:
        if trainer.device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        self.trainer = trainer
        for group in trainer.optimizer.param_groups:  # step counters on the GPU, updated inside the graph
            group["capturable"] = True
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict = {}
        self.keys: list[str] = []
        self.packed: torch.Tensor | None = None
        self.warm = 0
        self.side = torch.cuda.Stream(trainer.device)

    def __call__(self, batch: "Tensors") -> dict[str, torch.Tensor]:
        if self.graph is None and self.warm < WARMUP_STEPS:
            return self._warm_up(batch)
        if self.graph is None:
            self._capture(batch)
        for key, value in batch.items():
            _copy(self.static[key], value)
        self.graph.replay()
        parts = self.packed.clone()  # the next replay overwrites the graph's outputs
        return {k: parts[i] for i, k in enumerate(self.keys)}

    def _warm_up(self, batch: "Tensors") -> dict[str, torch.Tensor]:
        current = torch.cuda.current_stream(self.trainer.device)
        self.side.wait_stream(current)
        with torch.cuda.stream(self.side):
            parts = self.trainer.eager_step(batch)
        current.wait_stream(self.side)
        self.warm += 1
        return parts

    def _capture(self, batch: "Tensors") -> None:
        t = self.trainer
        self.static = {k: _clone(v) for k, v in batch.items()}
        t.optimizer.zero_grad(set_to_none=True)  # backward in the graph then writes fresh gradients
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            with autocast_context(t.device, t.precision):
                output = t.model(self.static["x"])
            parts = t.loss(output, self.static["y"], self.static.get("teacher_logits", ()),
                           self.static.get("teacher_features", ()), soft_targets=self.static.get("y_soft"))
            parts["total"].backward()
            t.optimizer.step()
            self.keys = list(parts)
            self.packed = torch.stack([parts[k].detach().float() for k in self.keys])
        self.graph = graph
