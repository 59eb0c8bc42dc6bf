"""Shared command-line plumbing: one-line errors instead of traceback walls."""
from __future__ import annotations

import sys
from typing import Callable

from .data import DataNotFoundError
from .teachers import SnapshotError

#: Errors a user can cause (bad flag values, missing data, corrupted banks): reported in one line.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, DataNotFoundError, SnapshotError,
                                                FileNotFoundError, PermissionError, ConnectionError)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call ``main``; a user error prints ``error: <message>`` and returns 2; Ctrl-C returns 130."""
    try:
        return main(argv)
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; results logged so far are kept", file=sys.stderr)
        return 130
