"""Logging: the library logs through ``logging.getLogger(__name__)``; the command line calls ``configure``.

Configured, every record is one line on stderr, ``[defectgen] ...`` (``[data] ...`` from the data
readers), the lines the command line has always shown. Used as a library, defectgen configures
nothing: its warnings reach stderr through Python's last-resort handler, its progress lines stay silent
unless the caller sets up logging (``logging.basicConfig(level=logging.INFO)`` or ``configure()``).
"""
from __future__ import annotations

import logging
import sys

ROOT = "defectgen"


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a redirected or captured stream too)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: ANN201  (a text stream)
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001  StreamHandler sets it; sys.stderr is read instead
        pass


class _Tagged(logging.Formatter):
    """``[data] message`` for records of ``defectgen.data``, ``[defectgen] message`` for the rest."""

    def format(self, record: logging.LogRecord) -> str:
        tag = "data" if record.name == f"{ROOT}.data" or record.name.startswith(f"{ROOT}.data.") else ROOT
        return f"[{tag}] {record.getMessage()}"


def configure(level: int = logging.INFO) -> None:
    """Show defectgen's records of ``level`` and above on stderr, one line each (calling it again only sets the level)."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(_Tagged())
        logger.addHandler(handler)


def configured_level() -> int | None:
    """The level ``configure`` set, or None when it was not called (what a worker process should repeat)."""
    logger = logging.getLogger(ROOT)
    return logger.level if any(isinstance(h, _Stderr) for h in logger.handlers) else None
