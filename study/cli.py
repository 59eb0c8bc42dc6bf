"""Shared command-line plumbing: a user's mistake is one line; a bug keeps its traceback.

Only :class:`study.errors.UserError` (and its subclasses: bad flags, space files, missing data,
corrupted banks, unreachable servers) is reported as ``error: <message>`` with exit code 2, like
argparse's own errors. Anything else is a bug in leveled-kd, not the user's input: it keeps its
full traceback, plus a line saying so, and exits 1. (Catching every ``ValueError``/``KeyError``
here used to turn programming errors into misleading one-line "user errors".)
"""
from __future__ import annotations

import sys
import traceback
from typing import Callable

from .errors import UserError

ISSUES_HINT = ("this is a bug in leveled-kd, not in your input: please report it with the command line "
               "and the traceback above")


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
    except Exception:
        traceback.print_exc()
        print(f"internal error: {ISSUES_HINT}", file=sys.stderr, flush=True)
        return 1
