"""What every subcommand shares: the parser class, the flags spelled once, the error line, the closing lines."""
from __future__ import annotations

import argparse
import inspect
import math
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

from defectgen.errors import ConfigError, OutputExistsError, OutputWriteError, UsageError
from defectgen.data.formats import FORMATS
from defectgen.data.selection import SelectionConfig
from defectgen.io import atomic_write_json, write_error
from defectgen.timing import Timer


class Parser(argparse.ArgumentParser):
    """argparse, except that a bad command line raises ``UsageError`` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def finite(text: str) -> float:
    """argparse type of a float flag: a finite number (``inf``/``nan`` are refused where they are read)."""
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"invalid float value: '{text}'") from err
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got '{text}'")
    return value


def seed(text: str) -> int:
    """argparse type of a seed flag: a non-negative integer, the one rule of every command and config."""
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"invalid int value: '{text}'") from err
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed must not be negative, got {value}")
    return value


OVERWRITE_HELP = "discard what --out holds and start again (without it an unfinished run of this command resumes " \
                 "and anything else is refused)"


def error_line(err: BaseException) -> str:
    """The one line a user sees for an error of theirs or of their files and disks."""
    if isinstance(err, OSError) and err.errno is not None and \
            not isinstance(err, (OutputWriteError, OutputExistsError, FileNotFoundError)):
        err = write_error(err, Path(err.filename or "output"))  # a system call refused: a disk, a permission
    text = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
    return f"defectgen: error: {text}"


def add_set(p: argparse.ArgumentParser, what: str, example: str) -> None:
    """``--set KEY=VALUE``: the one way to override a key of the command's config."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a key of {what} (repeatable), e.g. --set {example}")


def add_out(p: argparse.ArgumentParser, what: str = "output folder") -> None:
    p.add_argument("--out", type=Path, required=True, help=what)
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def add_device(p: argparse.ArgumentParser, default: str = "cuda when available, else cpu") -> None:
    p.add_argument("--device", default=None, help=f"cpu, cuda or cuda:N (default: {default})")


def device(args: argparse.Namespace) -> str | None:
    """``--device`` checked by the one resolver (a typo or a missing GPU fails before any work); None if not given."""
    from defectgen.device import resolve_device

    return None if args.device is None else str(resolve_device(args.device))


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug lines too, and diffusers' own notes")


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: OMP_NUM_THREADS if set, else half the cores)")


def apply_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)


def positive(args: argparse.Namespace, *flags: str, least: int = 1, most: int | None = None) -> None:
    """Refuse integer flags below ``least`` or above ``most`` (None: not given, left to the config)."""
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value < least:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least {least}, got {value}")
        if value is not None and most is not None and value > most:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at most {most}, got {value}")


def add_selection_args(parser: argparse.ArgumentParser, data_flag: str = "--data") -> None:
    """The options of ``SelectionConfig``: every command that reads real data uses these."""
    g = parser.add_argument_group("real data selection")
    g.add_argument(data_flag, dest="data", type=Path, default=None, help="data folder (or --images DIR --masks DIR)")
    g.add_argument("--format", choices=FORMATS, default=None, help="data layout (auto-detected by default)")
    g.add_argument("--images", type=Path, default=None, help="image folder of an image/mask folder pair (with --masks)")
    g.add_argument("--masks", type=Path, default=None, help="mask folder matching --images by file stem")
    g.add_argument("--good", type=Path, default=None, help="folder of defect-free images (never a class, never a shot)")
    g.add_argument("--threshold", type=int, default=None,
                   help="binary masks: pixels above this are defect (default 127 for 8-bit, 0 for 0/1 masks)")
    g.add_argument("--mask-suffix", default=None,
                   help="mask file suffix of binary-per-class and side-by-side data, e.g. _mask, _label, _GT")
    g.add_argument("--split", default=None, help="restrict to a split file's stems, e.g. train")
    g.add_argument("--shots", type=int, default=None, help="K images per defect class")
    g.add_argument("--seed", type=seed, default=0, help="seed of the few-shot selection")
    g.add_argument("--list", dest="list_file", type=Path, default=None, help="file of exact stems to use")
    parser.set_defaults(data_flag=data_flag)


def selection(args: argparse.Namespace) -> SelectionConfig:
    """The ``SelectionConfig`` the flags name; no data at all is refused naming the flag."""
    if args.data is None and args.images is None:
        raise ConfigError(f"no data given: pass {args.data_flag} DIR, or --images DIR --masks DIR")
    text = lambda v: None if v is None else str(v)  # noqa: E731
    return SelectionConfig(data=text(args.data), format=args.format, mask_suffix=args.mask_suffix,
                           images=text(args.images), masks=text(args.masks), good=text(args.good),
                           threshold=args.threshold, split=args.split, shots=args.shots, seed=args.seed,
                           list_file=text(args.list_file))


def report(out: Path, title: str, args: argparse.Namespace) -> Path:
    """Record this command line in ``out`` and rewrite ``out/report.html``."""
    from defectgen.report_html import update_report

    return update_report(out, title, getattr(args, "argv", None))


def finish(out: Path, timer: Timer, title: str, args: argparse.Namespace, prefix: str = "") -> None:
    """``timing.json``, ``report.html`` and the closing lines of a command writing into ``out``."""
    atomic_write_json(out / "timing.json", timer.to_dict())
    print(f"{prefix}report: {report(out, title, args).resolve()}")
    print(timer.line())


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def command(sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int],
            data_flag: str | None = None, **parser_options: Any) -> argparse.ArgumentParser:
    """A subcommand: its parser, the selection flags when it reads real data (``data_flag``), and its handler
    (whose docstring, if it has one, is the command's ``--help`` description)."""
    if func.__doc__:
        parser_options.setdefault("description", inspect.cleandoc(func.__doc__))
    p = sub.add_parser(name, **parser_options)
    if data_flag is not None:
        add_selection_args(p, data_flag)
    p.set_defaults(func=func)
    return p
