"""``report.html``: one self-contained page over what the commands left in an output folder.

The page is a view, never a second source of numbers: it reads the files the commands already
write (``log.jsonl``, ``samples/step_*.png``, ``grid.png``, ``manifest.json``, ``metrics.json`` and
``metrics.md``, evaluate's ``results.json``, ablate's and compare's ``report.md`` and plots,
``config.yaml``, ``timing.json``) and the command lines recorded in ``commands.jsonl``. Images are
embedded as base64 data URIs, so the file opens from disk with no network. A section whose data
the folder lacks (a run without evaluation) says so instead of failing.

    defectgen demo / train / sample / evaluate / ablate / compare   write or update OUT/report.html
    python -m defectgen.report_html OUT                              rebuild it by hand
"""
from __future__ import annotations

import base64
import html
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from defectgen.data.samples import GRID, MASKS
from defectgen.io import atomic_write_text
from defectgen.tables import pct_stat, png_bytes, pyplot
from defectgen.timing import summary_line

SECTIONS = (
    ("summary", "At a glance"),
    ("timing", "Where the time went"),
    ("training", "Training curves"),
    ("progress", "Progress grids over steps"),
    ("samples", "Generated pairs"),
    ("shares", "Class pixel shares: real vs synthetic"),
    ("metrics", "Generation metrics"),
    ("evaluation", "Segmentation evaluation"),
    ("commands", "Commands and configs"),
)
SKIP_DIRS = {"images", "masks", "checkpoints", "cells", "seeds", "final", "pipeline", "data", "good"}
MAX_DEPTH = 4

logger = logging.getLogger(__name__)


# ---- finding the files ---------------------------------------------------------------------

def _walk(root: Path, depth: int = 0) -> Iterator[Path]:
    """Folders under ``root`` (itself first), skipping bulky or internal ones, in a stable order."""
    yield root
    if depth >= MAX_DEPTH:
        return
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if child.name in SKIP_DIRS or child.name.startswith("."):
            continue
        yield from _walk(child, depth + 1)


def _find(root: Path, name: str) -> list[Path]:
    return [d / name for d in _walk(root) if (d / name).is_file()]


