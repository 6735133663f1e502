"""report.html: the demo's page has every section, embeds everything, and a run without evaluation
still renders; sample grids carry a class legend; commands end with a timing line. Tiny models only."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectgen.cli import main
from defectgen.report_html import SECTIONS, markdown_to_html
from defectgen.viz import class_colours, pair_grid

TINY_DEMO = ["--demo-set", "per_class=4", "--demo-set", "shots=2", "--demo-set", "num_samples=6",
             "--demo-set", "seeds=[0]", "--demo-set", "onto_good=6", "--demo-set", "seg.model=unet-tiny", "--demo-set", "seg.size=16",
             "--demo-set", "seg.steps=3", "--demo-set", "seg.batch_size=4"]


def _sections(page: str) -> dict[str, str]:
    """Section id -> its HTML, cut at the next section heading."""
    parts = re.split(r'<h2 id="([a-z]+)">', page)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _no_external_urls(page: str) -> None:
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs), refs[:5]
    assert "http://" not in page and "https://" not in page


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from conftest import TINY_CONFIG

    root = tmp_path_factory.mktemp("demo_report")
    (root / "tiny.yaml").write_text(TINY_CONFIG)
    out = root / "demo"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["demo", "--out", str(out), "--config", str(root / "tiny.yaml"), "--quiet", *TINY_DEMO]) == 0
    return out, buf.getvalue()


def test_demo_report_has_every_section_filled(demo_out: tuple[Path, str]) -> None:
    out, printed = demo_out
    page = (out / "report.html").read_text()
    sections = _sections(page)
    assert list(sections) == [key for key, _ in SECTIONS]
    for key, body in sections.items():
        assert 'class="missing"' not in body, f"section {key} found no data in a full demo"
    assert "segmentation mIoU" in sections["summary"] and "FID" in sections["summary"]
    assert sections["training"].count("<img") == 1 and "run/large" in sections["training"]
    assert "run/small/samples/step_0000004.png" in sections["progress"]
    assert "Overlay colours" in sections["samples"] and "scratch" in sections["samples"]
    assert "samples_onto_good/grid.png" in sections["samples"] and "the image it was painted onto" in sections["samples"]
    assert "real %" in sections["shares"]
    assert "FID" in sections["metrics"] and "reading" in sections["metrics"]
    assert "defect-gen" in sections["evaluation"] and "mIoU defect" in sections["evaluation"]
    assert "defectgen demo --out" in sections["commands"] and "large_steps: 4" in sections["commands"]
    assert "s/step" in sections["timing"] and "s/pair" in sections["timing"]
    _no_external_urls(page)
    # what the command printed: where the report is, then the one-line timing summary
    lines = printed.strip().splitlines()
    assert lines[-2] == f"[defectgen] report: {(out / 'report.html').resolve()}"
    assert lines[-1].startswith("[defectgen] time: data ") and "s/step" in lines[-1] and "total" in lines[-1]
    # the evaluation trained on the generator's own images only: real-only, then the onto-good and the
    # unconditional pairs beside it
    cells = sorted(p.name for p in (out / "eval" / "cells").glob("*.json"))
    assert cells == ["unet-tiny__defect-gen-onto-good__r1__s0.json", "unet-tiny__defect-gen__r1__s0.json",
                     "unet-tiny__real__r0__s0.json"], cells
    assert "defect-gen-onto-good" in sections["evaluation"]


def test_run_without_evaluation_still_renders(tmp_path: Path, demo_data: Path, tiny_config: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    run, syn = tmp_path / "run", tmp_path / "syn"
    assert main(["train", "--config", str(tiny_config), "--data", str(demo_data), "--shots", "2", "--out", str(run),
                 "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("[defectgen] time: train ")
    sections = _sections((run / "report.html").read_text())
    assert list(sections) == [key for key, _ in SECTIONS]
    assert "<img" in sections["training"] and "step_0000004.png" in sections["progress"]
    for key in ("samples", "metrics", "evaluation"):
        assert 'class="missing"' in sections[key], key
    assert main(["sample", "--run", str(run), "--num", "3", "--out", str(syn), "--quiet"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("[defectgen] time: load ") and "s/pair" in last
    page = (syn / "report.html").read_text()
    sections = _sections(page)
    assert "Overlay colours" in sections["samples"] and "<img" in sections["samples"]
    # the real shares come from the run's selection (the generator's training masks), found via the manifest
    assert "were not found" not in sections["shares"]
    assert 'class="missing"' in sections["training"] and 'class="missing"' in sections["evaluation"]
    assert f"defectgen sample --run {run}" in sections["commands"]
    _no_external_urls(page)


def test_markdown_tables_and_images_become_html(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), "red").save(tmp_path / "plot.png")
    page = markdown_to_html("# Title\n\n- a `x`\n\n| a | b |\n|---|---|\n| **1** | 2 |\n\n![p](plot.png)\n", tmp_path)
    assert "<h3>Title</h3>" in page and "<li>a <code>x</code></li>" in page
    assert "<tr><th>a</th><th>b</th></tr><tr><td><b>1</b></td><td>2</td></tr>" in page
    assert 'src="data:image/png;base64,' in page and "plot.png" not in page.split("src=")[1][:40]


def test_sample_grid_carries_a_class_legend() -> None:
    names = ("background", "scratch", "spot", "patch")
    images = np.full((2, 8, 8, 3), 128, np.uint8)
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, :2], masks[1, :2] = 1, 3
    plain = np.asarray(pair_grid(images, masks, ncols=2, scale=4))
    legend = np.asarray(pair_grid(images, masks, ncols=2, scale=4, names=names))
    assert legend.shape[0] > plain.shape[0] and np.array_equal(legend[: plain.shape[0]], plain)
    band = legend[plain.shape[0]:].reshape(-1, 3)
    for _, colour in class_colours(names):  # every defect class's overlay colour is shown in the band
        assert (band == colour).all(axis=1).any(), colour
    assert [n for n, _ in class_colours(names)] == ["scratch", "spot", "patch"]
