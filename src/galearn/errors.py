"""Exceptions and warnings raised by galearn.

Every error caused by user input subclasses :class:`GalearnInputError`, which
the command line turns into a one-line message and exit status 2. They also
subclass the matching builtin, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "GalearnError",
    "GalearnInputError",
    "MissingInputError",
    "BadValueError",
    "NoOverlapError",
    "EmptySelectionError",
    "WeightsNotFoundError",
    "MissingDependencyError",
    "WorkspaceBusyError",
    "StaleInputError",
    "Interrupted",
    "EmptySelectionWarning",
]


class GalearnError(Exception):
    """Base class of all galearn errors."""


class GalearnInputError(GalearnError):
    """Bad user input: a file, row, column or option. Exit status 2 on the CLI."""


class MissingInputError(GalearnInputError, FileNotFoundError):
    """A file or workspace product that a stage needs does not exist."""


class BadValueError(GalearnInputError, ValueError):
    """An option or a value in an input file is not acceptable."""


class NoOverlapError(BadValueError):
    """A position does not fall on an image (cf. ``astropy.nddata.NoOverlapError``)."""


class EmptySelectionError(BadValueError):
    """A selection (cuts, labels, files) kept nothing."""


class WeightsNotFoundError(GalearnInputError, FileNotFoundError):
    """Pre-trained weights are neither cached, downloadable nor given as a file."""


class MissingDependencyError(GalearnInputError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class WorkspaceBusyError(GalearnInputError, BlockingIOError):
    """Another process is writing the same workspace output (its lock file names it)."""


class StaleInputError(BadValueError):
    """A workspace product was made from other inputs than the current ones; the message names the
    command that refreshes it."""


class Interrupted(KeyboardInterrupt):
    """A stage stopped on SIGINT / SIGTERM after saving its state (the message says how to resume).

    ``exit_code`` is 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class EmptySelectionWarning(UserWarning):
    """A recoverable selection left fewer rows than expected."""
