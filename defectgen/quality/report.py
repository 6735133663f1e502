"""What ``defectgen metrics`` leaves in its output folder.

- ``metrics.json``: every number, the feature-extractor label, sample counts, the settings;
- ``metrics.md``: the headline table a person reads first;
- ``nearest_neighbours.png``: the generated samples closest to a training image, beside that image;
- ``class_stats.png``: class frequency and defect-area histograms, real vs generated.

All files are written atomically; NaN (a metric with no defined value) is written as JSON null.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from defectgen.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from defectgen.tables import fmt, png_bytes, pyplot


def json_safe(obj: Any) -> Any:
    """Plain JSON types; NaN and infinities become null (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def render_markdown(m: dict[str, Any]) -> str:
    """The human summary of a metrics dict produced by :func:`defectgen.quality.compute.evaluate`."""
    fe = m["feature_extractor"]
    fk, mem, div = m["fid_kid"], m["memorisation"], m["diversity"]
    n = m["counts"]
    lines = [
        "# Generation quality",
        "",
        f"Real (training subset): {n['n_real']} pairs · generated: {n['n_generated']} pairs · compare size {m['config']['size']} px",
        "",
        f"FID/KID features: **{fe['feature_extractor']}** — {fe['note']}.",
        f"Memorisation and diversity features: {fe['memorisation_features']} (offline).",
        "",
        "| metric | value | reading |",
        "|---|---|---|",
        f"| FID | {fmt(fk['fid'])} | lower = closer to the real set; biased upwards at small n |",
        f"| KID (subset {fk['kid_subset_size']}) | {fmt(fk['kid_mean'])} ± {fmt(fk['kid_std'], 2)} | lower = closer; ≈0 for same distribution |",
    ]
    for space, label in (("pixel", "pixel RMSE"), ("feature", "feature cosine")):
        s = mem[space]
        lines.append(
            f"| memorised share ({label}) | {fmt(s['share_memorised'], 3)} ({s['n_memorised']}/{n['n_generated']}) "
            f"| NN distance ≤ {s['threshold_percentile']:g}th pct of train LOO NN ({fmt(s['threshold'], 3)}); ≈{s['threshold_percentile'] / 100:g} expected without copying |"
        )
        lines.append(
            f"| NN distance to train, median ({label}) | {fmt(s['nn_distance_median'], 3)} "
            f"| train LOO NN median {fmt(s['train_loo_nn_median'], 3)} |"
        )
    ic = div["intra_cluster"]
    lines += [
        f"| diversity: mean pairwise distance | {fmt(div['mean_pairwise'], 3)} | training set: {fmt(div['train_mean_pairwise'], 3)} |",
        f"| diversity: intra-cluster (IC-LPIPS-style) | {fmt(ic['value'], 3)} | {ic['n_groups_used']} of {ic['n_groups']} clusters with ≥2 samples |",
    ]
    ma = m["mask_agreement"]
    if "skipped" in ma:
        lines.append(f"| mask agreement | – | skipped: {ma['skipped']} |")
    else:
        lines.append(f"| mask agreement, mean defect IoU | {fmt(ma['mean_iou_defects'], 3)} | real-data segmenter vs generated mask |")
    cs = m["class_stats"]
    lines.append(f"| class mix total variation | {fmt(cs['class_mix_total_variation'], 3)} | 0 = same class proportions as training |")
    lines += ["", "## Per class", "", "| class | frequency real | frequency generated | mean area real | mean area generated | area W1 | mask IoU |", "|---|---|---|---|---|---|---|"]
    for name, c in cs["classes"].items():
        if not (c["image_frequency_real"] or c["image_frequency_generated"]):
            continue
        iou = ma.get("iou", {}).get(name) if "iou" in ma else None
        lines.append(
            f"| {name} | {fmt(c['image_frequency_real'], 3)} | {fmt(c['image_frequency_generated'], 3)} "
            f"| {fmt(c['mean_area_real'], 3)} | {fmt(c['mean_area_generated'], 3)} | {fmt(c['area_wasserstein'], 3)} | {fmt(iou, 3)} |"
        )
    lines += ["", "Figures: `nearest_neighbours.png`, `class_stats.png`. All numbers: `metrics.json`.", ""]
    return "\n".join(lines)


def nearest_neighbours_png(
    generated: np.ndarray,
    train: np.ndarray,
    neighbours: dict[str, Any],
    k: int = 8,
    generated_names: Sequence[str] | None = None,
    train_names: Sequence[str] | None = None,
) -> bytes:
    """For each distance space, the ``k`` generated samples closest to a training image, above it."""
    plt = pyplot()
    spaces = list(neighbours)
    k = min(k, len(generated))
    fig, axes = plt.subplots(2 * len(spaces), k, figsize=(1.6 * k, 3.7 * len(spaces)), squeeze=False)
    for s, space in enumerate(spaces):
        nn = neighbours[space]
        order = np.argsort(nn.nn_distance, kind="stable")[:k]
        for col, g in enumerate(order):
            t = int(nn.nn_index[g])
            top, bottom = axes[2 * s, col], axes[2 * s + 1, col]
            top.imshow(generated[g], cmap="gray", vmin=0, vmax=255)
            bottom.imshow(train[t], cmap="gray", vmin=0, vmax=255)
            mark = " *" if nn.memorised[g] else ""
            gname = generated_names[g] if generated_names is not None else f"#{g}"
            tname = train_names[t] if train_names is not None else f"#{t}"
            top.set_title(f"{gname}\nd={nn.nn_distance[g]:.3f}{mark}", fontsize=7)
            bottom.set_title(f"train {tname}", fontsize=7)
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
        axes[2 * s, 0].set_ylabel(f"generated\n({nn.metric})", fontsize=8)
        axes[2 * s + 1, 0].set_ylabel("nearest\ntraining", fontsize=8)
        for col in range(len(order), k):
            axes[2 * s, col].axis("off")
            axes[2 * s + 1, col].axis("off")
    fig.suptitle("Closest generated/training pairs (* = counted as memorised)", fontsize=9)
    fig.tight_layout()
    return png_bytes(fig, dpi=100)


def class_stats_png(real: dict[str, Any], generated: dict[str, Any]) -> bytes:
    """Bar chart of class frequency and, per class, histograms of defect area (fraction of image)."""
    plt = pyplot()
    names = [n for n in real["classes"] if real["classes"][n]["area_fractions"] or generated["classes"][n]["area_fractions"]]
    names = names or list(real["classes"])
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(3.2 * (1 + len(names)), 3.0), squeeze=False)
    ax = axes[0, 0]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [real["classes"][n]["image_frequency"] for n in names], 0.4, label=f"real (n={real['n_masks']})")
    ax.bar(x + 0.2, [generated["classes"][n]["image_frequency"] for n in names], 0.4, label=f"generated (n={generated['n_masks']})")
    ax.set_xticks(x, names, rotation=30, fontsize=7)
    ax.set_ylabel("share of images with class")
    ax.set_title("class frequency", fontsize=9)
    ax.legend(fontsize=7)
    bins = np.linspace(0, 1, 21)
    for i, n in enumerate(names, start=1):
        ax = axes[0, i]
        r, g = real["classes"][n]["area_fractions"], generated["classes"][n]["area_fractions"]
        if r:
            ax.hist(r, bins=bins, density=True, alpha=0.5, label="real")
        if g:
            ax.hist(g, bins=bins, density=True, alpha=0.5, label="generated")
        ax.set_title(f"{n}: defect area", fontsize=9)
        ax.set_xlabel("fraction of image", fontsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig, dpi=100)


def write_report(
    out: Path,
    metrics: dict[str, Any],
    nearest_png: bytes,
    class_png: bytes,
) -> dict[str, Path]:
    """Write the four outputs into ``out`` (an existing folder) and return their paths."""
    out = Path(out)
    paths = {
        "json": out / "metrics.json",
        "markdown": out / "metrics.md",
        "nearest_neighbours": out / "nearest_neighbours.png",
        "class_stats": out / "class_stats.png",
    }
    safe = json_safe(metrics)
    atomic_write_bytes(paths["nearest_neighbours"], nearest_png)
    atomic_write_bytes(paths["class_stats"], class_png)
    atomic_write_text(paths["markdown"], render_markdown(safe))
    atomic_write_json(paths["json"], safe)  # last: its presence marks a complete report
    return paths
