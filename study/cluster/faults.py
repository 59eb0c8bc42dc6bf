"""Test-only fault injection, for ``benchmarks/faults.py`` and the tests: off unless an env var asks.

``LEVELED_KD_FAULT_RAISE_ONCE=<marker file>[@<epoch>]`` makes the first trial that reaches
``<epoch>`` (default 2) raise once, just before it reports that epoch; the marker file, created
atomically (``O_EXCL``), makes it once per study, whichever process or node gets there first. Tune
then retries the trial from its last checkpoint (``--max-failures``), which is what the fault
suite measures. Why an env var: Ray's trial processes inherit the driver's environment, and
nothing about it reaches configs, checkpoints or MLflow.
"""
from __future__ import annotations

import os

ENV = "LEVELED_KD_FAULT_RAISE_ONCE"


class InjectedFault(RuntimeError):
    """The fault ``LEVELED_KD_FAULT_RAISE_ONCE`` asked for (never raised otherwise)."""


def raise_once_if_asked(epoch: int) -> None:
    """Raise :class:`InjectedFault` once per marker file at the configured epoch; no-op by default."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    marker, _, at = spec.rpartition("@") if "@" in spec else (spec, "", "")
    if epoch != int(at or 2):
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    raise InjectedFault(f"fault injected by {ENV} at epoch {epoch}")
