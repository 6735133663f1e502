"""Collect the NEU-Seg results into a results folder: JSON, Markdown tables and plots.

Reads the run folders the real-data commands wrote (nothing is recomputed here):

    experiments/neu64/gpu_neu.sh                 -> runs/compare_neu64   (generators + samples, on a GPU)
    defectgen compare --config experiments/neu64/compare_neu64.yaml --out runs/compare_neu64 --only score
    defectgen ablate  --config experiments/neu64/ablate_neu64.yaml --out runs/ablate_neu64 \
        --set sources.defectgen=runs/compare_neu64/rows/two-stage-u0.40/samples
    python experiments/neu64/neu_results.py                                   # -> experiments/neu64/results/gpu

    defectgen compare --config experiments/neu64/compare_neu64_cpu.yaml --out runs/compare_neu64_cpu
    defectgen compare --config experiments/neu64/compare_neu64_cpu_eps.yaml --out runs/compare_neu64_cpu_eps
    experiments/neu64/neu_filter.sh runs/compare_neu64_cpu/rows/two-stage-u0.40/samples \
        runs/compare_neu64_cpu/rows/real-only/eval.json runs/filter/cpu-u0.40
    python experiments/neu64/neu_results.py --compare runs/compare_neu64_cpu --ablate none --out experiments/neu64/results/cpu \
        --extra eps=runs/compare_neu64_cpu_eps --filtered runs/filter/cpu-u0.40

``--extra NAME=COMPARE_DIR`` adds another comparison's rows (e.g. another prediction type),
``--filtered DIR`` a ``experiments/neu64/neu_filter.sh`` output and ``--samples LABEL=DIR`` any sample folder
(e.g. the same generator sampled with all 1000 steps) to the diagnostics table.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from defectgen.data import load_pairs, open_dataset, read_stem_list
from defectgen.data.samples import is_complete, read_manifest
from defectgen.io import atomic_write_json, atomic_write_text
from defectgen.quality.texture import defect_share, fine_texture


def stage_timings(run: Path) -> dict[str, dict[str, float]]:
    out = {}
    for stage in ("large", "small"):
        log = run / stage / "log.jsonl"
        if not log.is_file():
            continue
        lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln]
        first, last = lines[0], lines[-1]
        per_step = (last["seconds"] - first["seconds"]) / max(last["step"] - first["step"], 1)
        out[stage] = {"steps": last["step"], "seconds_per_step": round(per_step, 4),
                      "final_loss": round(last["loss"], 5)}
    return out


def class_shares(pixels: dict[str, int]) -> dict[str, float]:
    total = sum(pixels.values())
    return {k: v / total for k, v in pixels.items()}


def class_proportions(compare: Path) -> dict[str, dict[str, float]]:
    """Share of pixels per class: the training masks vs every row's samples."""
    import yaml

    cfg = yaml.safe_load((compare / "config.yaml").read_text())
    ds = open_dataset(cfg["data"])
    stems = read_stem_list(Path(cfg["list_file"]))
    _, masks = load_pairs([ds.by_stem(s) for s in stems], ds.class_map, 64)
    counts = np.bincount(masks.ravel(), minlength=ds.class_map.num_classes)
    table = {"real (training)": class_shares({n: int(counts[i]) for i, n in enumerate(ds.class_map.names)})}
    for manifest in sorted((compare / "rows").glob("*/samples/manifest.json")):
        m = json.loads(manifest.read_text())
        total = {n: 0 for n in ds.class_map.names}
        for s in m["samples"]:
            for n, c in (s.get("class_pixels") or {}).items():
                total[n] += c
        table[manifest.parent.parent.name] = class_shares(total)
    return table


