"""A GPU run that returns what it made, within the lent machine's limits.

The machine gives back at most 8 files per call, each under 16 MiB, at most two folders below
``$OUT``, and a call should stay well under 10 minutes. So every phase is its own call, does its
work under a time budget into ``--work`` (kept while the machine stays warm), and then packs its
results into ``$OUT``, whether the work finished or not:

    python tools/gpu_run.py train  --config configs/neu64_gpu.yaml --data DATA --shots 10 --work runs/gpu --seconds 420
    python tools/gpu_run.py sample --work runs/gpu --num 2000 --steps 250 --seconds 420   # [--sampler dpmsolver++ --steps 25]
    python tools/gpu_run.py bench  --work runs/gpu                       # benchmarks/bench.py --gpu-only

``train`` resumes from the newest checkpoint and ``sample`` fills only the missing pairs, so a
phase cut by its budget continues at the next call. ``train`` returns the pipeline as fp16
safetensors shards (``weights-*.safetensors``, each under ``--shard-mb`` MB) plus
``pipeline_meta.tar`` (configs, class map, logs); ``sample`` returns the pairs done so far as
``samples-*.npz`` (uint8 images and masks, indices) plus the manifest once finished.
Back on the developer's machine the inverse commands rebuild the usual folders:

    python tools/gpu_run.py unpack-weights --from FETCHED --to runs/gpu_pipeline   # then defectgen sample --run ...
    python tools/gpu_run.py unpack-samples --from FETCHED --to runs/gpu_samples    # a normal sample folder

``phase_<name>.json`` in ``$OUT`` says what ran, how long, and whether it finished. On a bare
machine the wheels in ``.whl/`` (diffusers, accelerate, ...; carried like gpu_neu.sh's) are
installed first. A device call then reads, e.g. (timeout_s 540, carry [".whl"]):

    python tools/gpu_run.py train --config configs/neu64_gpu.yaml --work runs/gpu --seconds 420
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # a bare GPU machine runs the library from the carried checkout

from lent_gpu import check_out, ensure_wheels, out_dir  # noqa: E402  (beside this file)

SEP = "__"  # a shard's folder in the pipeline, flattened into its name: unet_2__diffusion_...safetensors


def run_budgeted(cmd: list[str], seconds: float, log: Path, far_enough: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> dict[str, object]:
    """Run ``cmd`` until it ends, ``seconds`` have passed on ``clock`` or ``far_enough()`` says it has done enough
    (a cut by progress, pairs or steps, which is the same on any machine); a cut job is killed (every phase
    resumes). Output goes to ``log``."""
    t0 = clock()
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            if clock() - t0 > seconds or (far_enough is not None and far_enough()):
                proc.kill()
                break
            time.sleep(0.1)
        rc = proc.wait()
    return {"command": " ".join(cmd), "returncode": rc, "finished": rc == 0, "seconds": round(clock() - t0, 1)}


def write_phase(out: Path, name: str, record: dict[str, object]) -> None:
    from defectgen.io import atomic_write_json

    record["out_problems"] = check_out(out)  # before the phase file itself, which is small and counted below
    atomic_write_json(out / f"phase_{name}.json", record)


def pack_pipeline(run: Path, out: Path, shard_mb: float) -> list[str]:
    """The run's pipeline as fp16 safetensors shards plus one tar of everything else (configs, logs)."""
    import tempfile

    import torch

    from defectgen.pipeline import load_pipeline

    pipe = load_pipeline(run / "pipeline", dtype=torch.float16)
    tmp = Path(tempfile.mkdtemp(prefix="pack_"))
    pipe.save_pretrained(tmp, max_shard_size=int(shard_mb * 1e6))
    names = []
    with tarfile.open(out / "pipeline_meta.tar", "w") as tar:
        for p in sorted(tmp.rglob("*")):
            if p.is_file() and p.suffix == ".safetensors":
                name = "weights-" + SEP.join(p.relative_to(tmp).parts)
                os.replace(p, out / name)
                names.append(name)
            elif p.is_file():
                tar.add(p, arcname=f"pipeline/{p.relative_to(tmp)}")
        for extra in ["config.yaml", "selection.json", "class_map.json", "large/log.jsonl", "small/log.jsonl",
                      "large/timing.json", "small/timing.json"]:
            if (run / extra).is_file():
                tar.add(run / extra, arcname=extra)
    return names


