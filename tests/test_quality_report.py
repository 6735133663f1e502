"""``defectgen metrics`` end to end on a temporary real dataset and a synthetic folder."""
import json

import numpy as np
import pytest
from PIL import Image

from defectgen.data import SelectionConfig
from defectgen.quality.compute import MetricsConfig, compute_metrics, evaluate
from defectgen.quality.report import json_safe, render_markdown

NAMES = ("background", "inclusion", "patch")


def pair(seed, size=32):
    """A textured grey image with one rectangular defect of class 1 or 2, darker inside the mask."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    g = 120 + 40 * np.sin(2 * np.pi * rs.uniform(1, 4) * xx + rs.uniform(0, 6)) + rs.randn(size, size) * 6
    mask = np.zeros((size, size), np.uint8)
    y0, x0 = rs.randint(0, size // 2, 2)
    h, w = rs.randint(4, size // 2, 2)
    mask[y0 : y0 + h, x0 : x0 + w] = 1 + seed % 2
    g[mask > 0] -= 60
    img = np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return img, mask


def write_index(root, pairs, names=NAMES, manifest=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, (img, mask) in pairs.items():
        Image.fromarray(img).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    if manifest is None:
        (root / "labels.txt").write_text("\n".join(names) + "\n")
    else:
        (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def encoder():
    from defectgen.quality.features import FeatureEncoder

    return FeatureEncoder("cpu")


@pytest.fixture()
def folders(tmp_path):
    real = {f"r{i:02d}": pair(i) for i in range(12)}
    train_stems = [f"r{i:02d}" for i in range(6)]
    copies = {f"{i:06d}": real[s] for i, s in enumerate(train_stems[:3])}  # exact copies of training pairs
    fresh = {f"{i:06d}": pair(100 + i) for i in range(3, 8)}
    manifest = {"class_map": {"names": list(NAMES), "ignore_index": 255}, "train_stems": train_stems,
                "samples": [{"file": f"{i:06d}.png"} for i in range(8)], "switch": 0.5, "sampler": "ddim", "steps": 10}
    write_index(tmp_path / "real", real)
    write_index(tmp_path / "syn", {**copies, **fresh}, manifest=manifest)
    return tmp_path


def run_cli(*argv):
    """``defectgen metrics ...`` through the real entry point (a user error: exit code 2, one line)."""
    from defectgen.cli import main

    return main(["metrics", *argv])


def test_metrics_command_writes_labelled_report(folders, capsys):
    out = folders / "out"
    rc = run_cli("--real", str(folders / "real"), "--synthetic", str(folders / "syn"), "--out", str(out),
                 "--size", "32", "--no-mask-agreement", "--set", "kid_subsets=5")
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"metrics.json", "metrics.md", "nearest_neighbours.png", "class_stats.png",
                                               "report.html", "timing.json", "commands.jsonl"}
    m = json.loads((out / "metrics.json").read_text())
    assert m["inputs"]["real_chosen_by"] == "manifest train_stems"
    assert m["inputs"]["real_stems"] == [f"r{i:02d}" for i in range(6)]
    assert m["counts"] == {"n_real": 6, "n_generated": 8}
    assert m["feature_extractor"]["comparable_to_published_fid"] is False
    assert m["fid_kid"]["kid_subset_size"] == 6
    for space in ("pixel", "feature"):  # the three exact copies are caught, in both spaces
        assert m["memorisation"][space]["n_memorised"] >= 3
    assert [c["train"] for c in m["memorisation"]["closest"]["pixel"][:3]] == ["r00", "r01", "r02"]
    assert m["mask_agreement"] == {"skipped": "disabled (--no-mask-agreement)"}
    md = (out / "metrics.md").read_text()
    assert "not comparable to published Inception FID" in md
    assert Image.open(out / "nearest_neighbours.png").size[0] > 100
    # never silently overwrite an earlier report
    capsys.readouterr()
    assert run_cli("--real", str(folders / "real"), "--synthetic", str(folders / "syn"), "--out", str(out),
                   "--no-mask-agreement") == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_explicit_selection_and_missing_inception_weights(folders, tmp_path, encoder, capsys):
    listing = tmp_path / "stems.txt"
    listing.write_text("r06\nr07\nr08\n")
    real = SelectionConfig(data=str(folders / "real"), list_file=str(listing))
    m = compute_metrics(folders / "syn", real, MetricsConfig(size=32, mask_agreement=False, kid_subsets=5),
                        encoder=encoder)
    assert m["inputs"]["real_stems"] == ["r06", "r07", "r08"]
    assert m["inputs"]["real_chosen_by"] == "list file"
    capsys.readouterr()
    assert run_cli("--real", str(folders / "real"), "--synthetic", str(folders / "syn"), "--out", str(tmp_path / "o2"),
                   "--inception-weights", str(tmp_path / "missing.pth"), "--no-mask-agreement") == 2
    assert "missing.pth" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_evaluate_with_a_known_segmenter_and_json_safety(encoder):
    pairs = [pair(i) for i in range(6)]
    images = np.stack([p[0] for p in pairs])
    masks = np.stack([p[1] for p in pairs])
    cfg = MetricsConfig(size=32, kid_subsets=5)
    r = evaluate(images, masks, images, masks, NAMES, cfg, predictor=lambda x: masks, encoder=encoder)
    m = r.metrics
    assert m["mask_agreement"]["mean_iou_defects"] == 1.0
    assert m["fid_kid"]["fid"] == pytest.approx(0.0, abs=1e-3)
    assert m["memorisation"]["pixel"]["share_memorised"] == 1.0
    assert m["class_stats"]["class_mix_total_variation"] == 0.0
    safe = json_safe(m)
    json.dumps(safe, allow_nan=False)  # NaN (e.g. IC diversity of singleton clusters) became null
    assert safe["diversity"]["intra_cluster"]["value"] is None
    assert "FID" in render_markdown(safe)


def test_mask_agreement_trains_the_real_data_segmenter(encoder):
    from defectgen.seg.train import SegConfig

    pairs = [pair(i) for i in range(6)]
    images = np.stack([p[0] for p in pairs])
    masks = np.stack([p[1] for p in pairs])
    seg = SegConfig(model="unet-tiny", steps=4, batch_size=4, warmup_steps=1)
    m = evaluate(images, masks, images[:3], masks[:3], NAMES, MetricsConfig(size=32, kid_subsets=5),
                 seg_config=seg, encoder=encoder).metrics["mask_agreement"]
    assert m["segmenter"]["config"]["model"] == "unet-tiny"
    assert set(m["iou"]) == set(NAMES)
    assert 0.0 <= m["iou"]["background"] <= 1.0
    assert m["segmenter_iou_on_its_training_images"] is not None
    # the same real subset and settings reuse the trained model (a comparison scores many rows)
    from defectgen.quality.mask_agreement import real_data_segmenter

    first, _ = real_data_segmenter(images, masks, len(NAMES), 0, seg)
    assert real_data_segmenter(images, masks, len(NAMES), 0, seg)[0] is first
