"""Time ``defectgen demo`` end to end (a fresh process, imports included) and per phase.

    PYTHONPATH=$PWD python benchmarks/bench_demo.py                 # writes benchmarks/results/demo/bench.{json,md}
    PYTHONPATH=$PWD python benchmarks/bench_demo.py --keep runs/demo_bench -- --set train.large_steps=600

The figures the README quotes come from here. The load average before and after is recorded: on
a machine shared with other jobs every phase is slower, so compare runs only at a similar load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def run_demo(out: Path, extra: list[str]) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "defectgen.cli", "demo", "--out", str(out), "--quiet", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def markdown(r: dict) -> str:
    lines = [
        "# `defectgen demo`: where the time goes",
        "",
        f"End to end (fresh process, imports included): **{r['wall_seconds']:.0f} s** "
        f"({r['wall_seconds'] / 60:.1f} min) on {r['cpus']} CPU cores, torch {r['torch']}, "
        f"torch threads per process {r['threads']}.",
        f"Load average before / after: {' '.join(map(str, r['loadavg_before']))} / "
        f"{' '.join(map(str, r['loadavg_after']))} (a shared machine: other jobs were running"
        f"{'' if max(r['loadavg_before'][:1] or [0]) >= 1 else ' little'}; on a quiet machine expect less).",
        "",
        "| phase | seconds | rate |",
        "|---|---|---|",
    ]
    for name, e in r["timing"]["phases"].items():
        rate = next((f"{e['seconds'] / e[u]:.3g} s/{u[:-1]}" for u in ("steps", "pairs", "segmenters") if e.get(u)), "")
        lines.append(f"| {name} | {e['seconds']:.1f} | {rate} |")
    lines += ["", "The large and small stage train at the same time in two processes, so their rows overlap the "
              "`train` row. Outside the phases: imports, loading and writing report.html "
              f"({r['wall_seconds'] - r['timing']['total_seconds']:.0f} s before the demo's own clock starts or "
              "after it stops).", "", f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "demo")
    ap.add_argument("--keep", type=Path, default=None, help="keep the demo folder here (default: a temporary one)")
    ap.add_argument("extra", nargs="*", help="extra arguments for defectgen demo (after --)")
    args = ap.parse_args()
    import torch

    work = Path(tempfile.mkdtemp(prefix="bench_demo_"))
    out = args.keep or work / "demo"
    before = loadavg()
    wall, stdout = run_demo(out, ["--overwrite"] * bool(args.keep) + args.extra)
    after = loadavg()
    timing = json.loads((out / "timing.json").read_text())
    result = {
        "command": "defectgen demo --out DIR --quiet " + " ".join(args.extra),
        "wall_seconds": round(wall, 1), "timing": timing, "loadavg_before": before, "loadavg_after": after,
        "cpus": os.cpu_count(), "threads": os.environ.get("OMP_NUM_THREADS") or "auto (half the cores)",
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "last_lines": stdout.strip().splitlines()[-2:],
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "bench.md").write_text(markdown(result))
    print(markdown(result))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
