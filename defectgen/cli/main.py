"""The ``defectgen`` command line. Each subcommand is a thin layer over a Python function.

    defectgen demo --out DIR
    defectgen train --config configs/neu64.yaml --data DATA --shots 10 --out RUN [--stage both] [--resume latest]
    defectgen sample --run RUN --num 100 --out SYN [--switch 0.4] [--sampler ddpm|ddim|dpmsolver++] [--steps S]
    defectgen data --data DATA                      (what the readers find: layout, classes, good images)
    defectgen inspect --config configs/neu64.yaml
    defectgen evaluate / mix / ablate / copypaste / metrics / filter / compare   (see --help of each)

Every handler returns an exit code. A user error (a ``DefectgenError``: a bad flag or config value,
bad data, a damaged run folder; or what the system refuses: a full disk, a permission, a missing
file) is one line on stderr, ``defectgen: error: ...``, and exit code 2. Anything else is a bug:
it keeps its traceback and exits with code 1.
"""
from __future__ import annotations

import argparse
import logging
import sys

from defectgen import logs
from defectgen.cli import compare, evaluation, generator, quality
from defectgen.cli.common import Parser, error_line
from defectgen.errors import DefectgenError
from defectgen.io import USER_ERRNOS


def build_parser() -> Parser:
    parser = Parser(prog="defectgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (generator, evaluation, quality, compare):
        module.add_parsers(sub)
    return parser


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is the user's to fix (one line, exit 2) rather than a bug (a traceback)."""
    from PIL import Image

    if isinstance(err, (DefectgenError, Image.DecompressionBombError)):
        return True
    return isinstance(err, OSError) and (isinstance(err, FileNotFoundError) or err.errno in USER_ERRNOS)


def _setup(args: argparse.Namespace) -> None:
    import torch
    from diffusers.utils import logging as diffusers_logging

    from defectgen.timing import set_cpu_threads

    set_cpu_threads()
    verbose = getattr(args, "verbose", False)
    logs.configure(logging.DEBUG if verbose else logging.INFO)
    if verbose:
        diffusers_logging.set_verbosity_info()
    if getattr(args, "quiet", False):
        diffusers_logging.disable_progress_bar()  # "Loading pipeline components..."
    torch.backends.cuda.matmul.allow_tf32 = True  # GPU speed; no effect on CPU
    torch.backends.cudnn.allow_tf32 = True


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (0 done, 2 a user error, reported in one line)."""
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(argv) if argv is not None else sys.argv[1:]  # recorded in each output's report
        _setup(args)
        return int(args.func(args))
    except Exception as err:
        if not is_user_error(err):
            raise
        print(error_line(err), file=sys.stderr)
        return 2
