"""The one kind of error a user sees: a message on one line, exit code 2 (the CLI prints it, never a traceback)."""

from __future__ import annotations


class L2LError(Exception):
    """A user-facing error: what is wrong and how to fix it, in one line."""


class WriteError(L2LError):
    """A file could not be written (disk full, permission lost): every file finished before it is still whole."""


def one_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type's name)."""
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return lines[0] if lines else type(e).__name__
