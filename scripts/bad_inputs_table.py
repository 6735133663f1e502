"""Every bad input of ``tests/test_bad_input.py`` (and a few command-line mistakes) through the real
``python -m defectgen.cli``, one subprocess each: exit code and the one line a user sees.

    python scripts/bad_inputs_table.py [--out results/hardening]

Writes OUT/bad_inputs.md and OUT/bad_inputs.json. A row passes when the exit code is 2, stderr is
one line starting ``defectgen: error:`` (no traceback) and the line names what the test expects.
Tiny data and a tiny generator are made in a temporary folder (about a minute on a CPU).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import TINY_CONFIG  # noqa: E402
from test_bad_input import BAD_INPUTS  # noqa: E402

from defectgen.demo import make_demo_dataset  # noqa: E402
from defectgen.io import atomic_write_json, atomic_write_text  # noqa: E402

# mistakes argparse itself catches: they follow the same convention
USAGE_ROWS = [
    ("no command", lambda t, tmp: [], "required: command"),
    ("unknown command", lambda t, tmp: ["frobnicate"], "invalid choice"),
    ("sample --num abc", lambda t, tmp: ["sample", "--run", str(t["run"]), "--num", "abc", "--out", str(tmp / "out")],
     "invalid int value"),
    ("sample without --out", lambda t, tmp: ["sample", "--run", str(t["run"]), "--num", "2"], "--out"),
    ("train --resume newest", lambda t, tmp: ["train", "--data", str(t["data"]), "--out", str(tmp / "out"), "--resume",
                                              "newest"], "--resume"),
    ("evaluate --seeds 0,x", lambda t, tmp: ["evaluate", "--data", str(t["data"]), "--out", str(tmp / "out"), "--seeds",
                                             "0,x"], "--seeds"),
    ("sample --sampler euler", lambda t, tmp: ["sample", "--run", str(t["run"]), "--num", "2", "--out", str(tmp / "out"),
                                               "--sampler", "euler"], "--sampler"),
    ("data without --data", lambda t, tmp: ["data", "--shots", "1"], "--data"),
]


def defectgen(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "defectgen.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def prepare(root: Path) -> dict[str, Path]:
    """What the test's ``trained`` fixture builds: demo data, a tiny run and two sampled pairs."""
    data = make_demo_dataset(root / "data", per_class=3, size=24, seed=0)
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    run = root / "run"
    for argv in (["train", "--config", str(cfg), "--data", str(data), "--shots", "1", "--out", str(run), "--quiet",
                  "--set", "train.sample_every=0"],
                 ["sample", "--run", str(run), "--num", "2", "--out", str(root / "syn"), "--quiet"]):
        proc = defectgen(argv, root)
        if proc.returncode != 0:
            raise SystemExit(f"setup failed: defectgen {' '.join(argv)}\n{proc.stderr}")
    return {"root": root, "config": cfg, "run": run, "syn": root / "syn", "data": data}


def check(name: str, build, needle: str, t: dict[str, Path], root: Path) -> dict[str, object]:
    tmp = root / "rows" / f"{len(list((root / 'rows').glob('*'))):02d}"
    tmp.mkdir(parents=True)
    argv = build(t, tmp)
    t0 = time.time()
    proc = defectgen(argv, tmp)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    one_line = len(lines) == 1 and line.startswith("defectgen: error:") and "Traceback" not in proc.stderr
    return {"input": name, "exit_code": proc.returncode, "stderr_lines": len(lines), "message": line,
            "expected_text": needle, "ok": proc.returncode == 2 and one_line and needle in line,
            "seconds": round(time.time() - t0, 1)}


def markdown(rows: list[dict[str, object]]) -> str:
    ok = sum(r["ok"] for r in rows)
    out = ["# Bad inputs through `python -m defectgen.cli`", "",
           f"{ok}/{len(rows)} rows: exit code 2 and one line on stderr naming the flag or file "
           "(made by `scripts/bad_inputs_table.py`; paths are those of its temporary folder).", "",
           "| # | input | exit | lines | message | ok |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        msg = str(r["message"]).replace("|", "\\|")
        out.append(f"| {i} | {r['input']} | {r['exit_code']} | {r['stderr_lines']} | `{msg}` | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "hardening")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as tmp:
        root = Path(tmp)
        t = prepare(root)
        rows = []
        for name, build, needle in [*BAD_INPUTS, *USAGE_ROWS]:
            rows.append(check(name, build, needle, t, root))
            print(f"{'ok ' if rows[-1]['ok'] else 'BAD'} {name}: {rows[-1]['exit_code']} {rows[-1]['message']}", flush=True)
        for r in rows:  # the temporary folder's name says nothing; keep the rest of each path
            r["message"] = str(r["message"]).replace(str(root), "TMP")
    atomic_write_json(args.out / "bad_inputs.json", {"rows": rows, "passed": sum(r["ok"] for r in rows), "total": len(rows)})
    atomic_write_text(args.out / "bad_inputs.md", markdown(rows))
    print(f"{sum(r['ok'] for r in rows)}/{len(rows)} ok -> {args.out / 'bad_inputs.md'}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
