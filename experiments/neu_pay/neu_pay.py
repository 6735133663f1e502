"""Issue 9's decisions and tables: which settings were chosen on val, and the one test scoring.

Called by experiments/neu_pay/neu_pay.sh between its stages; every decision goes to the protocol log
(``defectgen.seg.protocol``) with the val numbers it was made from, before any test cell runs.

    python experiments/neu_pay/neu_pay.py steps --log L --model M                 # print the chosen seg.steps
    python experiments/neu_pay/neu_pay.py choose --val DIR --model M --log L      # choose synthetic set, usage and ratio on val
    python experiments/neu_pay/neu_pay.py usage-sets|set-of --model M --log L   # read a decision back
    python experiments/neu_pay/neu_pay.py choose-generator --val DIR --reference DIR:SOURCE --model M --log L   # round 2
    python experiments/neu_pay/neu_pay.py choose-ratio --val DIR --source S --model M --log L                  # round 2, last
    python experiments/neu_pay/neu_pay.py final --test DIR [--test DIR] --val DIR [--val DIR] --log L --out experiments/neu_pay/results

``final`` records the test scoring in the log (once per model), writes ``headline.{csv,md}``,
``val_decisions.md``, ``gain_vs_ratio.png`` (val, per usage mode), ``gain_per_lever.png`` (val) and
one ``.npz`` (uint8 images and masks) per synthetic set of the headline table.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from defectgen import logs
from defectgen.config import ConfigError
from defectgen.io import atomic_write_bytes, atomic_write_text
from defectgen.seg.protocol import log_decision, log_final, read_decision, read_protocol

SOURCE = "defectgen"  # the Defect-Gen source of the val ablations (round 1: the CPU generator's set)
ROUND2 = "defectgen-r2"  # round 2 (experiments/neu_pay/neu_levers.sh): the set chosen on val among the generator levers
ROW_ORDER = ["real", "copy-paste", "vanilla-ddpm", "defectgen-unconditional", SOURCE, "vanilla-ddpm-r2", ROUND2]
ROW_NAMES = {
    "real": "real only",
    "copy-paste": "copy-paste",
    "vanilla-ddpm": "vanilla DDPM (large UNet alone, unconditional), CPU generator",
    "defectgen-unconditional": "Defect-Gen two-stage, unconditional",
    SOURCE: "Defect-Gen, round 1 chosen setting (CPU generator)",
    "vanilla-ddpm-r2": "vanilla DDPM (large UNet alone, unconditional), round 2 generator",
    ROUND2: "Defect-Gen, round 2 chosen set (generator levers, then switch)",
}
DEFECTGEN_ROWS = (SOURCE, ROUND2)


def summary(folder: Path) -> list[dict]:
    """The rows of an ablation's summary.csv with numbers parsed."""
    path = Path(folder) / "summary.csv"
    if not path.is_file():
        raise ConfigError(f"{path}: missing; run the ablation first")
    rows = []
    for r in csv.DictReader(path.open()):
        rows.append({k: (float(v) if v not in ("", None) and k not in ("model", "source", "usage") else (v or None))
                     for k, v in r.items()})
    return rows


def ablation_config(folder: Path) -> dict:
    return yaml.safe_load((Path(folder) / "config.yaml").read_text())


def decision(log: Path, name: str) -> dict:
    """The newest entry of decision ``name`` in the protocol log."""
    try:
        return read_decision(log, name)
    except ConfigError as err:
        raise ConfigError(f"{err} (run the earlier stage of experiments/neu_pay/neu_pay.sh)") from None


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f}"


def cmd_steps(args) -> int:
    print(int(decision(args.log, f"seg.steps[{args.model}]")["chosen"]))
    return 0