def set_stats(images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    return {"n": int(len(images)), "texture": fine_texture(images), "defect_share": defect_share(masks)}


def folder_stats(samples: Path) -> dict[str, float]:
    syn = open_dataset(samples, "index")
    return set_stats(*load_pairs(syn.records, syn.class_map, 64))


def real_stats(compare: Path) -> dict[str, dict[str, float]]:
    """Reference rows: the training images and the first 100 test images."""
    import yaml

    cfg = yaml.safe_load((compare / "config.yaml").read_text())
    ds = open_dataset(cfg["data"])
    train = [ds.by_stem(s) for s in read_stem_list(Path(cfg["list_file"]))]
    test = [ds.by_stem(s) for s in ds.splits["test"][:100]]
    return {"real (training)": set_stats(*load_pairs(train, ds.class_map, 64)),
            "real (test, first 100)": set_stats(*load_pairs(test, ds.class_map, 64))}


def gain(eval_json: Path) -> dict[str, float | None]:
    g = (json.loads(eval_json.read_text()).get("paired_gain") or {}).get("miou_defect") or {} if eval_json.is_file() else {}
    return {"gain": g.get("mean"), "gain_ci_low": g.get("ci_low"), "gain_ci_high": g.get("ci_high")}


def diagnostics(compares: list[tuple[str, Path]], filtered: list[Path],
                samples: list[tuple[str, Path]] = ()) -> dict[str, dict[str, float | None]]:
    """Per sample set: fine texture and defect area next to FID, memorisation, mask agreement and the gain."""
    out = real_stats(compares[0][1])
    for label, cmp in compares:
        for r in json.loads((cmp / "results.json").read_text()):
            folder = cmp / "rows" / r["row"] / "samples"
            if r["kind"] == "baseline" or not is_complete(folder):
                continue
            keep = ("fid", "memorised_pixel", "mask_agreement", "gain", "gain_ci_low", "gain_ci_high")
            out[label + r["row"]] = {**folder_stats(folder), **{k: r.get(k) for k in keep}}
    for f in filtered:
        info = read_manifest(f / "samples")["filter"]
        name = f"{Path(info['source']).parent.name} filtered (agreement >= {info['min_agreement']}, " \
               f"{info['n_kept']}/{info['n_in']} kept)"
        out[name] = {**folder_stats(f / "samples"), **gain(f / "eval" / "results.json")}
    for label, folder in samples:
        out[label] = folder_stats(folder)
    return out


def diagnostics_markdown(table: dict[str, dict[str, float | None]]) -> str:
    def f(v, fmt, scale=1.0):
        return "–" if v is None else format(scale * v, fmt)

    lines = ["| set | pairs | defect pixels | fine texture | FID* | memorised (pix) | mask agr. | gain [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in table.items():
        g = "–" if r.get("gain") is None else (
            f"{100 * r['gain']:+.1f} [{f(r.get('gain_ci_low'), '+.1f', 100)}, {f(r.get('gain_ci_high'), '+.1f', 100)}]")
        lines.append(f"| {name} | {r['n']} | {100 * r['defect_share']:.1f}% | {r['texture']:.1f} | {f(r.get('fid'), '.0f')} "
                     f"| {f(r.get('memorised_pixel'), '.1f', 100)}{'%' if r.get('memorised_pixel') is not None else ''} | {f(r.get('mask_agreement'), '.1f', 100)} | {g} |")
    return "\n".join(lines)


def proportions_markdown(table: dict[str, dict[str, float]]) -> str:
    names = [n for n in next(iter(table.values())) if n != "others"]
    head = "| set | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    return head + "\n".join(f"| {row} | " + " | ".join(f"{100 * v[n]:.1f}%" for n in names) + " |"
                            for row, v in table.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", type=Path, default=Path("runs/compare_neu64"))
    ap.add_argument("--ablate", type=Path, default=Path("runs/ablate_neu64"), help="'none' for no ablation")
    ap.add_argument("--out", type=Path, default=Path("experiments/neu64/results/gpu"))
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=COMPARE_DIR",
                    help="another comparison's rows in the diagnostics table, labelled NAME")
    ap.add_argument("--filtered", action="append", default=[], type=Path, metavar="DIR",
                    help="an experiments/neu64/neu_filter.sh output folder")
    ap.add_argument("--samples", action="append", default=[], metavar="LABEL=DIR",
                    help="any other sample folder (texture and defect area only)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extras = [(name + ": ", Path(d)) for name, d in (e.split("=", 1) for e in args.extra)]
    gen = {"timings": stage_timings(args.compare / "generator"),
           "sampling": {}, "class_pixel_share": class_proportions(args.compare)}
    for manifest in sorted((args.compare / "rows").glob("*/samples/manifest.json")):
        m = json.loads(manifest.read_text())
        if "seconds_per_sample" in m:
            gen["sampling"][manifest.parent.parent.name] = {
                "seconds_per_sample": m["seconds_per_sample"], "steps": m["steps"], "sampler": m["sampler"]}
    gen["extra_timings"] = {name.rstrip(": "): stage_timings(d / "generator") for name, d in extras}
    samples = [(label, Path(d)) for label, d in (e.split("=", 1) for e in args.samples)]
    gen["diagnostics"] = diagnostics([("", args.compare), *extras], args.filtered, samples)
    atomic_write_json(args.out / "generator.json", gen)
    md = [f"# NEU-Seg, 10 images per class, 64 px ({args.compare})\n", "## Generator training\n",
          "| run | stage | steps | s/step | final loss |", "|---|---|---|---|---|"]
    for run, timings in {"main": gen["timings"], **gen["extra_timings"]}.items():
        md += [f"| {run} | {k} | {v['steps']} | {v['seconds_per_step']} | {v['final_loss']} |" for k, v in timings.items()]
    md += ["", "## Sampling\n", "| row | sampler | steps | s/pair |", "|---|---|---|---|"]
    md += [f"| {k} | {v['sampler']} | {v['steps']} | {v['seconds_per_sample']} |" for k, v in gen["sampling"].items()]
    md += ["", "## Class pixel shares: training masks vs samples\n", proportions_markdown(gen["class_pixel_share"]), ""]
    md += ["## Diagnostics: fine texture (mean |Laplacian| of the grey image, 64 px), defect area and the gain\n",
           diagnostics_markdown(gen["diagnostics"]), ""]
    for src, name in ((args.compare / "report.md", "compare"), (args.ablate / "report.md", "ablation"),
                      *((d / "report.md", f"compare: {n.rstrip(': ')}") for n, d in extras)):
        if src.is_file():
            md += [f"## {name}\n", src.read_text().split("\n", 1)[1].strip(), ""]
    for src in (args.compare / "results.csv", args.compare / "gain_vs_switch.png",
                args.compare / "memorisation_vs_switch.png", args.ablate / "summary.csv",
                args.ablate / "miou_vs_ratio.png", args.compare / "rows/two-stage-u0.40/samples/grid.png",
                *(d / "rows/two-stage-u0.40/samples/grid.png" for _, d in extras)):
        if src.is_file():
            name = src.name if src.name != "grid.png" else f"samples_{src.parents[3].name}_two_stage_u0.40.png"
            shutil.copyfile(src, args.out / (f"{src.parent.name}_{name}" if src.suffix == ".csv" else name))
    atomic_write_text(args.out / "README.md", "\n".join(md) + "\n")
    print((args.out / "README.md").read_text())


if __name__ == "__main__":
    main()
