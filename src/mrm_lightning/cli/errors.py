"""How every ``mrm`` command fails: one line ``mrm: error: ...`` on stderr, exit status 2.

The library raises exceptions whose messages are written for users (:class:`RecordError`
naming the file, line and field; ``ValueError`` raised in this package, such as a setting
checked or a file refused; :class:`UsageError` from a config); :func:`user_error_line` finds
that message in whatever the command raised and :func:`fail` prints it. ``--debug`` (anywhere on
the command line) or ``MRM_DEBUG=1`` shows the traceback instead. Any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from pathlib import Path
from typing import NoReturn

DEBUG_FLAG, DEBUG_ENV = "--debug", "MRM_DEBUG"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def debug_mode() -> bool:
    """Tracebacks instead of one-line errors: ``MRM_DEBUG=1`` (which ``--debug`` sets)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def fail(message: str) -> NoReturn:
    """End with ``mrm: error: MESSAGE`` on one line of stderr, exit status 2.

    The SystemExit's text is the message too, for callers in Python that catch it.
    """
    line = one_line(message)
    print(f"mrm: error: {line}", file=sys.stderr)
    stop = SystemExit(line)
    stop.code = 2  # what the interpreter exits with; it prints nothing more for an int
    raise stop


def one_line(message: str) -> str:
    """A possibly multi-line message on one line; jsonargparse's ``Parser key "k":`` as
    ``setting 'k':``."""
    text = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return re.sub(r'Parser key "([^"]+)":', r"setting '\1':", text)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with ``mrm``'s errors: the usage line, then one ``mrm: error:`` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        fail(message)


def user_error_line(error: BaseException) -> str | None:
    """The one line for a mistake in the input or the settings found in ``error`` or the
    exceptions it wraps (``__cause__``, ``__context__``); None for anything else, a bug."""
    from ..data.records import RecordError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, FileNotFoundError) and current.filename is not None:
            return f"{current.filename}: no such file"
        if isinstance(current, OSError) and current.filename is not None:
            return f"{current.filename}: {current.strerror or current}"
        if isinstance(current, RecordError) or (
            isinstance(current, ValueError) and raised_in_package(current)
        ):
            return one_line(str(current))
        current = current.__cause__ or current.__context__
    return None


def raised_in_package(error: BaseException) -> bool:
    """Whether ``error`` was raised by this package's code (a message written for users)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR)
