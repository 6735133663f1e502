"""Every error a user can cause, under one base: ``DefectgenError``.

The command line reports a ``DefectgenError`` as one line, ``defectgen: error: ...``, with exit code
2; anything else is a bug and keeps its traceback (exit code 1). Each class also derives from the
built-in exception it refines (``ValueError``, ``OSError`` ...), so ``except ValueError`` still
catches a ``ConfigError``. This module imports nothing of defectgen: every other module may raise these.
"""
from __future__ import annotations


class DefectgenError(Exception):
    """A mistake in the user's flags, configs, files or disk: said in one line, never a traceback."""


class ConfigError(DefectgenError, ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


class UsageError(DefectgenError, ValueError):
    """A flag argparse refuses (unknown, missing, not a number): reported like any other user error."""


class DataError(DefectgenError, ValueError):
    """Bad input data: the message names the file and the problem."""


class RunError(DefectgenError, RuntimeError):
    """The run folder does not fit the request (different config or data, or would be overwritten)."""


class CheckpointError(DefectgenError, ValueError):
    """A checkpoint folder holds something a checkpoint must not (a pickle, a stray file), or none can be read."""


class DivergedError(DefectgenError, ValueError):
    """The training loss became NaN or infinite: nothing learnt from that step on is worth saving."""


class OutputExistsError(DefectgenError, FileExistsError):
    """Refusing to overwrite an existing, non-empty output."""


class OutputWriteError(DefectgenError, OSError):
    """Writing an output failed for a reason outside the program: full disk, no permission."""

    def __str__(self) -> str:
        return str(self.strerror)
