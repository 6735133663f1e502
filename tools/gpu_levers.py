"""Issue 9's generator levers on one lent GPU, in one call: train every variant side by side, sample its sets,
return weights and pairs within the machine's limits (8 files under 16 MiB each, two folders deep at most).

    python tools/gpu_levers.py subset-data --config experiments/neu_pay/gpu_levers.yaml --to .gpudata/neu_seg   # here
    python tools/gpu_levers.py run --config experiments/neu_pay/gpu_levers.yaml --data .gpudata/neu_seg \\
        --work runs/gpu_levers --train-seconds 330 --sample-seconds 80          # there (carry .whl, .gpudata)
    python tools/gpu_levers.py unpack --from FETCHED --to runs/gpu_levers --data runs/data/neu_seg   # here

``run`` trains each variant of the config (``defectgen train --parallel``: both stages at once) as its own
process, all at once; a variant still training at ``--train-seconds`` (or, with ``--train-steps N``, once
each of its unfinished stages has a checkpoint at step N: a cut that is the same on any machine) is stopped and
finished from its newest checkpoint (the EMA weights of that step; ``levers.json`` records the steps each stage
reached). A second ``run`` on the same ``--work`` (the machine keeps it while warm) trains such a variant on
from that checkpoint and samples it again. Then every missing sample set is drawn (``defectgen sample``, all at
once), and ``$OUT`` gets, phase by phase:

    levers.json            what ran, steps reached, seconds, return codes (rewritten after every phase)
    log.txt                the tail of every training and sampling log
    samples.tar            VARIANT/sets/SET/ sample folders (images, masks, manifest)
    weights_VARIANT.tar    the variant's pipeline in fp16 plus config, selection and training logs

``unpack`` rebuilds ``VARIANT/`` run folders (pipeline back in float32) with their ``sets/`` beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # a bare GPU machine runs the library from the carried checkout

from lent_gpu import MAX_FILES, check_out, ensure_wheels, out_dir  # noqa: E402  (beside this file)
RUN_META = ["config.yaml", "selection.json", "class_map.json", "large/log.jsonl", "small/log.jsonl",
            "large/timing.json", "small/timing.json"]


class LeversError(ValueError):
    """A config or folder this script cannot use; main prints it in one line and exits with 2."""


def load_config(path: Path) -> dict:
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise LeversError(f"{path}: cannot read the config ({str(err).splitlines()[0]})") from err
    for key in ("generator", "variants", "sets"):
        if not isinstance(cfg, dict) or key not in cfg:
            raise LeversError(f"{path}: no '{key}' key")
    if len(cfg["variants"]) > MAX_FILES - 3:  # levers.json, log.txt, samples.tar + one weights tar each
        raise LeversError(f"{path}: {len(cfg['variants'])} variants; at most {MAX_FILES - 3} fit the "
                          f"{MAX_FILES} files a call returns")
    for name, spec in cfg["sets"].items():
        unknown = set(set_variants(cfg, spec.get("variants", "all"))) - set(cfg["variants"])
        if unknown:
            raise LeversError(f"{path}: set '{name}' names unknown variants {sorted(unknown)}")
    return cfg


def set_variants(cfg: dict, spec: str | list[str]) -> list[str]:
    return list(cfg["variants"]) if spec == "all" else list(spec)


def overrides(cfg: dict, variant: str) -> list[str]:
    keys = {**cfg.get("common", {}), **(cfg["variants"][variant] or {})}
    return sum((["--set", f"{k}={json.dumps(v) if isinstance(v, bool) else v}"] for k, v in keys.items()), [])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "defectgen.cli", *args]


def run_all(jobs: dict[str, tuple[list[str], Path]], seconds: float, threads: int,
            far_enough: Callable[[str], bool] | None = None, clock: Callable[[], float] = time.monotonic) -> dict[str, dict]:
    """Start every job at once (own process group, ``threads`` CPU threads each); stop what runs past ``seconds`` on
    ``clock``, or what ``far_enough(name)`` says has done enough."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
    t0, procs = clock(), {}
    for name, (cmd, log) in jobs.items():
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            procs[name] = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    records: dict[str, dict] = {}
    while len(records) < len(procs):
        for name, proc in procs.items():
            if name in records:
                continue
            if proc.poll() is None and (clock() - t0 > seconds or (far_enough is not None and far_enough(name))):
                os.killpg(proc.pid, signal.SIGKILL)  # --parallel's second stage lives in a child process
                proc.wait()
            if proc.poll() is not None:
                records[name] = {"command": " ".join(jobs[name][0]), "returncode": proc.returncode,
                                 "finished": proc.returncode == 0, "seconds": round(clock() - t0, 1)}
        if len(records) < len(procs):
            time.sleep(0.1)
    return {name: records[name] for name in procs}


