"""The generator's commands: ``train``, ``sample``, ``data``, ``inspect`` and ``demo``."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from defectgen.cli.common import (command, add_device, add_out, add_quiet, add_selection_args, add_set, add_threads,
                                  apply_threads, device, finite, positive, report, seed, selection)
from defectgen.config import MAX_PAIRS, ConfigError, load_config, need
from defectgen.data.layouts import LAYOUTS
from defectgen.generator_config import PRECISIONS, STAGES, GeneratorConfig
from defectgen.schedule import SAMPLERS

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def _config(args: argparse.Namespace) -> GeneratorConfig:
    return load_config(GeneratorConfig, args.config, args.set)


def cmd_train(args: argparse.Namespace) -> int:
    from defectgen.distributed import process_state
    from defectgen.io import atomic_write_json
    from defectgen.run import selection_info, train_generator
    from defectgen.timing import Timer

    cfg = _config(args)
    apply_threads(args)
    sel = selection(args)
    ds, records = sel.select()
    stages = STAGES if args.stage == "both" else (args.stage,)
    main_process = process_state().is_main_process
    if main_process:
        print(f"[defectgen] training {', '.join(stages)} on {len(records)} images from {ds.root} -> {args.out}")
    timer = Timer()
    before = {s: (args.out / s / "final" / "config.json").is_file() for s in stages}
    with timer.phase("train (2 processes)" if args.parallel else "train"):
        path = train_generator(args.out, cfg, ds, records, selection_info(ds, records, sel), stages,
                               resume=args.resume == "latest", progress=not args.quiet, parallel=args.parallel)
    if not main_process:
        return 0
    for stage in stages:
        if before[stage]:
            timer.skip(stage)  # finished earlier; train_generator kept it
        else:
            steps = cfg.train.large_steps if stage == "large" else cfg.train.small_steps
            timer.add(stage, json.loads((args.out / stage / "timing.json").read_text())["seconds"], steps=steps)
    atomic_write_json(args.out / "timing.json", timer.to_dict())
    print(f"[defectgen] generator saved to {path}")
    print(f"[defectgen] report: {report(args.out, f'defectgen train: {args.out.name}', args).resolve()}")
    print(timer.line())
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from defectgen.distributed import process_state
    from defectgen.export import check_output, export_samples
    from defectgen.io import atomic_write_json
    from defectgen.run import RunFolder, load_generator
    from defectgen.schedule import sampler_scheduler
    from defectgen.timing import Timer

    apply_threads(args)
    run = RunFolder.find(args.run).trained()  # a folder without a trained generator is refused first
    flags = {"switch": args.switch, "sampler": args.sampler, "steps": args.steps, "batch_size": args.batch_size,
             "precision": args.precision}
    # the run's own sample: section is the default of every flag not given
    sc = dataclasses.replace(run.sample_config, **{k: v for k, v in flags.items() if v is not None})
    sc.check(flags=True)
    request = _guided_request(args)
    if request is not None and request.resample > 1 and sc.sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"--resample {request.resample} repeats each step, which {sc.sampler}'s step history "
                          "cannot; use --sampler ddpm or ddim")
    positive(args, "num", most=MAX_PAIRS)
    dev = device(args)
    check_output(args.out, args.overwrite)  # before loading; an unfinished run of this command resumes
    timer = Timer()
    with timer.phase("load"):
        pipe = load_generator(run, dev or process_state().device)
    pipe.scheduler = sampler_scheduler(pipe.scheduler, sc.sampler)
    condition, num = None, args.num
    if request is not None:
        from defectgen.pipelines.defectgen.conditions import build_conditions

        condition, num = build_conditions(request, run, pipe.class_map, pipe.sample_size, pipe.config.image_channels,
                                          args.num, args.seed)
    if (request is None or request.mode == "masks") and run.crop_mode:
        size = pipe.sample_size
        print(f"[defectgen] note: this run was trained on {size}x{size} crops (resize_mode: crop), so these pairs are "
              f"{size}x{size} windows at its scale; --onto GOOD_DIR or --into-training give pairs at the images' full size")
    if num is None:
        raise ConfigError("--num is required: how many pairs to sample")
    if num < 1:
        raise ConfigError(f"--num must be at least 1, got {num}")
    _check_job(args, sc, pipe, num, request)
    with timer.phase("sample", pairs=num):
        # switch None: the pipeline's own (saved from the run's sample.switch)
        m = export_samples(pipe, args.out, num, seed=args.seed, switch=args.switch, steps=sc.steps,
                           batch_size=sc.batch_size, overwrite=args.overwrite, identity=run.identity(),
                           progress=not args.quiet, condition=condition, request=request, precision=sc.precision)
    if not process_state().is_main_process:
        return 0
    if args.layout != "defectgen":
        from defectgen.data.layouts import relayout

        relayout(args.out, args.layout)
    atomic_write_json(args.out / "timing.json", timer.to_dict())
    print(f"[defectgen] {num} pairs ({m['mode']}) in {args.out} ({args.layout} layout, {m['seconds_per_sample']:.3f} s/sample, "
          f"large t={len(m['timesteps']['large'])} steps, small t={len(m['timesteps']['small'])} steps)")
    print(f"[defectgen] report: {report(args.out, f'defectgen sample: {args.out.name}', args).resolve()}")
    print(timer.line())
    return 0


def _check_job(args: argparse.Namespace, sc, pipe, num: int, request) -> None:
    """Everything the sampling job would otherwise meet only after its folder exists (``.sample_job.json``,
    ``.done/``), checked against the loaded generator before that folder is made."""
    from defectgen.device import need_memory

    total = pipe.scheduler.config.num_train_timesteps
    need(sc.steps is None or sc.steps <= total, "--steps", f"must be at most the generator's {total} training timesteps",
         sc.steps)
    size, channels = pipe.sample_size, pipe.config.image_channels + pipe.class_map.num_classes
    if request is not None:  # a band wider than the image is all band, and costs a pooling pass per pixel of it
        need(request.blend <= size, "--blend", f"must be at most the generator's image size ({size} px)", request.blend)
    batch = min(sc.batch_size, num)
    need_memory(batch * channels * size**2 * 4 * 16, f"--batch-size {sc.batch_size}: a batch of {batch} pairs of "
                f"{channels}x{size}x{size}", pipe.device)
    pipe.plan(sc.steps, args.switch)  # the schedule and the switch (and the UNets they need), as the job runs them


def _guided_request(args: argparse.Namespace):
    """The guided mode the flags ask for, or None for unconditional sampling."""
    from defectgen.pipelines.defectgen.request import GuidedRequest

    if args.onto is not None and args.into_training:
        raise ConfigError("--onto and --into-training exclude each other: one background at a time")
    if args.masks is not None and args.mask_source not in (None, "folder"):
        raise ConfigError(f"--masks gives the masks; it cannot be combined with --mask-source {args.mask_source}")
    mode = "onto" if args.onto is not None else "into-training" if args.into_training else \
        "masks" if (args.masks is not None or args.mask_source is not None) else None
    if mode is None:
        for flag in ("classes", "defects_per_image", "region", "strength"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} needs a guided mode (--onto, --into-training, --masks "
                                  "or --mask-source)")
        return None
    source = "folder" if args.masks is not None else args.mask_source or "train"
    request = GuidedRequest(mode, source, good=args.onto, masks=args.masks, pairing=args.pairing,
                            classes=args.classes, blend=args.blend, resample=args.resample,
                            defects_per_image=args.defects_per_image, region=args.region, strength=args.strength)
    request.check()
    return request


def cmd_data(args: argparse.Namespace) -> int:
    sel = selection(args)
    ds = sel.open(log=False)
    recs = sel.records(ds)
    for line in ds.report:
        print(f"[data] {line}")
    print(f"[data] {ds.format}: {len(recs)} images selected of {len(ds.records)} defect images; "
          f"{len(ds.good)} defect-free; classes {list(ds.class_map.names)}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from defectgen.models import build_unet, describe

    cfg = _config(args)
    if args.num_classes < 2:
        raise ConfigError(f"--num-classes counts background and at least one defect class, got {args.num_classes}")
    channels = cfg.image_channels + args.num_classes
    summary = {name: describe(build_unet(getattr(cfg, name), channels, cfg.size), cfg.size) for name in STAGES}
    summary["switch_timestep"] = cfg.sample.switch * cfg.diffusion.num_train_timesteps
    print(json.dumps(summary, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from defectgen.demo import DemoConfig, run_demo
    from defectgen.io import ensure_empty_output

    gen_cfg = _config(args)
    demo_cfg = load_config(DemoConfig, None, args.demo_set)
    positive(args, "num")
    if args.num is not None:
        demo_cfg.num_samples = args.num
        demo_cfg.check()
    out = ensure_empty_output(args.out, args.overwrite)
    timer = run_demo(out, gen_cfg, demo_cfg, progress=not args.quiet)
    page = report(out, "defectgen demo", args)
    print(f"[defectgen] demo: data {out / 'data'}, generator {out / 'run/pipeline'}, pairs {out / 'samples'}, "
          f"metrics {out / 'metrics'}, evaluation {out / 'eval'}")
    print(f"[defectgen] report: {page.resolve()}")
    print(timer.line())
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "train", cmd_train, help="train the two-stage generator on real pairs")
    p.add_argument("--config", type=Path, default=None)
    add_selection_args(p)
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--stage", choices=("large", "small", "both"), default="both")
    p.add_argument("--resume", choices=("latest",), default=None, help="'latest': continue from the newest checkpoint")
    p.add_argument("--parallel", action="store_true",
                   help="train the two stages at once in two processes (each with half the cores)")
    add_set(p, "the generator config", "train.lr=2e-4")
    add_quiet(p)
    add_threads(p)

    p = command(sub, "sample", cmd_sample, help="sample new image + mask pairs from a trained generator")
    p.add_argument("--run", type=Path, required=True, help="run folder or pipeline folder")
    p.add_argument("--num", type=int, default=None, help="number of pairs")
    p.add_argument("--switch", type=finite, default=None,
                   help="fraction of the schedule (0.4 = t 400 of 1000); default: the run's sample.switch")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="default: the run's sample.sampler; dpmsolver++ (DPM-Solver++, 2nd order) is good in 20-25 steps")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's sample.steps)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's sample.batch_size")
    add_device(p, "this process's GPU (cuda:LOCAL_RANK under torchrun), else the CPU")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="bf16: UNets in bf16 (CUDA only); default: the run's sample.precision")
    add_out(p, "sample folder")
    g = p.add_argument_group("guided sampling (defects onto real surfaces, images for given masks)")
    g.add_argument("--onto", type=Path, default=None, metavar="GOOD_DIR",
                   help="paint defects onto these good (defect-free) images; outside the defect they stay as they are")
    g.add_argument("--into-training", action="store_true",
                   help="paint new defects into the generator's own training images, keeping their defects and labels")
    g.add_argument("--masks", type=Path, default=None, metavar="MASK_DIR",
                   help="class-id masks to use (alone: generate an image for each mask)")
    g.add_argument("--mask-source", choices=("train", "model", "paste"), default=None,
                   help="masks from the training pairs (random flip/turn/shift), chosen by the model, or (paste, full-size "
                   "pairs) a real defect pasted with its pixels and harmonised by the model (default: train)")
    g.add_argument("--strength", type=float, default=None,
                   help="--mask-source paste: the pasted window is noised to this share of the schedule and denoised "
                   "(near 0: the pasted pixels; 1: painted anew in the pasted mask; default 0.5)")
    g.add_argument("--pairing", choices=("stem", "random"), default="stem",
                   help="--onto with --masks: pair image and mask by file stem, or draw masks at random")
    g.add_argument("--classes", default=None, metavar="A,B | A=N,B=M",
                   help="defect classes to paint, or a count per class (sets the number of pairs)")
    g.add_argument("--blend", type=int, default=2, help="soft band around a painted region, in pixels")
    g.add_argument("--resample", type=int, default=1, help="RePaint resampling: each step R times (cost x R)")
    g.add_argument("--defects-per-image", type=int, default=None, metavar="K",
                   help="full-size pairs (a run trained with resize_mode: crop): new defects per image, each in its own "
                   "window (default 1)")
    g.add_argument("--region", type=Path, default=None, metavar="REGION_DIR",
                   help="full-size pairs: masks by stem of the backgrounds, non-zero where new defects may go "
                   "(e.g. an object's foreground)")
    p.add_argument("--layout", choices=LAYOUTS, default="defectgen",
                   help="folder layout: defectgen (images/, masks/), mmseg (img_dir/, ann_dir/) or voc")
    add_quiet(p)
    add_threads(p)

    command(sub, "data", cmd_data, data_flag="--data",
            help="read a data folder and say what was found (layout, classes, good images, masks)")

    p = command(sub, "inspect", cmd_inspect, help="parameters and receptive field of both networks")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--num-classes", type=int, default=4, help="classes including background")
    add_set(p, "the generator config", "train.lr=2e-4")

    p = command(sub, "demo", cmd_demo, help="demo data -> train both stages -> sample -> metrics -> evaluate -> report.html")
    p.add_argument("--config", type=Path, default=DEMO_CONFIG)
    p.add_argument("--num", type=int, default=None, help="pairs to generate (default: DemoConfig.num_samples, 32)")
    add_set(p, "the generator config", "train.lr=2e-4")
    p.add_argument("--demo-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a DemoConfig key (defectgen/demo.py), e.g. num_samples=16 or seeds=[0]")
    add_out(p, "demo folder")
    add_quiet(p)
