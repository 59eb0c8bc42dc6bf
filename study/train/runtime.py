"""Process-level speed settings: numeric precision, CPU threads and the C allocator.

Why each exists (numbers measured on this project's 2-core machines; commands in
benchmarks/teacher_speed.py and benchmarks/student_step.py):

- **Precision.** Convolutions under ``torch.autocast("cpu", dtype=torch.bfloat16)``
  run on oneDNN's bf16 kernels, which are fast only where the CPU has native bf16
  instructions (``avx512_bf16`` or AMX ``amx_bf16``); elsewhere they are emulated
  and slower than fp32. So ``auto`` means bf16 on CUDA GPUs that support it and on
  CPUs with those flags, fp32 otherwise; ``fp32`` / ``bf16`` force either.
- **Allocator.** glibc's malloc serves large blocks (above a *dynamic* threshold
  that tops out at 32 MiB) with a fresh ``mmap`` and unmaps them on free, and
  trims the heap top back to the OS. A CNN step frees and re-allocates the same
  10-200 MiB activation buffers every iteration, so every step page-faults them
  in again, zero-filled by the kernel: that is *system* time (a snapshot's
  33-shift evaluation spent more system than user time). Raising the mmap and trim
  thresholds keeps those pages in the process and the faults disappear.
- **Threads.** A Ray task or Tune trial that asks for N CPUs should run N torch
  threads: more threads than cores (several workers, each defaulting to every
  core) makes OpenMP threads wait on each other, fewer leaves cores idle.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import os
import sys
from typing import ContextManager

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")
#: Blocks below this come from the heap (reused), not from a fresh mmap per allocation.
MMAP_THRESHOLD = 1 << 30
#: Free memory at the heap's top is kept up to this much instead of being returned to the OS.
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt() parameter numbers


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 dot-product instructions (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


#: Set by ``run_study.py --precision`` / ``python -m study.distill --precision``; worker processes
#: (Ray tasks and trials on this machine) inherit it, so teachers and students follow one flag.
PRECISION_ENV = "LEVELED_KD_PRECISION"


def default_precision() -> str:
    """``$LEVELED_KD_PRECISION`` if set, else ``auto``."""
    precision = os.environ.get(PRECISION_ENV, "auto")
    if precision not in PRECISIONS:
        raise ValueError(f"${PRECISION_ENV} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` / ``fp32`` / ``bf16`` -> the precision actually used (``fp32`` or ``bf16``) on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast_context(device: torch.device | str, precision: str) -> ContextManager:
    """bf16 autocast on ``device`` when ``precision`` resolves to bf16, else a no-op context.

    Parameters stay fp32 (autocast casts per op), so optimizer updates, checkpoints
    and BatchNorm statistics are fp32 either way.
    """
    device = torch.device(device)
    if resolve_precision(precision, device) != "bf16":
        return contextlib.nullcontext()
    # cache_enabled=False: the cast weights must not outlive the step (CUDA graph capture requires it,
    # and on CPU the cache saves nothing for one forward per step)
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


class Autocast(nn.Module):
    """Runs ``module`` under :func:`autocast_context`, whatever context the caller sets.

    For inference code that is not precision-aware (it may even disable autocast
    around the call): wrap the model, and its forward still runs in ``precision``.
    ``train()`` / ``eval()`` reach the wrapped module as usual.
    """

    def __init__(self, module: nn.Module, device: torch.device | str, precision: str) -> None:
        super().__init__()
        self.module = module
        self.device_type = torch.device(device).type
        self.precision = resolve_precision(precision, device)

    def forward(self, *args, **kwargs):
        with autocast_context(self.device_type, self.precision):
            return self.module(*args, **kwargs)


def inference_model(model: nn.Module, device: torch.device | str, precision: str) -> nn.Module:
    """``model`` as evaluation and teacher-output caches should run it: wrapped in bf16 autocast
    when ``precision`` resolves to bf16, in the model's preferred memory format (see
    :func:`apply_memory_format`)."""
    apply_memory_format(model)
    return Autocast(model, device, precision) if resolve_precision(precision, device) == "bf16" else model


def apply_memory_format(model: nn.Module) -> nn.Module:
    """Convert ``model`` to its declared ``memory_format`` (ConvNets: channels_last), in place.

    oneDNN's convolutions run channels_last natively; NCHW weights make every
    convolution reorder its input and output.
    """
    fmt = getattr(model, "memory_format", None)
    if fmt is not None:
        model.to(memory_format=fmt)
    return model


def tune_allocator() -> bool:
    """Keep large freed blocks in the process (glibc only; idempotent). Returns whether it applied.

    ``LEVELED_KD_MALLOC_TUNING=0`` switches it off (to measure the difference).
    """
    if os.environ.get("LEVELED_KD_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    return _apply_mallopt()


@functools.lru_cache(maxsize=None)
def _apply_mallopt() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def set_cpu_threads(cpus: float | None) -> int:
    """Use ``floor(cpus)`` torch threads (at least 1), the CPUs a Ray task or trial was given;
    ``None`` leaves torch's default. Returns the thread count now in effect."""
    if cpus is not None:
        threads = max(1, math.floor(cpus))
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return torch.get_num_threads()
