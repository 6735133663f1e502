"""Every bad input of ``tests/test_bad_input.py`` (and a few command-line mistakes) through the real
``python -m defectgen.cli``, one subprocess each: exit code and the one line a user sees.

    python experiments/hardening/bad_inputs_table.py [--out experiments/hardening/results]

Writes OUT/bad_inputs.md and OUT/bad_inputs.json. A refused row passes when the exit code is 2, stderr
ends in the one line starting ``defectgen: error:`` (no traceback, no Python warning: any line before it
is the command's own ``[data]``/``[defectgen]`` progress), the line names what the test expects, and
the command's ``--out`` holds what it held before (nothing written, changed or removed; the one
exception, a training stopped at a NaN loss, keeps its run folder). An accepted row (an input that was
refused or taken silently before) passes with exit code 0 and the expected line, a named warning where
there is one. No row may run a planted pickle. Tiny data and a tiny generator are made in a temporary
folder (several minutes on a CPU).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import TINY_CONFIG  # noqa: E402
from test_bad_input import ACCEPTED, BAD_INPUTS, KEEPS_OUT, out_folder, snapshot  # noqa: E402

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
                          text=True, timeout=3600)


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


def check(name: str, build, needle: str, t: dict[str, Path], root: Path, refused: bool = True) -> dict[str, object]:
    tmp = root / "rows" / f"{len(list((root / 'rows').glob('*'))):02d}"
    tmp.mkdir(parents=True)
    argv = build(t, tmp)
    out = out_folder(argv)
    before = snapshot(out)
    t0 = time.time()
    proc = defectgen(argv, tmp)
    seconds = round(time.time() - t0, 1)
    after = snapshot(out)
    pickle_ran = (tmp / "pwned").exists()
    if refused:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        line = lines[-1] if lines else ""
        progress = all(ln.startswith(("[data] ", "[defectgen] ")) for ln in lines[:-1])
        one_line = line.startswith("defectgen: error:") and progress and "Traceback" not in proc.stderr
        untouched = after in (before, {}) or name in KEEPS_OUT
        ok = proc.returncode == 2 and one_line and needle in line and untouched and not pickle_ran
        n_lines = len(lines)
    else:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if needle in ln]
        line, n_lines = (lines[0] if lines else ""), len((proc.stderr).splitlines())
        untouched = True
        ok = proc.returncode == 0 and bool(lines) and not pickle_ran
    left = "–" if out is None else ("unchanged" if after in (before, {}) else "run folder kept" if name in KEEPS_OUT
                                    else "CHANGED")
    return {"input": name, "kind": "refused" if refused else "accepted", "exit_code": proc.returncode,
            "stderr_lines": n_lines, "message": line, "expected_text": needle, "out": left, "ok": ok,
            "seconds": seconds}


def markdown(rows: list[dict[str, object]]) -> str:
    refused = [r for r in rows if r["kind"] == "refused"]
    accepted = [r for r in rows if r["kind"] == "accepted"]
    out = ["# Bad inputs through `python -m defectgen.cli`", "",
           f"{sum(r['ok'] for r in refused)}/{len(refused)} refused rows: exit code 2, one error line on stderr naming the "
           "flag or file (no traceback; any other line is the command's own `[data]`/`[defectgen]` progress before it "
           "refused), and `--out` as it was before the command (made by `experiments/hardening/bad_inputs_table.py`; paths are those "
           "of its temporary folder). "
           f"{sum(r['ok'] for r in accepted)}/{len(accepted)} accepted rows: inputs that were refused or taken silently "
           "before, now read (exit code 0) with the line shown.", "",
           "| # | input | exit | lines | message | --out | ok |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        msg = str(r["message"]).replace("|", "\\|")
        out.append(f"| {i} | {r['input']} | {r['exit_code']} | {r['stderr_lines']} | `{msg}` | {r['out']} | "
                   f"{'yes' if r['ok'] else 'NO'} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "hardening" / "results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as tmp:
        root = Path(tmp)
        t = prepare(root)
        rows = []
        for name, build, needle in [*BAD_INPUTS, *USAGE_ROWS]:
            rows.append(check(name, build, needle, t, root))
            print(f"{'ok ' if rows[-1]['ok'] else 'BAD'} {name}: {rows[-1]['exit_code']} {rows[-1]['message']}", flush=True)
        for name, build, needle in ACCEPTED:
            rows.append(check(name, build, needle, t, root, refused=False))
            print(f"{'ok ' if rows[-1]['ok'] else 'BAD'} {name}: {rows[-1]['exit_code']} {rows[-1]['message']}", flush=True)
        for r in rows:  # the temporary folder's name says nothing; keep the rest of each path
            r["message"] = str(r["message"]).replace(str(root), "TMP")
    ok = sum(r["ok"] for r in rows)
    atomic_write_json(args.out / "bad_inputs.json", {"rows": rows, "passed": ok, "total": len(rows)})
    atomic_write_text(args.out / "bad_inputs.md", markdown(rows))
    print(f"{ok}/{len(rows)} ok -> {args.out / 'bad_inputs.md'}")
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