def trained_to(run: Path, steps: int) -> bool:
    """Whether every unfinished stage of ``run`` has a checkpoint at ``steps`` or later (a finished run: False)."""
    from defectgen.train import latest_checkpoint

    todo = [s for s in ("large", "small") if not (run / s / "final" / "config.json").is_file()]
    newest = [latest_checkpoint(run / s) for s in todo]
    return bool(todo) and all(c is not None and int(c.name.split("_")[1]) >= steps for c in newest)


def finish_from_checkpoint(run: Path) -> dict[str, int]:
    """Give every unfinished stage its newest checkpoint's EMA weights as ``final/``; assemble the pipeline.

    Returns the step each stage's final weights come from."""
    from defectgen.run import finalize_run

    return finalize_run(run)


def reopen_partial(run: Path) -> bool:
    """Undo ``finish_from_checkpoint`` so that training resumes: drop its ``final/`` weights and what was made
    from them (pipeline, sets). Returns whether anything was dropped."""
    from defectgen.run import FROM_CHECKPOINT

    partial = [run / stage / "final" for stage in ("large", "small") if (run / stage / "final" / FROM_CHECKPOINT).is_file()]
    for folder in [*partial, *([run / "pipeline", run / "sets"] if partial else [])]:
        shutil.rmtree(folder, ignore_errors=True)
    return bool(partial)


def pack_run(run: Path, dest: Path) -> None:
    """``run``'s pipeline in fp16 and its metadata as one tar (written under a temporary name, then renamed)."""
    import torch

    from defectgen.pipeline import load_pipeline

    tmp = Path(tempfile.mkdtemp(prefix="pack_"))
    load_pipeline(run / "pipeline", dtype=torch.float16).save_pretrained(tmp / "pipeline")
    part = dest.with_suffix(".part")
    with tarfile.open(part, "w") as tar:
        tar.add(tmp / "pipeline", arcname="pipeline")
        for name in RUN_META:
            if (run / name).is_file():
                tar.add(run / name, arcname=name)
        for png in sorted(run.glob("*/samples/*.png"))[-2:]:
            tar.add(png, arcname=str(png.relative_to(run)))
    os.replace(part, dest)
    shutil.rmtree(tmp, ignore_errors=True)


def write_record(out: Path, record: dict, logs: list[Path]) -> None:
    from defectgen.io import atomic_write_json, atomic_write_text

    tails = [f"==> {p} <==\n{p.read_text()[-1500:]}" for p in logs if p.is_file()]
    atomic_write_text(out / "log.txt", "\n".join(tails))
    record["out_problems"] = check_out(out)
    atomic_write_json(out / "levers.json", record)