def cmd_choose(args) -> int:
    """Best (synthetic set, usage, ratio) by mean paired val gain in defect mIoU; ties: unfiltered, smaller ratio."""
    rows = [r for r in summary(args.val) if r["model"] == args.model and r["ratio"] > 0]
    if not rows or any(r["seeds"] < 2 for r in rows):
        raise ConfigError(f"{args.val}: the val grid for {args.model} is not finished")
    best = max(rows, key=lambda r: (r["gain_miou_defect"], r["source"] == SOURCE, -r["ratio"]))
    cfg = ablation_config(args.val)
    usages = {u_label(u): u for u in cfg["usages"]}
    evidence = {f"{r['source']}, {r['usage']}, r{r['ratio']:g}": {
        "gain": r["gain_miou_defect"], "ci": [r["gain_miou_defect_ci_low"], r["gain_miou_defect_ci_high"]],
        "seeds": int(r["seeds"])} for r in rows}
    rule = "largest mean paired gain in val defect mIoU over real-only (ties: unfiltered set, smaller ratio)"
    where = str(Path(args.val) / "summary.csv")
    log_decision(args.log, f"usage[{args.model}]", {"usage": usages[best["usage"]], "ratio": best["ratio"]},
                 split="val", rule=rule, evidence=evidence, source=where)
    log_decision(args.log, f"synthetic_set[{args.model}]", cfg["sources"][best["source"]], split="val", rule=rule,
                 evidence=evidence, source=where,
                 note="used for every segmentation model: the pretrained baseline's val grid was not run (CPU time)")
    print(f"chosen on val: {best['source']}, {best['usage']}, ratio {best['ratio']:g}: "
          f"{pct(best['gain_miou_defect'])} points")
    return 0


def cmd_choose_generator(args) -> int:
    """Round 2: the set (generator, sampler, switch) that gains most on val (the round-1 usage and ratio) among
    a val grid's sources and a reference set of an earlier grid; ties keep the reference."""
    ref_dir, ref_source = str(args.reference).rsplit(":", 1)
    usage = decision(args.log, f"usage[{args.model}]")["chosen"]
    label, ratio = u_label(usage["usage"]), float(usage["ratio"])

    def rows_of(folder: Path, sources: list[str] | None) -> dict[str, dict]:
        sources = sources or list(ablation_config(folder)["sources"])
        rows = {r["source"]: r for r in summary(folder) if r["model"] == args.model and r["usage"] == label
                and r["ratio"] == ratio and r["source"] in sources}
        unfinished = [name for name in sources if name not in rows or rows[name]["seeds"] < 3]
        if not rows or unfinished:
            raise ConfigError(f"{folder}: the val grid for {args.model} is not finished ({', '.join(unfinished) or 'empty'})")
        return rows

    cands = {f"{ref_source} (reference)": (rows_of(Path(ref_dir), [ref_source])[ref_source],
                                            ablation_config(ref_dir)["sources"][ref_source])}
    cfg = ablation_config(args.val)
    cands.update({name: (r, cfg["sources"][name]) for name, r in rows_of(args.val, None).items()})
    best = max(cands, key=lambda n: (cands[n][0]["gain_miou_defect"], n.endswith("(reference)")))
    evidence = {n: {"gain": r["gain_miou_defect"], "ci": [r["gain_miou_defect_ci_low"], r["gain_miou_defect_ci_high"]],
                    "seeds": int(r["seeds"])} for n, (r, _) in cands.items()}
    log_decision(args.log, f"{args.decision}[{args.model}]", {"source": best, "folder": cands[best][1]}, split="val",
                 rule=f"largest mean paired gain in val defect mIoU over real-only ({label}, ratio {ratio:g}; "
                      "ties: the reference set)", evidence=evidence, source=str(Path(args.val) / "summary.csv"))
    print(best.split(" ")[0], cands[best][1])  # source name and folder
    return 0


def cmd_choose_ratio(args) -> int:
    """Round 2, last: the ratio of the chosen set with the largest mean paired val gain (ties: the smaller ratio)."""
    label = u_label(decision(args.log, f"usage[{args.model}]")["chosen"]["usage"])
    rows = {r["ratio"]: r for r in summary(args.val) if r["model"] == args.model and r["source"] == args.source
            and r["usage"] == label and r["ratio"] > 0}
    wanted = [float(r) for r in ablation_config(args.val)["ratios"] if float(r) > 0]
    if any(r not in rows or rows[r]["seeds"] < 3 for r in wanted):
        raise ConfigError(f"{args.val}: the ratio grid of {args.source} is not finished")
    best = max(rows, key=lambda r: (rows[r]["gain_miou_defect"], -r))
    evidence = {f"{args.source}, {label}, r{r:g}": {"gain": x["gain_miou_defect"], "seeds": int(x["seeds"]),
                "ci": [x["gain_miou_defect_ci_low"], x["gain_miou_defect_ci_high"]]} for r, x in sorted(rows.items())}
    log_decision(args.log, f"ratio[{args.model}]", best, split="val", source=str(Path(args.val) / "summary.csv"),
                 rule="largest mean paired gain in val defect mIoU over real-only (ties: the smaller ratio)",
                 evidence=evidence)
    print(f"{best:g}")
    return 0


