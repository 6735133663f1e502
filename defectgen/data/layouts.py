"""Writing pairs in the layouts segmentation code trains with; the readers read each one back.

- ``defectgen``: ``images/`` + ``masks/`` (what ``defectgen sample`` writes)
- ``mmseg``: ``img_dir/<split>/`` + ``ann_dir/<split>/``, split files ``splits/<split>.txt`` and
  ``classes.txt`` (mmsegmentation's ``BaseSegDataset`` with ``img_suffix='.png'``)
- ``voc``: ``JPEGImages/`` + ``SegmentationClass/``, ``ImageSets/Segmentation/<split>.txt`` and a
  labelme-style ``labels.txt`` (images are PNG, lossless, despite the folder name)

Masks are single-channel PNGs of class ids (0 background, 255 ignore) in every layout. Every
folder also gets ``manifest.json`` with the class map and where each pair came from.

    relayout(Path("runs/samples"), "mmseg")          # a sample folder, rewritten in place
    mix_dataset(real_ds, train, test, syn, 1.0, 0, "mmseg", Path("runs/mix"))
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from defectgen.data.classmap import ClassMap
from defectgen.data.errors import DataError
from defectgen.data.records import DefectDataset, PairRecord
from defectgen.data.loading import load_pair
from defectgen.data.samples import IMAGES, MANIFEST, MASKS, read_manifest, write_manifest
from defectgen.io import atomic_dir, atomic_write_text, safe_name

LAYOUTS = ("defectgen", "mmseg", "voc")


def layout_paths(layout: str, stem: str, split: str) -> tuple[str, str]:
    """Relative image and mask path of pair ``stem`` in ``split`` of ``layout``."""
    safe_name(stem, "pair name")
    safe_name(split, "split name")
    if layout == "defectgen":
        return f"images/{stem}.png", f"masks/{stem}.png"
    if layout == "mmseg":
        return f"img_dir/{split}/{stem}.png", f"ann_dir/{split}/{stem}.png"
    if layout == "voc":
        return f"JPEGImages/{stem}.png", f"SegmentationClass/{stem}.png"
    raise DataError(f"unknown layout '{layout}' (choose from {', '.join(LAYOUTS)})")


def _put(src: Path | np.ndarray, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, np.ndarray):
        Image.fromarray(src).save(dst)
        return
    try:
        os.link(src, dst)  # same file system: no copy
    except OSError:
        shutil.copyfile(src, dst)


def write_index_files(folder: Path, layout: str, class_map: ClassMap, splits: dict[str, list[str]]) -> None:
    """Split files and class-name files of ``layout`` (the manifest is written by the caller)."""
    if layout == "mmseg":
        for split, stems in splits.items():
            atomic_write_text(folder / "splits" / f"{split}.txt", "".join(s + "\n" for s in stems))
        atomic_write_text(folder / "classes.txt", "".join(n + "\n" for n in class_map.names))
    elif layout == "voc":
        for split, stems in splits.items():
            atomic_write_text(folder / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(s + "\n" for s in stems))
        names = ["__ignore__", "_background_", *class_map.names[1:]]
        atomic_write_text(folder / "labels.txt", "".join(n + "\n" for n in names))


def relayout(folder: Path, layout: str, split: str = "train") -> None:
    """Rewrite a ``defectgen sample`` folder (images/, masks/, manifest.json) into ``layout``, atomically."""
    folder = Path(folder)
    if layout == "defectgen":
        return
    manifest = read_manifest(folder)
    class_map = ClassMap.from_dict(manifest["class_map"])
    stems = []
    with atomic_dir(folder.with_name(folder.name + ".relayout")) as tmp:
        for sample in manifest["samples"]:
            stem = Path(safe_name(sample["file"], f"{folder / MANIFEST}: sample file")).stem
            img, mask = layout_paths(layout, stem, split)
            _put(folder / IMAGES / sample["file"], tmp / img)
            _put(folder / MASKS / sample["file"], tmp / mask)
            sample.update(image=img, mask=mask)
            stems.append(stem)
        for extra in folder.iterdir():  # grid.png and anything else a writer added
            if extra.is_file() and extra.name != MANIFEST:
                _put(extra, tmp / extra.name)
            elif extra.is_dir() and extra.name not in (IMAGES, MASKS):
                shutil.copytree(extra, tmp / extra.name)
        write_index_files(tmp, layout, class_map, {split: stems})
        write_manifest(tmp, {**manifest, "layout": layout})
    done = folder.with_name(folder.name + ".relayout")
    old = folder.with_name(f".{folder.name}.old")
    os.replace(folder, old)
    os.replace(done, folder)
    shutil.rmtree(old)


def mix_dataset(
    ds: DefectDataset,
    train: list[PairRecord],
    test: list[PairRecord],
    synthetic: Any,
    ratio: float,
    seed: int,
    layout: str,
    out: Path,
    balanced: bool = True,
    test_split: str = "test",
) -> dict[str, Any]:
    """Real training pairs + ``ratio`` × as many synthetic pairs (drawn from ``seed``) as split
    ``train``, the real test pairs as split ``test_split``, in ``layout`` at ``out``; returns the manifest.

    Real pairs keep their size (masks become class-id PNGs); stems are ``real_<stem>`` and
    ``syn_<file stem>`` so the two never collide.
    """
    from defectgen.seg.mixing import check_no_leak, choose_synthetic, num_synthetic

    layout_paths(layout, "x", "train")  # refuses an unknown layout before any work
    synthetic.class_map.check_compatible(ds.class_map, str(synthetic.root / MANIFEST))
    check_no_leak([r.stem for r in train], [r.stem for r in test], synthetic)
    count = num_synthetic(len(train), ratio)
    chosen = [synthetic.records[i] for i in choose_synthetic(synthetic.classes, count, seed, balanced)]
    files, splits = [], {"train": [], **({test_split: []} if test else {})}
    with atomic_dir(out) as tmp:
        for split, recs in (("train", train), (test_split, test)):
            for rec in recs:
                image, mask = load_pair(rec, ds.class_map)
                files.append(_write_pair(tmp, layout, f"real_{rec.stem}", split, image, mask, "real", rec.stem))
                splits[split].append(files[-1]["stem"])
        for rec in chosen:
            files.append(_write_pair(tmp, layout, f"syn_{rec.stem}", "train", rec.image, rec.mask, "synthetic", rec.image.name))
            splits["train"].append(files[-1]["stem"])
        write_index_files(tmp, layout, ds.class_map, splits)
        manifest = {
            "kind": "mix", "layout": layout, "ratio": ratio, "seed": seed, "balanced": balanced,
            "class_map": ds.class_map.to_dict(),
            "real": {"data": str(Path(ds.root).resolve()), "format": ds.format, "train_stems": [r.stem for r in train],
                     "test_stems": [r.stem for r in test]},
            "synthetic": synthetic.identity(), "num_real": len(train), "num_synthetic": len(chosen),
            "splits": {k: len(v) for k, v in splits.items()}, "files": files,
        }
        write_manifest(tmp, manifest)
    return manifest


def _write_pair(folder: Path, layout: str, stem: str, split: str, image: Path | np.ndarray, mask: Path | np.ndarray | None,
                source: str, origin: str) -> dict[str, str]:
    img_rel, mask_rel = layout_paths(layout, stem, split)
    if isinstance(image, Path) and image.suffix.lower() != ".png":
        image = np.asarray(Image.open(image).convert("RGB"))
    _put(image, folder / img_rel)
    _put(mask, folder / mask_rel)
    return {"stem": stem, "split": split, "source": source, "from": origin, "image": img_rel, "mask": mask_rel}
