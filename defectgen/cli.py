"""The ``defectgen`` command line. Each subcommand is a thin layer over a Python function.

    defectgen demo --out DIR
    defectgen train --config configs/neu64.yaml --data DATA --shots 10 --out RUN [--stage both] [--resume latest]
    defectgen sample --run RUN --num 100 --out SYN [--switch 0.4] [--sampler ddpm|ddim|dpmsolver++] [--steps S]
    defectgen data --data DATA                      (what the readers find: layout, classes, good images)
    defectgen inspect --config configs/neu64.yaml
    defectgen evaluate / ablate / copypaste / metrics / compare   (see --help of each)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from defectgen.config import ConfigError, load_config
from defectgen.data import add_selection_args, select_records, selection_from_args
from defectgen.device import resolve_device
from defectgen.generator_config import STAGES, GeneratorConfig, SampleConfig
from defectgen.io import OutputExistsError, OutputWriteError, write_error
from defectgen.schedule import SAMPLERS
from defectgen.run import RunError


def _config(args: argparse.Namespace) -> GeneratorConfig:
    return load_config(GeneratorConfig, args.config, args.set)


def cmd_train(args: argparse.Namespace) -> None:
    from defectgen.distributed import process_state
    from defectgen.io import atomic_write_json
    from defectgen.run import selection_info, train_generator
    from defectgen.timing import Timer

    cfg = _config(args)
    _threads(args)
    ds, records = selection_from_args(args)
    sel = selection_info(ds, records, split=args.split, shots=args.shots, seed=args.seed,
                         list=str(args.list_file) if args.list_file else None)
    stages = STAGES if args.stage == "both" else (args.stage,)
    if args.resume not in (None, "latest"):
        raise ConfigError(f"--resume takes 'latest', got '{args.resume}'")
    main_process = process_state().is_main_process
    if main_process:
        print(f"[defectgen] training {', '.join(stages)} on {len(records)} images from {ds.root} -> {args.out}")
    timer = Timer()
    before = {s: (args.out / s / "final" / "config.json").is_file() for s in stages}
    with timer.phase("train (2 processes)" if args.parallel else "train"):
        path = train_generator(args.out, cfg, ds, records, sel, stages, resume=args.resume == "latest",
                               progress=not args.quiet, parallel=args.parallel)
    if not main_process:
        return
    for stage in stages:
        if before[stage]:
            timer.skip(stage)  # finished earlier; train_generator kept it
        else:
            steps = cfg.train.large_steps if stage == "large" else cfg.train.small_steps
            timer.add(stage, json.loads((args.out / stage / "timing.json").read_text())["seconds"], steps=steps)
    atomic_write_json(args.out / "timing.json", timer.to_dict())
    print(f"[defectgen] generator saved to {path}")
    print(f"[defectgen] report: {_report(args.out, f'defectgen train: {args.out.name}', args).resolve()}")
    print(timer.line())


def cmd_sample(args: argparse.Namespace) -> None:
    from defectgen.distributed import process_state
    from defectgen.export import check_output, export_samples
    from defectgen.io import atomic_write_json
    from defectgen.run import load_generator, pipeline_path, run_sample_config, train_stems
    from defectgen.timing import Timer

    _threads(args)
    own = run_sample_config(args.run)  # the run's own sample: settings are the defaults
    args.sampler = args.sampler or own.sampler
    args.steps = own.steps if args.steps is None else args.steps
    args.batch_size = own.batch_size if args.batch_size is None else args.batch_size
    args.precision = args.precision or own.precision
    request = _guided_request(args)
    if request is not None and request.resample > 1 and args.sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"--resample {request.resample} repeats each step, which {args.sampler}'s step history "
                          "cannot; use --sampler ddpm or ddim")
    SampleConfig(own.switch if args.switch is None else args.switch, args.sampler, args.steps, args.batch_size,
                 args.precision).check(flags=True)
    if args.num is not None and args.num < 1:
        raise ConfigError(f"--num must be at least 1, got {args.num}")
    check_output(args.out, args.overwrite)  # before loading; an unfinished run of this command resumes
    timer = Timer()
    with timer.phase("load"):
        pipe = load_generator(args.run, resolve_device(args.device) if args.device else process_state().device)
    condition, num = None, args.num
    if request is not None:
        from defectgen.guided import build_conditions

        ref = pipe.unet if pipe.unet is not None else pipe.unet_2
        condition, num = build_conditions(request, pipeline_path(args.run).parent, pipe.class_map,
                                          ref.config.sample_size, pipe.config.image_channels, args.num, args.seed)
    if num is None:
        raise ConfigError("--num is required: how many pairs to sample")
    if num < 1:
        raise ConfigError(f"--num must be at least 1, got {num}")
    identity = {"pipeline": str(pipeline_path(args.run).resolve()), "train_stems": train_stems(pipeline_path(args.run).parent)}
    with timer.phase("sample", pairs=num):
        m = export_samples(pipe, args.out, num, seed=args.seed, switch=args.switch, sampler=args.sampler,
                           steps=args.steps, batch_size=args.batch_size, overwrite=args.overwrite, identity=identity,
                           progress=not args.quiet, condition=condition, request=request, precision=args.precision)
    if not process_state().is_main_process:
        return
    if args.layout != "defectgen":
        from defectgen.data.layouts import relayout

        relayout(args.out, args.layout)
    atomic_write_json(args.out / "timing.json", timer.to_dict())
    print(f"[defectgen] {num} pairs ({m['mode']}) in {args.out} ({args.layout} layout, {m['seconds_per_sample']:.3f} s/sample, "
          f"large t={len(m['timesteps']['large'])} steps, small t={len(m['timesteps']['small'])} steps)")
    print(f"[defectgen] report: {_report(args.out, f'defectgen sample: {args.out.name}', args).resolve()}")
    print(timer.line())


def _guided_request(args: argparse.Namespace):
    """The guided mode the flags ask for, or None for unconditional sampling."""
    from defectgen.guided import GuidedRequest

    if args.onto is not None and args.into_training:
        raise ConfigError("--onto and --into-training exclude each other: one background at a time")
    if args.masks is not None and args.mask_source not in (None, "folder"):
        raise ConfigError(f"--masks gives the masks; it cannot be combined with --mask-source {args.mask_source}")
    mode = "onto" if args.onto is not None else "into-training" if args.into_training else \
        "masks" if (args.masks is not None or args.mask_source is not None) else None
    if mode is None:
        if args.classes:
            raise ConfigError("--classes needs a guided mode (--onto, --into-training, --masks or --mask-source)")
        return None
    source = "folder" if args.masks is not None else args.mask_source or "train"
    request = GuidedRequest(mode, source, good=args.onto, masks=args.masks, pairing=args.pairing,
                            classes=args.classes, blend=args.blend, resample=args.resample)
    request.check()
    return request


def cmd_data(args: argparse.Namespace) -> None:
    from defectgen.data.selection import dataset_from_args

    ds = dataset_from_args(args, log=False)
    recs = select_records(ds, split=args.split, shots=args.shots, seed=args.seed, list_file=args.list_file)
    for line in ds.report:
        print(f"[data] {line}")
    print(f"[data] {ds.format}: {len(recs)} images selected of {len(ds.records)} defect images; "
          f"{len(ds.good)} defect-free; classes {list(ds.class_map.names)}")


def cmd_inspect(args: argparse.Namespace) -> None:
    from defectgen.models import build_unet, describe

    cfg = _config(args)
    if args.num_classes < 2:
        raise ConfigError(f"--num-classes counts background and at least one defect class, got {args.num_classes}")
    channels = cfg.image_channels + args.num_classes
    report = {name: describe(build_unet(getattr(cfg, name), channels, cfg.size), cfg.size) for name in STAGES}
    report["switch_timestep"] = cfg.sample.switch * cfg.diffusion.num_train_timesteps
    print(json.dumps(report, indent=2))


def cmd_demo(args: argparse.Namespace) -> None:
    from defectgen.demo import DemoConfig, run_demo
    from defectgen.io import ensure_empty_output

    gen_cfg = load_config(GeneratorConfig, args.config, args.set)
    demo_cfg = load_config(DemoConfig, None, args.demo_set)
    if args.num is not None:
        if args.num < 1:
            raise ConfigError(f"--num must be at least 1, got {args.num}")
        demo_cfg.num_samples = args.num
    out = ensure_empty_output(args.out, args.overwrite)
    timer = run_demo(out, gen_cfg, demo_cfg, progress=not args.quiet)
    report = _report(out, "defectgen demo", args)
    print(f"[defectgen] demo: data {out / 'data'}, generator {out / 'run/pipeline'}, pairs {out / 'samples'}, "
          f"metrics {out / 'metrics'}, evaluation {out / 'eval'}")
    print(f"[defectgen] report: {report.resolve()}")
    print(timer.line())


def _report(out: Path, title: str, args: argparse.Namespace) -> Path:
    """Record this command line in ``out`` and rewrite ``out/report.html``."""
    from defectgen.report_html import update_report

    return update_report(out, title, getattr(args, "argv", None))


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: OMP_NUM_THREADS if set, else half the cores)")


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="defectgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the two-stage generator on real pairs")
    p.add_argument("--config", type=Path, default=None)
    add_selection_args(p)
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--stage", choices=("large", "small", "both"), default="both")
    p.add_argument("--resume", default=None, help="'latest': continue from the newest checkpoint")
    p.add_argument("--parallel", action="store_true",
                   help="train the two stages at once in two processes (each with half the cores)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    _add_common(p)
    _add_threads(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample new image + mask pairs from a trained generator")
    p.add_argument("--run", type=Path, required=True, help="run folder or pipeline folder")
    p.add_argument("--num", type=int, default=None, help="number of pairs")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--switch", type=float, default=None, help="fraction of the schedule (0.4 = t 400 of 1000)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="default: the run's sample.sampler; dpmsolver++ (DPM-Solver++, 2nd order) is good in 20-25 steps")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's sample.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's sample.batch_size")
    p.add_argument("--device", default=None,
                   help="default: this process's GPU (cuda:LOCAL_RANK under torchrun), else the CPU")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                   help="bf16: UNets in bf16 (CUDA only); default: the run's sample.precision")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (an unfinished run with the same arguments resumes without it)")
    g = p.add_argument_group("guided sampling (defects onto real surfaces, images for given masks)")
    g.add_argument("--onto", type=Path, default=None, metavar="GOOD_DIR",
                   help="paint defects onto these good (defect-free) images; outside the defect they stay as they are")
    g.add_argument("--into-training", action="store_true",
                   help="paint new defects into the generator's own training images, keeping their defects and labels")
    g.add_argument("--masks", type=Path, default=None, metavar="MASK_DIR",
                   help="class-id masks to use (alone: generate an image for each mask)")
    g.add_argument("--mask-source", choices=("train", "model"), default=None,
                   help="masks from the training pairs (random flip/turn/shift) or chosen by the model (default: train)")
    g.add_argument("--pairing", choices=("stem", "random"), default="stem",
                   help="--onto with --masks: pair image and mask by file stem, or draw masks at random")
    g.add_argument("--classes", default=None, metavar="A,B | A=N,B=M",
                   help="defect classes to paint, or a count per class (sets the number of pairs)")
    g.add_argument("--blend", type=int, default=2, help="soft band around a painted region, in pixels")
    g.add_argument("--resample", type=int, default=1, help="RePaint resampling: each step R times (cost x R)")
    p.add_argument("--layout", choices=("defectgen", "mmseg", "voc"), default="defectgen",
                   help="folder layout: defectgen (images/, masks/), mmseg (img_dir/, ann_dir/) or voc")
    _add_common(p)
    _add_threads(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("data", help="read a data folder and say what was found (layout, classes, good images, masks)")
    add_selection_args(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("inspect", help="parameters and receptive field of both networks")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--num-classes", type=int, default=4, help="classes including background")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("demo", help="demo data -> train both stages -> sample -> metrics -> evaluate -> report.html")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path, default=Path(__file__).resolve().parent.parent / "configs" / "demo.yaml")
    p.add_argument("--num", type=int, default=None, help="pairs to generate (default: DemoConfig.num_samples, 32)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a generator config key")
    p.add_argument("--demo-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a DemoConfig key (defectgen/demo.py), e.g. num_samples=16 or seeds=[0]")
    p.add_argument("--overwrite", action="store_true")
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: argparse._SubParsersAction) -> None:
    """Evaluation, metrics and comparison commands live with their modules."""
    from defectgen.seg import cli as seg_cli

    seg_cli.add_evaluate_parser(sub)
    seg_cli.add_mix_parser(sub)
    seg_cli.add_ablate_parser(sub)
    seg_cli.add_copypaste_parser(sub)
    from defectgen.quality import cli as quality_cli

    quality_cli.add_metrics_parser(sub)
    quality_cli.add_filter_parser(sub)
    from defectgen import compare

    compare.add_compare_parser(sub)


def _error_line(err: BaseException) -> str:
    """The one line a user sees for an error of theirs or of their files and disks."""
    if isinstance(err, OSError) and not isinstance(err, (OutputWriteError, OutputExistsError, FileNotFoundError)):
        err = write_error(err, Path(err.filename or "output"))
    return f"defectgen: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}"


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every user error (bad flag value, config, data, full disk) is one line and exit code 2."""
    from PIL import Image

    from defectgen.quality.features import FeatureExtractorError

    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # recorded in each output's report
    import torch

    from defectgen.timing import set_cpu_threads

    set_cpu_threads()
    if getattr(args, "quiet", False):
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()  # "Loading pipeline components..."
    torch.backends.cuda.matmul.allow_tf32 = True  # GPU speed; no effect on CPU
    torch.backends.cudnn.allow_tf32 = True
    try:
        rc = args.func(args)
    except (ValueError, OSError, RunError, FeatureExtractorError, Image.DecompressionBombError) as err:
        print(_error_line(err), file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