def usage_sets(chosen: dict) -> list[str]:
    """The ablate --set arguments of a usage decision (no spaces: they travel through the shell)."""
    return ["--set", f"usages=[{json.dumps(chosen['usage'], separators=(',', ':'))}]",
            "--set", f"ratios=0,{chosen['ratio']:g}"]


def cmd_usage_sets(args) -> int:
    print(" ".join(usage_sets(decision(args.log, f"usage[{args.model}]")["chosen"])))
    return 0


def cmd_set_of(args) -> int:
    print(decision(args.log, f"synthetic_set[{args.model}]")["chosen"])
    return 0


def u_label(u: dict) -> str:
    """UsageConfig.label() of a usage entry of an ablation config."""
    from defectgen.seg.usage import UsageConfig

    return UsageConfig(**u).label()


# ---- final tables ------------------------------------------------------------------------------


def cell_seconds(folder: Path) -> float:
    """Mean segmenter training seconds per cell of an ablation."""
    secs = [json.loads(p.read_text()).get("train_seconds", 0.0) for p in (Path(folder) / "cells").glob("*.json")]
    return float(np.mean(secs)) if secs else float("nan")


def headline(tests: list[Path], log: Path) -> list[dict]:
    out = []
    for folder in tests:
        cfg = ablation_config(folder)
        model = cfg["models"][0]
        usage = cfg["usages"][0]
        for r in summary(folder):
            out.append({
                "model": model, "row": r["source"], "name": ROW_NAMES.get(r["source"], r["source"]),
                "usage": u_label(usage) if r["ratio"] > 0 else "", "ratio": r["ratio"], "seeds": int(r["seeds"]),
                "steps": cfg["seg"]["steps"], "synthetic_folder": cfg["sources"].get(r["source"], ""),
                "miou_defect": r["miou_defect_mean"], "miou_defect_std": r["miou_defect_std"],
                "miou_all": r["miou_all_mean"],
                "gain": r["gain_miou_defect"], "ci_low": r["gain_miou_defect_ci_low"], "ci_high": r["gain_miou_defect_ci_high"],
                "train_seconds_per_cell": cell_seconds(folder),
            })
    out = [r for i, r in enumerate(out)  # a round-2 folder repeats round 1's real-only cells: one row each
           if r["row"] != "real" or not any(q["row"] == "real" and q["model"] == r["model"] for q in out[:i])]
    out.sort(key=lambda r: (r["model"], ROW_ORDER.index(r["row"]) if r["row"] in ROW_ORDER else 99, r["ratio"]))
    return out