def _rel(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return "." if rel == "." else rel


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---- HTML pieces -----------------------------------------------------------------------------

def _img(data: bytes, alt: str, width: str | None = None) -> str:
    style = f' style="max-width:{width}"' if width else ""
    return (f'<img alt="{html.escape(alt)}"{style} '
            f'src="data:image/png;base64,{base64.b64encode(data).decode()}">')


def _figure(path: Path, root: Path, width: str | None = None) -> str:
    return f'<figure>{_img(path.read_bytes(), _rel(path, root), width)}<figcaption>{html.escape(_rel(path, root))}</figcaption></figure>'


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _inline(text: str, folder: Path) -> str:
    """Markdown inline syntax the commands' reports use: images, `code`, **bold**."""
    def image(m: re.Match) -> str:
        path = folder / m.group(2)
        return _img(path.read_bytes(), m.group(1)) if path.is_file() else html.escape(m.group(0))

    out = []
    for part in re.split(r"(!\[[^\]]*\]\([^)]+\))", text):
        m = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", part)
        if m:
            out.append(image(m))
            continue
        s = html.escape(part)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
        out.append(s)
    return "".join(out)


def markdown_to_html(text: str, folder: Path) -> str:
    """The subset of Markdown the commands write (headings, tables, bullets, paragraphs, images).

    Relative image paths are read from ``folder`` and embedded.
    """
    out, table, bullets = [], [], []

    def flush() -> None:
        if table:
            rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in table
                    if not re.fullmatch(r"\|?[\s|:-]+\|?", r.strip())]
            head = "".join(f"<th>{_inline(c, folder)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{_inline(c, folder)}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
            table.clear()
        if bullets:
            out.append("<ul>" + "".join(f"<li>{_inline(b, folder)}</li>" for b in bullets) + "</ul>")
            bullets.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            bullets.append(line[2:])
            continue
        flush()
        if m := re.match(r"(#+)\s+(.*)", line):
            level = min(6, len(m.group(1)) + 2)  # the page's own headings are h1/h2
            out.append(f"<h{level}>{_inline(m.group(2), folder)}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line, folder)}</p>")
    flush()
    return "\n".join(out)


def _missing(what: str) -> str:
    return f'<p class="missing">Not in this folder: {html.escape(what)}.</p>'


# ---- sections --------------------------------------------------------------------------------

def _stage_logs(root: Path) -> list[Path]:
    return [p for p in _find(root, "log.jsonl") if p.parent.name in ("large", "small")]


def _summary_rows(root: Path) -> list[list[str]]:
    rows = []
    for folder, m in _sample_sets(root):
        rows.append(["generated pairs", f"{m.get('num_samples', len(m['samples']))} ({m.get('mode', 'unconditional')})",
                     _rel(folder, root)])
    for path in _find(root, "metrics.json"):
        m = _read_json(path) or {}
        fid, agree = (m.get("fid_kid") or {}).get("fid"), (m.get("mask_agreement") or {}).get("mean_iou_defects")
        if fid is not None:
            rows.append(["FID (efficientnet-lite0 features; lower is closer to the real set)", f"{fid:.1f}",
                         _rel(path, root)])
        if agree is not None:
            rows.append(["mask agreement (defect IoU of a real-data segmenter with the generated masks)",
                         f"{100 * agree:.1f} %", _rel(path, root)])
    for path in _find(root, "summary.csv"):  # ablate: one line per model, source and ratio
        import csv

        for r in csv.DictReader(path.read_text().splitlines()):
            if r.get("miou_defect_mean"):
                gain = f", gain {100 * float(r['gain_miou_defect']):+.1f} points" if r.get("gain_miou_defect") else ""
                rows.append([f"segmentation mIoU (defect classes), {r['model']}, {r['source']} at ratio {float(r['ratio']):g}",
                             f"{100 * float(r['miou_defect_mean']):.1f} % over {r['seeds']} seeds{gain}", _rel(path, root)])
    t = _read_json(root / "timing.json")
    if isinstance(t, dict) and "total_seconds" in t:
        rows.append(["time of the last command", f"{t['total_seconds']:.0f} s", "timing.json"])
    return rows


def section_summary(root: Path) -> str:
    rows = _summary_rows(root)
    return _table(["what", "value", "from"], rows) if rows else _missing("samples, metrics, evaluation or timing")


def section_timing(root: Path) -> str:
    parts = []
    for path in _find(root, "timing.json"):
        t = _read_json(path)
        if isinstance(t, dict) and "phases" in t:
            parts.append(f"<p><code>{html.escape(_rel(path, root))}</code>: {html.escape(summary_line(t))}</p>")
        elif isinstance(t, dict) and "seconds" in t:
            parts.append(f"<p><code>{html.escape(_rel(path, root))}</code>: {t['seconds']:.1f} s</p>")
    return "\n".join(parts) or _missing("timing.json")


def section_training(root: Path) -> str:
    logs = _stage_logs(root)
    if not logs:
        return _missing("a generator's training logs (large/log.jsonl, small/log.jsonl)")
    fig, (ax_loss, ax_lr) = pyplot().subplots(1, 2, figsize=(10, 3.4))
    rows = []
    for path in logs:
        recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
        if not recs:
            continue
        label = _rel(path.parent, root)
        steps = [r["step"] for r in recs]
        ax_loss.plot(steps, [r["loss"] for r in recs], label=label)
        ax_lr.plot(steps, [r["lr"] for r in recs], label=label)
        last = recs[-1]
        rows.append([label, last["step"], f"{last['loss']:.4f}", f"{last['seconds']:.0f}",
                     f"{last['seconds'] / max(last['step'], 1):.3f}"])
    ax_loss.set(xlabel="step", ylabel="loss (MSE)", yscale="log", title="training loss")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return (_img(png_bytes(fig, dpi=90), "training curves") +
            _table(["stage", "steps", "last loss", "seconds", "s/step"], rows))


def section_progress(root: Path) -> str:
    parts = []
    for path in _stage_logs(root):
        grids = sorted((path.parent / "samples").glob("step_*.png"))
        if len(grids) > 6:  # first, last and evenly spaced ones between
            grids = [grids[round(i * (len(grids) - 1) / 5)] for i in range(6)]
        if grids:
            parts.append(f"<h3>{html.escape(_rel(path.parent, root))} (this stage alone, fixed seeds)</h3>"
                         + '<div class="row">' + "".join(_figure(g, root) for g in grids) + "</div>")
    return "\n".join(parts) or _missing("progress grids (large/samples/step_*.png)")


def _sample_sets(root: Path) -> list[tuple[Path, dict]]:
    from defectgen.data import DataError, samples

    found = []
    for path in _find(root, samples.MANIFEST):
        try:
            m = samples.read_manifest(path.parent)
        except DataError:  # a damaged manifest is left out of the page, not an error of the page
            continue
        if "samples" in m:
            found.append((path.parent, m))
    return found


def _legend_html(names: list[str]) -> str:
    from defectgen.viz import class_colours

    chips = "".join(f'<span class="chip"><span class="sw" style="background:rgb{col}"></span>{html.escape(n)}</span>'
                    for n, col in class_colours(names))
    return f'<p class="legend">Overlay colours: {chips}</p>'


def section_samples(root: Path) -> str:
    parts = []
    for folder, m in _sample_sets(root):
        names = list(m.get("class_map", {}).get("names", []))
        mode = m.get("mode", "unconditional")
        facts = [f"{m.get('num_samples', len(m['samples']))} pairs", mode]
        for key, label in (("sampler", "sampler"), ("steps", "steps"), ("switch", "switch")):
            if m.get(key) is not None:
                facts.append(f"{label} {m[key]}")
        if m.get("seconds_per_sample") is not None:
            facts.append(f"{m['seconds_per_sample']:.3f} s/pair")
        grid = folder / GRID
        tiles = ("the image it was painted onto | the generated image | with the mask overlaid"
                 if mode in ("onto", "into-training") else "image | image with the mask overlaid")
        parts.append(f"<h3>{html.escape(_rel(folder, root))}</h3><p>{html.escape(', '.join(facts))}. "
                     f"Each pair: {tiles}.</p>"
                     + (_legend_html(names) if names else "")
                     + (_figure(grid, root) if grid.is_file() else _missing(f"{_rel(grid, root)}")))
    return "\n".join(parts) or _missing("a sample folder (manifest.json, grid.png)")


def _real_shares(m: dict, names: list[str], folder: Path) -> dict[str, float] | None:
    """Pixel shares of the generator's real training masks (found through the run's selection.json),
    at the size of the synthetic masks in ``folder``."""
    from PIL import Image

    from defectgen.data import DataError, load_pairs, open_dataset
    from defectgen.quality.class_stats import class_statistics

    first = next(iter(sorted((folder / MASKS).glob("*.png"))), None)
    size = Image.open(first).size[0] if first is not None else 32

    pipeline = (m.get("model") or {}).get("pipeline")
    stems = m.get("train_stems") or []
    if not pipeline or not stems:
        return None
    for sel_path in (Path(pipeline) / "selection.json", Path(pipeline).parent / "selection.json"):
        sel = _read_json(sel_path) if sel_path.is_file() else None
        if sel:
            try:
                ds = open_dataset(sel["data"], sel.get("format"), sel.get("mask_suffix"), threshold=sel.get("threshold"))
                _, masks = load_pairs([ds.by_stem(s) for s in stems], ds.class_map, size)
            except (OSError, KeyError, ValueError, DataError):
                return None
            stats = class_statistics(masks, tuple(names), ds.class_map.ignore_index)
            return {n: c["pixel_share"] for n, c in stats["classes"].items()}
    return None


def _shares_chart(rows: list[tuple[str, float | None, float | None]]) -> bytes:
    import numpy as np

    x = np.arange(len(rows))
    fig, ax = pyplot().subplots(figsize=(5.5, 3.0))
    ax.bar(x - 0.2, [100 * (r[1] or 0) for r in rows], 0.4, label="real (generator's training masks)")
    ax.bar(x + 0.2, [100 * (r[2] or 0) for r in rows], 0.4, label="synthetic")
    ax.set_xticks(x, [r[0] for r in rows])
    ax.set_ylabel("share of all pixels (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig, dpi=90)


def section_shares(root: Path) -> str:
    parts = []
    metrics = [_read_json(p) for p in _find(root, "metrics.json")]
    for folder, m in _sample_sets(root):
        names = list(m.get("class_map", {}).get("names", []))
        counts = [s.get("class_pixels", {}) for s in m["samples"]]
        total = sum(sum(c.values()) for c in counts) or 1
        syn = {n: sum(c.get(n, 0) for c in counts) / total for n in names[1:]}
        met = next((v for v in metrics if v and Path(v.get("inputs", {}).get("synthetic", "")).resolve()
                    == folder.resolve()), None)
        if met:
            real = {n: c["pixel_share_real"] for n, c in met["class_stats"]["classes"].items()}
        else:
            real = _real_shares(m, names, folder)
        rows = [(n, (real or {}).get(n), syn[n]) for n in names[1:]]
        table = _table(["class", "real %", "synthetic %"],
                       [[n, "–" if r is None else f"{100 * r:.2f}", f"{100 * s:.2f}"] for n, r, s in rows])
        note = "" if real else "<p>The real training masks were not found, so only synthetic shares are shown.</p>"
        parts.append(f"<h3>{html.escape(_rel(folder, root))}</h3>{note}{_img(_shares_chart(rows), 'class shares')}{table}")
    return "\n".join(parts) or _missing("a sample folder to count class pixels in")


def section_metrics(root: Path) -> str:
    parts = []
    for path in _find(root, "metrics.json"):
        md = path.parent / "metrics.md"
        body = markdown_to_html(md.read_text(), path.parent) if md.is_file() else ""
        figs = "".join(_figure(path.parent / f, root) for f in ("class_stats.png", "nearest_neighbours.png")
                       if (path.parent / f).is_file())
        parts.append(f"<h3>{html.escape(_rel(path.parent, root))}</h3>{body}{figs}")
    if parts:
        parts.insert(0, "<p>The <i>reading</i> column says what each number means; docs/metrics.md has the details.</p>")
    return "\n".join(parts) or _missing("metrics.json (defectgen metrics)")


def _evaluate_table(res: dict) -> str:
    agg = res["aggregate"]
    cfg = res["config"]
    rows = [[k, pct_stat(agg[k])] for k in ("miou_all", "miou_defect", "mdice_defect", "pixel_fp_rate", "pixel_fn_rate",
                                        "image_recall") if k in agg]
    rows += [[f"IoU {n}", pct_stat(s)] for n, s in agg.get("per_class_iou", {}).items()]
    gain = (res.get("paired_gain") or {}).get("miou_defect")
    if gain:
        rows.append(["paired gain, mIoU defect (points)", f"{100 * gain['mean']:+.1f}"])
    head = (f"<p>{html.escape(cfg['seg']['model'])}, ratio {cfg['ratio']:g} synthetic per real pair, "
            f"seeds {', '.join(map(str, cfg['seeds']))}; values in %, mean ± std over seeds.</p>")
    return head + _table(["metric", "value"], rows)


def section_evaluation(root: Path) -> str:
    parts = []
    for path in _find(root, "results.json"):
        res = _read_json(path)
        if isinstance(res, dict) and res.get("command") == "evaluate":
            parts.append(f"<h3>{html.escape(_rel(path.parent, root))}</h3>{_evaluate_table(res)}")
    for path in _find(root, "report.md"):  # ablate and compare write their table and plots here
        parts.append(f"<h3>{html.escape(_rel(path.parent, root))}</h3>{markdown_to_html(path.read_text(), path.parent)}")
        for extra in ("gain_vs_switch.png", "memorisation_vs_switch.png"):
            if (path.parent / extra).is_file():
                parts.append(_figure(path.parent / extra, root))
    return "\n".join(parts) or _missing("an evaluation (defectgen evaluate, ablate or compare)")


def section_commands(root: Path) -> str:
    parts = []
    log = root / "commands.jsonl"
    if log.is_file():
        rows = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
        parts.append("<pre>" + "\n".join(html.escape(f"# {r['utc']} in {r['cwd']}\n{r['command']}") for r in rows) + "</pre>")
    for name in ("config.yaml", "demo.yaml"):
        for path in _find(root, name):
            parts.append(f"<h3>{html.escape(_rel(path, root))}</h3><pre>{html.escape(path.read_text())}</pre>")
    return "\n".join(parts) or _missing("commands.jsonl or config.yaml")


BUILDERS = {
    "summary": section_summary, "timing": section_timing, "training": section_training, "progress": section_progress,
    "samples": section_samples, "shares": section_shares, "metrics": section_metrics,
    "evaluation": section_evaluation, "commands": section_commands,
}

STYLE = """body{font-family:sans-serif;max-width:1150px;margin:1em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ccc;padding-top:.6em}img{max-width:100%;image-rendering:pixelated}
figure{display:inline-block;margin:.3em;vertical-align:top}figcaption{font-size:.8em;color:#666}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:2px 8px}
th{background:#f2f2f2}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
.missing{color:#999;font-style:italic}.chip{margin-right:1em}.sw{display:inline-block;width:12px;height:12px;
border:1px solid #000;margin-right:4px;vertical-align:middle}nav a{margin-right:1em}
.row{display:flex;gap:.5em}.row figure{flex:1;margin:0}.row img{width:100%}"""


def record_command(folder: Path, argv: list[str] | None = None) -> None:
    """Append the command line that wrote into ``folder`` to ``folder/commands.jsonl``."""
    import os
    import shlex

    argv = sys.argv[1:] if argv is None else argv
    line = {"utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "cwd": os.getcwd(),
            "command": "defectgen " + shlex.join(argv)}
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "commands.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


def render(folder: Path, title: str | None = None) -> str:
    """The page for ``folder`` as an HTML string."""
    folder = Path(folder)
    title = title or f"defectgen: {folder.name}"
    nav = "".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name in SECTIONS)
    body = "\n".join(f'<h2 id="{key}">{html.escape(name)}</h2>\n{BUILDERS[key](folder)}' for key, name in SECTIONS)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(str(folder.resolve()))} · written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>"
            f"<nav>{nav}</nav>\n{body}\n</body></html>\n")


def write_report_html(folder: Path, title: str | None = None) -> Path:
    """Write (or rewrite) ``folder/report.html`` from the folder's current contents; return its path."""
    path = Path(folder) / "report.html"
    atomic_write_text(path, render(Path(folder), title))
    return path


def update_report(folder: Path, title: str, argv: list[str] | None = None) -> Path:
    """What every command does last: record its command line in ``folder`` and rewrite the page."""
    record_command(Path(folder), argv)
    return write_report_html(Path(folder), title)


if __name__ == "__main__":  # python -m defectgen.report_html FOLDER: names the page it wrote
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("%s", write_report_html(Path(sys.argv[1])))
