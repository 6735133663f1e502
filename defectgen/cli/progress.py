"""The evaluation commands' progress lines: the library logs them (``logging.getLogger(__name__)`` under
``defectgen``), the command shows them.

Until logging is configured for the whole command line, ``evaluate``, ``ablate``, ``compare``,
``metrics`` and ``filter`` show their library's INFO lines as plain lines on the stream they always
used; once any handler is configured (by the command line, or by a program that calls ``main``),
that configuration decides and this adds nothing.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator, TextIO


@contextmanager
def shown(stream: TextIO | None = None) -> Iterator[None]:
    """Show ``defectgen``'s INFO lines as plain lines on ``stream`` (default stdout) while the block runs."""
    lib = logging.getLogger("defectgen")
    if lib.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = lib.level
    lib.addHandler(handler)
    lib.setLevel(logging.INFO)
    try:
        yield
    finally:
        lib.removeHandler(handler)
        lib.setLevel(level)