def headline_md(rows: list[dict]) -> str:
    lines = ["| model | training data | usage, ratio | seeds | defect mIoU (test) | gain over real only [95% CI] |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ci = "" if r["ci_low"] is None else f" [{pct(r['ci_low'])}, {pct(r['ci_high'])}]"
        gain = "–" if r["gain"] is None else pct(r["gain"]) + ci
        use = "–" if not r["ratio"] else f"{r['usage']}, {r['ratio']:g}"
        std = "" if r["miou_defect_std"] is None else f" ± {100 * r['miou_defect_std']:.1f}"
        lines.append(f"| {r['model']} ({r['steps']} steps) | {r['name']} | {use} | {r['seeds']} "
                     f"| {100 * r['miou_defect']:.1f}{std} | {gain} |")
    return "\n".join(lines) + "\n"


def versus_baselines(tests: list[Path]) -> str:
    """Defect-Gen minus each other test row, paired by seed (defect mIoU points, 95% t-interval)."""
    from defectgen.seg.stats import paired_gain

    lines = ["| model | Defect-Gen row | minus | ratio | seeds | difference [95% CI] |", "|---|---|---|---|---|---|"]
    for folder in tests:
        by: dict[str, dict[int, float]] = {}
        ratio = next(float(r) for r in ablation_config(folder)["ratios"] if float(r) > 0)  # one per test folder
        for path in sorted((Path(folder) / "cells").glob("*.json")):
            c = json.loads(path.read_text())
            by.setdefault(c["cell"]["source"], {})[c["seed"]] = c["metrics"]["miou_defect"]
        model = ablation_config(folder)["models"][0]
        for mine in [src for src in DEFECTGEN_ROWS if src in by]:
            for other in [src for src in ROW_ORDER if src in by and src != mine]:
                seeds = sorted(set(by[mine]) & set(by[other]))
                g = paired_gain([by[mine][i] for i in seeds], [by[other][i] for i in seeds])
                lines.append(f"| {model} | {ROW_NAMES[mine]} | {ROW_NAMES[other]} | {ratio:g} | {len(seeds)} "
                             f"| {pct(g['mean'])} [{pct(g['ci_low'])}, {pct(g['ci_high'])}] |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def decisions_md(log: Path) -> str:
    lines = ["| # | decision | chosen | split | rule | evidence (val) |", "|---|---|---|---|---|---|"]
    for i, e in enumerate(read_protocol(log), 1):
        if e.get("kind") == "decision":
            ev = e["evidence"]
            ev_s = "; ".join(f"{k}: {_ev(v)}" for k, v in ev.items()) if isinstance(ev, dict) else str(ev)
            lines.append(f"| {i} | {e['decision']} | `{json.dumps(e['chosen'])}` | {e['split']} | {e['rule']} | {ev_s} |")
        else:
            lines.append(f"| {i} | **test scored once**: {e['what']} | – | {e['split']} | after decisions "
                         f"{', '.join(e['decisions_before'])} | {e['results']} |")
    return "\n".join(lines) + "\n"


def _ev(v) -> str:
    if isinstance(v, dict) and "gain" in v:
        ci = v.get("ci") or [None, None]
        return f"{pct(v['gain'])}" + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci[0] is not None else "")
    if isinstance(v, float):
        return f"{100 * v:.1f}" if v <= 1 else f"{v:g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_ev(x)}" for k, x in v.items())
    return str(v)