def unpack_weights(src: Path, dst: Path) -> Path:
    """Rebuild the run folder (float32 ``pipeline/``, config, selection, logs) from ``pack_pipeline``'s files."""
    import torch

    from defectgen.io import atomic_dir
    from defectgen.pipeline import load_pipeline

    with atomic_dir(dst) as tmp:
        with tarfile.open(src / "pipeline_meta.tar") as tar:
            tar.extractall(tmp, filter="data")
        for shard in sorted(src.glob("weights-*.safetensors")):
            rel = Path(*shard.name[len("weights-"):].split(SEP))
            (tmp / "pipeline" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "pipeline" / rel).write_bytes(shard.read_bytes())
        pipe = load_pipeline(tmp / "pipeline", dtype=torch.float32)
        for shard in (tmp / "pipeline").rglob("*.safetensors*"):
            shard.unlink()  # the fp16 shards and their index, replaced by the float32 save below
        pipe.save_pretrained(tmp / "pipeline")
    return dst / "pipeline"


def pack_samples(folder: Path, out: Path, max_bytes: int) -> list[str]:
    """The sample folder's pairs as compressed ``.npz`` parts under ``max_bytes`` each, plus the manifest."""
    from defectgen.data import samples

    if samples.is_complete(folder):
        entries = samples.read_manifest(folder)["samples"]
        (out / samples.MANIFEST).write_bytes((folder / samples.MANIFEST).read_bytes())
    else:  # unfinished: the pairs recorded as done (never a half-written file)
        from defectgen.export import DONE_DIR

        entries = [json.loads(p.read_text()) for p in sorted((folder / DONE_DIR).glob("*.json"))]
    names, part, size, k = [], [], 0, 0
    per_pair = None

    def flush() -> None:
        nonlocal part, size, k
        if not part:
            return
        name = f"samples-{k:03d}.npz"
        buf = io.BytesIO()
        np.savez_compressed(buf, index=np.array([e["index"] for e in part]),
                            images=np.stack([e["image"] for e in part]), masks=np.stack([e["mask"] for e in part]))
        (out / name).write_bytes(buf.getvalue())
        names.append(name)
        part, size, k = [], 0, k + 1

    for e in entries:
        (img,), (mask,) = samples.read_pairs(folder, [e["file"]])
        per_pair = per_pair or img.nbytes + mask.nbytes
        if size + per_pair > max_bytes * 0.9:  # uncompressed bound: a part can never exceed max_bytes
            flush()
        part.append({"index": e["index"], "image": img, "mask": mask})
        size += per_pair
    flush()
    return names


def unpack_samples(src: Path, dst: Path) -> Path:
    """Rebuild the sample folder (images/, masks/, manifest.json) from ``pack_samples``' files."""
    from defectgen.data import samples
    from defectgen.io import atomic_dir

    with atomic_dir(dst) as tmp:
        samples.make_folders(tmp)
        for part in sorted(src.glob("samples-*.npz")):
            with np.load(part) as z:
                for i, img, mask in zip(z["index"], z["images"], z["masks"]):
                    samples.save_pair(tmp, int(i), img, mask, ())
        if (src / samples.MANIFEST).is_file():
            (tmp / samples.MANIFEST).write_bytes((src / samples.MANIFEST).read_bytes())
    return dst


