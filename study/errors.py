"""The project's one error type for mistakes a *user* can make (flags, files, servers, data),
and how a command line reports it: a user's mistake is one line; a bug keeps its traceback.

Why a base class: the command lines (``run_study.py``, ``python -m study.distill``) print a
``UserError`` as one line and exit 2, and *only* a ``UserError``; any other exception is a bug
in the project and keeps its traceback. Catching ``ValueError``/``KeyError`` wholesale used to
turn programming errors into misleading one-line "user errors".

Subclasses keep their historical bases too (``SpaceError`` is still a ``ValueError``,
``TrackingError`` a ``ConnectionError``...), so code that catches those keeps working.

:func:`run_cli` is that rule for every command line: a ``UserError`` prints ``error: <message>``
and exits 2, like argparse's own errors; anything else keeps its full traceback, plus a line
saying it is a bug, and exits 1.
"""
from __future__ import annotations

import socket
import sys
import traceback
from typing import Callable

ISSUES_HINT = ("this is a bug in leveled-kd, not in your input: please report it with the command line "
               "and the traceback above")


class UserError(Exception):
    """Something the user can fix; the message says what and how (one line, no traceback)."""


class InputError(UserError, ValueError):
    """A command-line value is invalid (out of range, inconsistent with another flag, ...)."""


class SpaceError(UserError, ValueError):
    """A space file (any of its sections, the user's own parts included), a ``--set`` override or a
    range is invalid; the message says which and why. Here, not in :mod:`study.search.space`, so the
    module that reads a space's plug-in sections raises it too, without importing the space module."""


def check_device(preference: str) -> None:
    """Fail up front, in one line, for a ``--device`` this machine cannot provide.

    Why here and not in the trainer: the trainer raises a plain ``RuntimeError`` deep inside a
    run (a traceback, and after data loading); the command lines call this before any work.
    """
    import torch

    if preference == "auto":
        return
    try:
        device = torch.device(preference)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {preference!r} is not a device; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: this machine has no CUDA GPU (use --device auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {preference}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif device.type not in ("cpu", "mps"):
        raise InputError(f"--device {preference!r}: unsupported device type; use auto, cpu or cuda[:N]")


def check_reachable(host: str, port: int, what: str, timeout: float = 3.0) -> None:
    """A short TCP connect: an address nobody answers on fails in seconds, before a client
    library (Ray, MLflow) retries for a minute and prints its own logs."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserError(f"{what} {host}:{port} does not answer ({reason}); is it running and reachable?") from None


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (a Ray task error carries its cause's message)."""
    cause = getattr(error, "cause", None)  # ray.exceptions.RayTaskError wrapping a UserError
    text = str(cause if isinstance(cause, UserError) else error).strip() or type(error).__name__
    return " ".join(text.split())


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call ``main``: a user error prints ``error: <message>`` and returns 2; Ctrl-C returns 130;
    any other exception prints its traceback and a hint to report it, and returns 1."""
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted; results logged so far are kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): not an error of ours, nothing left to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except Exception:
        traceback.print_exc()
        print(f"internal error: {ISSUES_HINT}", file=sys.stderr, flush=True)
        return 1