def phase_run(args: argparse.Namespace) -> None:
    ensure_wheels()
    cfg, out, work = load_config(args.config), out_dir(), args.work
    work.mkdir(parents=True, exist_ok=True)
    record: dict = {"config": cfg, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "phases": {}}
    try:
        import torch

        record["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception as err:  # noqa: BLE001 - recorded, the run goes on
        record["device"] = f"unknown ({err})"
    variants = list(cfg["variants"])
    record["resumed"] = [v for v in variants if reopen_partial(work / v)]  # cut by an earlier call: train on
    data = str(args.data or cfg["data"])
    train_logs = {v: work / f"train_{v}.log" for v in variants}
    jobs = {v: (cli("train", "--config", cfg["generator"], "--data", data, *cfg.get("select", []),
                    "--out", str(work / v), "--parallel", "--resume", "latest", "--quiet", "--threads", "1",
                    *overrides(cfg, v), *sum((["--set", kv] for kv in args.extra_set), [])), train_logs[v]) for v in variants}
    t0 = time.time()
    far_enough = None if args.train_steps is None else lambda v: trained_to(work / v, args.train_steps)
    record["phases"]["train"] = run_all(jobs, args.train_seconds, 1, far_enough)
    for v in variants:
        try:
            record["phases"]["train"][v]["steps_reached"] = finish_from_checkpoint(work / v)
        except Exception as err:  # noqa: BLE001 - one broken variant must not cost the others
            record["phases"]["train"][v]["finish_error"] = str(err)
    record["phases"]["train"]["seconds"] = round(time.time() - t0, 1)
    write_record(out, record, list(train_logs.values()))

    ready = [v for v in variants if (work / v / "pipeline" / "model_index.json").is_file()]
    sample_jobs = {}
    for name, spec in cfg["sets"].items():
        for v in set_variants(cfg, spec["variants"]):
            folder = work / v / "sets" / name
            if v in ready and not (folder / "manifest.json").is_file():  # a set of an earlier call is kept
                sample_jobs[f"{v}/{name}"] = (cli("sample", "--run", str(work / v), "--out", str(folder), "--quiet",
                                                  "--threads", "1", *map(str, spec["args"])), work / v / f"sample_{name}.log")
    t1 = time.time()
    record["phases"]["sample"] = run_all(sample_jobs, args.sample_seconds, 1)
    record["phases"]["sample"]["seconds"] = round(time.time() - t1, 1)
    with tarfile.open(out / "samples.part", "w") as tar:
        for v in ready:
            if (work / v / "sets").is_dir():
                tar.add(work / v / "sets", arcname=f"{v}/sets")
    os.replace(out / "samples.part", out / "samples.tar")
    write_record(out, record, [*train_logs.values(), *(log for _, log in sample_jobs.values())])

    record["phases"]["pack"] = {}
    for v in ready:
        try:
            pack_run(work / v, out / f"weights_{v}.tar")
            record["phases"]["pack"][v] = (out / f"weights_{v}.tar").stat().st_size
        except Exception as err:  # noqa: BLE001
            record["phases"]["pack"][v] = f"failed: {err}"
        write_record(out, record, [*train_logs.values(), *(log for _, log in sample_jobs.values())])
    record["seconds"] = round(time.time() - t0, 1)
    write_record(out, record, [*train_logs.values(), *(log for _, log in sample_jobs.values())])
    print(json.dumps({k: v for k, v in record.items() if k != "config"}, indent=1))


def phase_unpack(args: argparse.Namespace) -> None:
    """Run folders with a float32 pipeline and the sample sets, from what ``run`` returned."""
    import torch

    from defectgen.io import atomic_dir
    from defectgen.pipeline import load_pipeline

    src, dst = args.src, args.dst
    if not any(src.glob("weights_*.tar")) and not (src / "samples.tar").is_file():
        raise LeversError(f"{src}: no weights_*.tar or samples.tar here (the files a run call returned)")
    dst.mkdir(parents=True, exist_ok=True)
    for packed in sorted(src.glob("weights_*.tar")):
        v = packed.stem[len("weights_"):]
        if (dst / v / "pipeline").is_dir():
            print(f"{dst / v}: already unpacked, kept")
            continue
        with atomic_dir(dst / v) as tmp:
            with tarfile.open(packed) as tar:
                tar.extractall(tmp, filter="data")
            pipe = load_pipeline(tmp / "pipeline", dtype=torch.float32)
            shutil.rmtree(tmp / "pipeline")
            pipe.save_pretrained(tmp / "pipeline")
            if args.data is not None and (tmp / "selection.json").is_file():  # the GPU machine's data path
                sel = json.loads((tmp / "selection.json").read_text())
                sel["data"] = str(args.data.resolve())
                (tmp / "selection.json").write_text(json.dumps(sel, indent=2))
        print(f"{dst / v}: unpacked")
    if (src / "samples.tar").is_file():
        with tarfile.open(src / "samples.tar") as tar:
            for member in tar.getmembers():
                if not (dst / member.name).exists():
                    tar.extract(member, dst, filter="data")
    for name in ("levers.json", "log.txt"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def phase_subset(args: argparse.Namespace) -> None:
    """The training pairs alone, in NEU's layout, small enough to travel with the working tree."""
    cfg = load_config(args.config)
    sel = cfg.get("select", [])
    stems = Path(sel[sel.index("--list") + 1]).read_text().split()
    src, dst = Path(args.src or cfg["data"]), args.dst
    (dst / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    for sub, ext in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
        (dst / sub).mkdir(exist_ok=True)
        for s in stems:
            shutil.copyfile(src / sub / f"{s}{ext}", dst / sub / f"{s}{ext}")
    (dst / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(stems) + "\n")
    shutil.copyfile(src / "labels.txt", dst / "labels.txt")
    print(f"{dst}: {len(stems)} pairs")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="phase", required=True)
    r = sub.add_parser("run")
    r.add_argument("--config", type=Path, required=True)
    r.add_argument("--data", type=Path, default=None, help="default: the config's data")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--train-seconds", type=float, default=330)
    r.add_argument("--sample-seconds", type=float, default=80)
    r.add_argument("--train-steps", type=int, default=None,
                   help="also stop a variant once each unfinished stage has a checkpoint at this step (a cut by "
                   "steps instead of seconds: the same on any machine, for tests and CPU stand-in runs)")
    r.add_argument("--set", dest="extra_set", action="append", default=[], metavar="KEY=VALUE",
                   help="one more override for every variant (a CPU stand-in run: --set train.large_steps=2)")
    r.set_defaults(func=phase_run)
    u = sub.add_parser("unpack")
    u.add_argument("--from", dest="src", type=Path, required=True)
    u.add_argument("--to", dest="dst", type=Path, required=True)
    u.add_argument("--data", type=Path, default=None, help="this machine's copy of the training data")
    u.set_defaults(func=phase_unpack)
    s = sub.add_parser("subset-data")
    s.add_argument("--config", type=Path, required=True)
    s.add_argument("--from", dest="src", type=Path, default=None)
    s.add_argument("--to", dest="dst", type=Path, required=True)
    s.set_defaults(func=phase_subset)
    args = p.parse_args(argv)
    try:
        args.func(args)
    except (LeversError, FileNotFoundError) as err:
        print(f"gpu_levers: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