def phase_train(args: argparse.Namespace) -> None:
    out, work = out_dir(), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "defectgen.cli", "train", "--config", str(args.config), "--out", str(work / "run"),
           "--resume", "latest", "--quiet", *(["--data", str(args.data)] if args.data else []),
           *(["--shots", str(args.shots)] if args.shots else []), *sum((["--set", s] for s in args.set), [])]
    if args.data is None:  # no data carried: the procedural demo set (a throughput check)
        from defectgen.demo import make_demo_dataset

        data = work / "demo_data"
        if not data.is_dir():
            make_demo_dataset(data, per_class=8, size=64, seed=0)
        cmd += ["--data", str(data)]
    record = run_budgeted(cmd, args.seconds, work / "train.log")
    if (work / "run" / "pipeline" / "model_index.json").is_file() and record["finished"]:
        record["weights"] = pack_pipeline(work / "run", out, args.shard_mb)
    record["log_tail"] = (work / "train.log").read_text()[-3000:]
    write_phase(out, "train", record)


def phase_sample(args: argparse.Namespace) -> None:
    out, work = out_dir(), Path(args.work)
    cmd = [sys.executable, "-m", "defectgen.cli", "sample", "--run", str(work / "run"), "--num", str(args.num),
           "--out", str(work / "samples"), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
           "--quiet", "--precision", args.precision, "--sampler", args.sampler, *args.sample_args]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    done = work / "samples" / ".done"  # defectgen.export's record of finished pairs
    far_enough = None if args.stop_after_pairs is None else lambda: len(list(done.glob("*.json"))) >= args.stop_after_pairs
    record = run_budgeted(cmd, args.seconds, work / "sample.log", far_enough)
    record["parts"] = pack_samples(work / "samples", out, int(args.shard_mb * 1e6)) if (work / "samples").is_dir() else []
    record["log_tail"] = (work / "sample.log").read_text()[-3000:]
    write_phase(out, "sample", record)


def phase_bench(args: argparse.Namespace) -> None:
    out, work = out_dir(), Path(args.work)
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--gpu-only", "--out", str(work / "bench"),
           *args.bench_args]
    record = run_budgeted(cmd, args.seconds, work / "bench.log")
    for name in ("bench.json", "bench.md", "bench.png"):
        if (work / "bench" / name).is_file():
            (out / name).write_bytes((work / "bench" / name).read_bytes())
    record["log_tail"] = (work / "bench.log").read_text()[-3000:]
    write_phase(out, "bench", record)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="phase", required=True)
    t = sub.add_parser("train")
    t.add_argument("--config", type=Path, required=True)
    t.add_argument("--data", type=Path, default=None, help="default: the procedural demo data")
    t.add_argument("--shots", type=int, default=None)
    t.add_argument("--set", action="append", default=[])
    s = sub.add_parser("sample")
    s.add_argument("--num", type=int, required=True)
    s.add_argument("--steps", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=150)
    s.add_argument("--sampler", default="ddpm")
    s.add_argument("--precision", default="bf16", help="bf16 on the GPU; a CPU stand-in run falls back to fp32")
    s.add_argument("--stop-after-pairs", type=int, default=None,
                   help="cut the job once this many pairs are written, as --seconds would (a CPU stand-in run)")
    s.add_argument("--sample-args", nargs=argparse.REMAINDER, default=[], help="passed on to defectgen sample")
    b = sub.add_parser("bench")
    b.add_argument("--bench-args", nargs=argparse.REMAINDER, default=[],
                   help="passed on to benchmarks/bench.py (--quick --device cpu: a stand-in run)")
    for q in (t, s, b):
        q.add_argument("--work", type=Path, required=True)
        q.add_argument("--seconds", type=float, default=420, help="budget of the work; packing comes after it")
        q.add_argument("--shard-mb", type=float, default=15.0, help="largest returned file, in MB (1e6 bytes)")
    for name, fn in (("unpack-weights", unpack_weights), ("unpack-samples", unpack_samples)):
        u = sub.add_parser(name)
        u.add_argument("--from", dest="src", type=Path, required=True)
        u.add_argument("--to", dest="dst", type=Path, required=True)
        u.set_defaults(func=lambda a, fn=fn: print(fn(a.src, a.dst)))
    t.set_defaults(func=phase_train)
    s.set_defaults(func=phase_sample)
    b.set_defaults(func=phase_bench)
    args = p.parse_args(argv)
    ensure_wheels()
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
