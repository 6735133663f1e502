"""The ``defectgen`` command line: one parser tree, one error convention (see ``defectgen.cli.main``)."""
from defectgen.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