def plot_gain_vs_ratio(vals: list[Path]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(vals), figsize=(4.6 * len(vals), 3.6), squeeze=False)
    for ax, folder in zip(axes[0], vals):
        rows = [r for r in summary(folder) if r["ratio"] > 0]
        for line in dict.fromkeys((r["source"], r["usage"]) for r in rows):
            pts = sorted((r for r in rows if (r["source"], r["usage"]) == line), key=lambda r: r["ratio"])
            xs = [0] + [r["ratio"] for r in pts]
            ys = [0] + [100 * r["gain_miou_defect"] for r in pts]
            lo = [0] + [100 * (r["gain_miou_defect"] - r["gain_miou_defect_ci_low"]) for r in pts]
            hi = [0] + [100 * (r["gain_miou_defect_ci_high"] - r["gain_miou_defect"]) for r in pts]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=", ".join(line))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(ablation_config(folder)["models"][0], fontsize=9)
        ax.set_xlabel("synthetic pairs per real pair")
        ax.set_ylabel("val gain, defect mIoU (points)")
        ax.legend(fontsize=7)
    fig.suptitle("Defect-Gen pairs (into-training, model masks) on NEU val: gain vs ratio per set and usage mode",
                 fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def lever_rows(levers: list[str]) -> list[tuple[str, float, float, float]]:
    """(label, gain, ci_low, ci_high) in points from 'LABEL=FOLDER[:MODEL:SOURCE:USAGE:RATIO]' specs."""
    out = []
    for spec in levers:
        label, rest = spec.split("=", 1)
        parts = rest.split(":")
        folder = Path(parts[0])
        if (folder / "summary.csv").is_file():
            model, source, usage, ratio = parts[1], parts[2], parts[3], float(parts[4])
            r = next(r for r in summary(folder) if r["model"] == model and r["source"] == source
                     and r["usage"] == usage and r["ratio"] == ratio)
            g, lo, hi = r["gain_miou_defect"], r["gain_miou_defect_ci_low"], r["gain_miou_defect_ci_high"]
        else:  # evaluate folders with a paired gain (experiments/neu_guided/neu_guided_val.sh), pooled over seeds
            g, lo, hi = pooled_gain([Path(p) for p in parts])
        out.append((label, 100 * g, 100 * lo, 100 * hi))
    return out


def pooled_gain(folders: list[Path]) -> tuple[float, float, float]:
    from defectgen.seg.stats import paired_gain

    vals, base = [], []
    for f in folders:
        res = json.loads((f / "results.json").read_text())
        base_path = (res.get("paired_gain") or {}).get("baseline") or f / ".." / "real-only" / "results.json"
        ref = json.loads(Path(base_path).read_text())  # the evaluate run's baseline, else its real-only sibling
        by = {s["seed"]: s["metrics"]["miou_defect"] for s in ref["per_seed"]}
        for s in res["per_seed"]:
            vals.append(s["metrics"]["miou_defect"])
            base.append(by[s["seed"]])
    g = paired_gain(vals, base)
    return g["mean"], g["ci_low"], g["ci_high"]


def plot_levers(rows: list[tuple[str, float, float, float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ys = np.arange(len(rows))[::-1]
    for y, (label, g, lo, hi) in zip(ys, rows):
        ax.errorbar([g], [y], xerr=[[g - lo], [hi - g]], fmt="o", capsize=3, color="C0" if lo > 0 else "C1")
    ax.set_yticks(ys, [r[0] for r in rows], fontsize=7)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("val gain over real only, defect mIoU points\n(95% CI), DeepLabV3+-R18")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_npz(folder: Path, out: Path, size: int = 64) -> int:
    from defectgen.data import load_pairs, open_dataset

    ds = open_dataset(folder, "index")
    images, masks = load_pairs(ds.records, ds.class_map, size)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images.astype(np.uint8), masks=masks.astype(np.uint8),
                        stems=np.array([r.stem for r in ds.records]), class_names=np.array(ds.class_map.names))
    atomic_write_bytes(out, buf.getvalue())
    return out.stat().st_size


def cmd_final(args) -> int:
    out = Path(args.out)
    tests = [*args.test, *args.test_r2]
    for folder in tests:
        cfg = ablation_config(folder)
        what = f"{'round 2: ' if folder in args.test_r2 else ''}headline table, {cfg['models'][0]}"
        if cfg.get("test_split") != "test":
            raise ConfigError(f"{folder}: not a test-split ablation")
        if not any(e.get("kind") == "final" and e.get("what") == what for e in read_protocol(args.log)):
            log_final(args.log, what, split="test", results=str(Path(folder) / "summary.csv"),
                      note="scored once with the val-chosen settings; the ablation folder is resumable, never re-scored")
    rows = headline(tests, args.log)
    atomic_write_text(out / "headline.csv", to_csv(rows))
    atomic_write_text(out / "headline.md", headline_md(rows) + "\nPaired by seed against the other rows:\n\n"
                      + versus_baselines(tests))
    atomic_write_text(out / "val_decisions.md", "# Protocol log, in order (experiments/neu_pay/results/protocol.jsonl)\n\n"
                      + decisions_md(args.log))
    if args.val:
        atomic_write_bytes(out / "gain_vs_ratio.png", plot_gain_vs_ratio(args.val))
    if args.lever:  # added to the levers of earlier calls (levers.json), so each round's script adds its own
        known = json.loads((out / "levers.json").read_text()) if (out / "levers.json").is_file() else {}
        known.update({label: [g, lo, hi] for label, g, lo, hi in lever_rows(args.lever)})
        atomic_write_text(out / "levers.json", json.dumps(known, indent=1))
        levers = [(label, *v) for label, v in known.items()]
        atomic_write_bytes(out / "gain_per_lever.png", plot_levers(levers))
        atomic_write_text(out / "levers.md", "| lever (val, DeepLabV3+-R18) | gain [95% CI] |\n|---|---|\n" + "\n".join(
            f"| {label} | {g:+.1f} [{lo:+.1f}, {hi:+.1f}] |" for label, g, lo, hi in levers) + "\n")
    sizes, written = {}, set()
    for r in rows:  # one file per set: a set scored at two ratios, or in both rounds, is written once
        if r["synthetic_folder"] and r["synthetic_folder"] not in written:
            written.add(r["synthetic_folder"])
            sizes[r["row"]] = write_npz(Path(r["synthetic_folder"]), out / f"pairs_{r['row']}.npz")
    print(headline_md(rows))
    print("npz sizes (bytes):", sizes)
    return 0


def cmd_quality(args) -> int:
    """Texture, defect area, FID*, mask agreement and memorisation of sample sets, as experiments/neu_guided/neu_guided.py scores them."""
    from defectgen.data import load_pairs, open_dataset
    from defectgen.guided import training_pairs
    from defectgen.quality.compute import MetricsConfig, evaluate
    from defectgen.quality.texture import defect_share, laplacian_magnitude
    from defectgen.run import load_generator

    pipe = load_generator(args.run)
    size = pipe.unet.config.sample_size
    real_images, real_masks, _ = training_pairs(args.run, pipe.class_map, size)
    path = Path(args.out) / "quality.json"
    rows = json.loads(path.read_text()) if path.is_file() else {}
    for spec in args.set:
        name, folder = spec.split("=", 1)
        if name in rows:
            continue
        syn = open_dataset(Path(folder), "index")
        images, masks = load_pairs(syn.records, syn.class_map, size)
        q = evaluate(real_images, real_masks, images, masks, pipe.class_map.names, MetricsConfig(size=size)).metrics
        rows[name] = {"folder": folder, "n": len(images), "texture": float(laplacian_magnitude(images).mean()),
                      "defect_share": defect_share(masks), "fid": q["fid_kid"]["fid"],
                      "mask_agreement": q["mask_agreement"]["mean_iou_defects"],
                      "memorised_pixel": q["memorisation"]["pixel"]["share_memorised"]}
        atomic_write_text(path, json.dumps(rows, indent=1))
        print(name, rows[name], flush=True)
    lines = ["| set | pairs | fine texture | defect pixels | FID* | mask agr. | memorised (pix) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {r['n']} | {r['texture']:.1f} | {100 * r['defect_share']:.1f}% | {r['fid']:.0f} "
              f"| {100 * r['mask_agreement']:.1f} | {100 * r['memorised_pixel']:.0f}% |" for n, r in rows.items()]
    atomic_write_text(Path(args.out) / "quality.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, func in (("steps", cmd_steps), ("usage-sets", cmd_usage_sets),
                       ("set-of", cmd_set_of)):
        s = sub.add_parser(name)
        s.add_argument("--model", required=True)
        s.set_defaults(func=func)
    s = sub.add_parser("choose")
    s.add_argument("--val", type=Path, required=True)
    s.add_argument("--model", required=True)
    s.set_defaults(func=cmd_choose)
    s = sub.add_parser("choose-generator")
    s.add_argument("--val", type=Path, required=True, help="the levers' val ablation")
    s.add_argument("--reference", required=True, help="ABLATION:SOURCE of the set to beat (same protocol)")
    s.add_argument("--decision", default="generator", choices=["generator", "switch"])
    s.add_argument("--model", required=True)
    s.set_defaults(func=cmd_choose_generator)
    s = sub.add_parser("choose-ratio")
    s.add_argument("--val", type=Path, required=True, help="the ratio grid of the chosen set")
    s.add_argument("--source", required=True)
    s.add_argument("--model", required=True)
    s.set_defaults(func=cmd_choose_ratio)
    s = sub.add_parser("final")
    s.add_argument("--test-r2", type=Path, action="append", default=[], help="round 2's test folders (experiments/neu_pay/neu_levers.sh)")
    s.add_argument("--test", type=Path, action="append", required=True)
    s.add_argument("--val", type=Path, action="append", default=[])
    s.add_argument("--lever", action="append", default=[], help="LABEL=ABLATION:MODEL:SOURCE:USAGE:RATIO or LABEL=EVAL1:EVAL2")
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=cmd_final)
    s = sub.add_parser("quality")
    s.add_argument("--run", type=Path, default=Path("runs/neu_cpu_gen"))
    s.add_argument("--set", action="append", required=True, metavar="NAME=FOLDER")
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=cmd_quality)
    for s in sub.choices.values():
        s.add_argument("--log", type=Path, required=True, help="protocol log (JSON lines)")
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"neu_pay: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    logs.configure()  # the library's [data]/[defectgen] lines, as the command line shows them
    sys.exit(main())
