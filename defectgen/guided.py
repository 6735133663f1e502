"""Guided sampling requests: defects onto good images, images for given masks, defects into training images.

One trained pair of UNets does all of this at sampling time (``DefectGenPipeline`` with a
``Known``): this module only decides, per sample, what is known.

- ``onto``: a good (defect-free) image is the background. Outside the defect region the output
  is that image; inside, the generator paints the defect.
- ``masks``: mask -> image. The mask is fixed; the whole image is generated.
- ``into-training``: a training image of the generator is the background; its own defects and
  labels are kept, a new defect is painted where its mask is background (a learned copy-paste).

The defect region comes from a mask folder (``folder``), from the generator's training masks after a
random flip/turn/shift (``train``), or from the model itself (``model``: the large model chooses
where and what, the mask is frozen at the switch and the small model paints it). Every sample's
choices come from its own seed, so the output does not depend on batching.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from defectgen.config import MAX_PAIRS
from defectgen.data import ClassMap, DataError, PairRecord, good_images, load_pair, load_pairs, open_dataset, read_labels_file
from defectgen.data.geometry import load_scaled
from defectgen.data.loading import _mask_array, _open, _to_rgb
from defectgen.generator_config import GeneratorConfig
from defectgen.pairs import dihedral, encode_pairs
from defectgen.pipeline import Known, soft_region
from defectgen.run import run_config
from defectgen.schedule import sample_seed
from defectgen.windows import (Window, composite, cover_mask, cut_defect, max_windows, place_windows, resize_image,
                               resize_mask, window_side)

MODES = ("unconditional", "onto", "masks", "into-training")
MASK_SOURCES = ("folder", "train", "model", "paste")
PASTE_STRENGTH = 0.5  # harmonised copy-paste: how far down the schedule the pasted window is noised by default
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass
class Condition:
    """What one sample is asked to be.

    ``image``: background (H,W,3) uint8, or None to generate the whole image. ``mask``: the full
    output mask (kept labels and the new defect), or None when the model chooses the new defect.
    ``base``: labels that are kept (a training image's own defects; zeros for a good image).
    ``allowed``: class ids the new defect may take. ``hold`` (model-chosen masks only): pixels whose
    label is held at ``base`` although it is background there (outside ``--region``, ignore pixels).
    ``start`` (harmonised copy-paste): the image the trajectory starts from, noised part-way down.
    """

    image: np.ndarray | None
    mask: np.ndarray | None
    base: np.ndarray
    allowed: tuple[int, ...]
    info: dict = field(default_factory=dict)
    hold: np.ndarray | None = None
    start: np.ndarray | None = None


def known_batch(conds: Sequence[Condition], class_map: ClassMap, image_channels: int, blend: int) -> Known:
    """The pipeline's ``Known`` for a batch of conditions (all with given masks, or all model-chosen)."""
    model_mode = conds[0].mask is None
    if any((cd.mask is None) != model_mode for cd in conds):
        raise ValueError("a batch mixes model-chosen and given masks")
    n, c = len(conds), class_map.num_classes
    h, w = conds[0].base.shape
    images = np.stack([cd.image if cd.image is not None else np.zeros((h, w, 3), np.uint8) for cd in conds])
    masks = np.stack([cd.base if model_mode else cd.mask for cd in conds])
    values = encode_pairs(images, masks, c, image_channels)
    weight = torch.zeros_like(values)
    free = torch.zeros((n, h, w), dtype=torch.bool)
    allowed = torch.zeros((n, c), dtype=torch.bool)
    for i, cd in enumerate(conds):
        if not model_mode:  # the label is given: every mask channel is known, the image outside the region
            weight[i, image_channels:] = 1.0
            if cd.image is not None:
                region = torch.from_numpy(cd.mask != cd.base)[None]
                weight[i, :image_channels] = 1.0 - soft_region(region, blend)[0]
            continue
        kept = (cd.base > 0) & (cd.base != class_map.ignore_index)
        kept = torch.from_numpy(kept if cd.hold is None else kept | cd.hold)
        free[i] = ~kept
        weight[i, :image_channels] = 1.0
        weight[i, image_channels:, kept] = 1.0
        allowed[i, [0, *cd.allowed]] = True
        for cid in set(class_map.defect_ids) - set(cd.allowed):  # held "off" where the model chooses
            weight[i, image_channels + cid, ~kept] = 1.0
    if not model_mode:
        return Known(values, weight, blend=blend)
    return Known(values, weight, free, allowed, blend)


def init_batch(conds: Sequence[Condition], class_map: ClassMap, image_channels: int) -> torch.Tensor | None:
    """Where each trajectory of the batch starts (pair space), when the conditions give a start image."""
    if all(cd.start is None for cd in conds):
        return None
    if any(cd.start is None or cd.mask is None for cd in conds):
        raise ValueError("a batch mixes conditions with and without a start image")
    return encode_pairs(np.stack([cd.start for cd in conds]), np.stack([cd.mask for cd in conds]),
                        class_map.num_classes, image_channels)


# ---------------------------------------------------------------- reading the user's folders


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise DataError(f"{folder}: no images (.png, .jpg, .bmp, .tif) in this folder")
    return files


def _resize_image(rgb: np.ndarray, size: int, mode: str) -> np.ndarray:
    im = Image.fromarray(rgb)
    if mode == "center-crop":
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(im.resize((size, size), Image.BICUBIC), dtype=np.uint8)


class Loaded(NamedTuple):
    array: np.ndarray  # at the model size
    size: tuple[int, int]  # original (width, height)
    path: Path


def read_good_images(folder: Path, size: int | None, image_channels: int, resize_mode: str = "resize") -> dict[str, Loaded]:
    """Good images by stem, resized the way training data is (``size`` None: at their own size);
    channel count checked against the model.

    ``folder`` is a plain folder of images, a good folder with masks beside its images (``MT_Free/``)
    or a whole data set, whose defect-free images are used (``defectgen.data.good_images``).
    """
    out: dict[str, Loaded] = {}
    for path in good_images(Path(folder)):
        im = _open(path)
        rgb = _to_rgb(im)
        grey = np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        if image_channels == 1 and not grey:
            raise DataError(f"{path}: colour image, but the generator makes grey (1-channel) images")
        if image_channels == 3 and im.mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "1"):
            raise DataError(f"{path}: grey ({im.mode}) image, but the generator makes RGB (3-channel) images")
        if path.stem in out:
            raise DataError(f"{path}: duplicate stem '{path.stem}' in {folder}")
        out[path.stem] = Loaded(rgb if size is None else _resize_image(rgb, size, resize_mode), im.size, path)
    return out


def _folder_class_map(folder: Path) -> ClassMap | None:
    for base in (folder, folder.parent):
        if (base / "class_map.json").is_file():
            return ClassMap.load(base / "class_map.json")
        if (base / "labels.txt").is_file():
            return read_labels_file(base / "labels.txt")
    return None


def read_mask_folder(folder: Path, class_map: ClassMap, size: int | None) -> dict[str, Loaded]:
    """Class-id masks by stem, ids checked against the generator's class map, resized (nearest) to
    ``size`` (None: kept at their own size)."""
    folder = Path(folder)
    files = _image_files(folder)
    own = _folder_class_map(folder)
    if own is not None:
        class_map.check_compatible(own, str(folder))
    out: dict[str, Loaded] = {}
    for path in files:
        raw = _mask_array(_open(path), path)
        bad = sorted(set(np.unique(raw).tolist()) - set(range(class_map.num_classes)) - {class_map.ignore_index})
        if bad:
            shown = f"{bad[:8]} and {len(bad) - 8} more" if len(bad) > 8 else str(bad)
            raise DataError(f"{path}: mask ids {shown} are not classes of the generator "
                            f"({', '.join(f'{i}={n}' for i, n in enumerate(class_map.names))}, 255 = ignore)")
        if not ((raw > 0) & (raw != class_map.ignore_index)).any():
            raise DataError(f"{path}: empty mask (no defect pixel); every mask must hold a defect")
        im = Image.fromarray(raw.astype(np.uint8))
        array = np.asarray(im if size is None else im.resize((size, size), Image.NEAREST), dtype=np.uint8)
        out[path.stem] = Loaded(array, im.size, path)
    return out


def training_records(run: Path, class_map: ClassMap) -> list[PairRecord]:
    """The records of the generator's own training pairs, from the data folder named in the run."""
    run = Path(run)
    sel_path = next((p for p in (run / "selection.json", run.parent / "selection.json") if p.is_file()), None)
    if sel_path is None:
        raise DataError(f"{run}: no selection.json; training masks and images need the run folder, not a bare pipeline")
    sel = json.loads(sel_path.read_text())
    ds = open_dataset(sel["data"], sel.get("format"), sel.get("mask_suffix"), threshold=sel.get("threshold"))
    ds.class_map.check_compatible(class_map, str(sel["data"]))
    return [ds.by_stem(s) for s in sel["stems"]]


def training_pairs(run: Path, class_map: ClassMap, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The generator's own training pairs at ``size``², resized the way the run's training data was."""
    records = training_records(run, class_map)
    cfg = run_config(run)
    images, masks = load_pairs(records, class_map, size, "resize" if cfg is None else cfg.resize_mode)
    return images, masks, [r.stem for r in records]


# ---------------------------------------------------------------- masks and classes


def parse_classes(spec: str | None, class_map: ClassMap, num: int | None) -> tuple[list[tuple[int, ...]], int]:
    """``A,B`` (allowed classes) or ``A=50,B=20`` (per-class counts) -> per-sample allowed ids, and N.

    Without a spec every defect class is allowed. Per-class counts fix N; ``--num`` must then be
    absent or equal to their sum.
    """
    everything = tuple(class_map.defect_ids)
    if spec is None:
        if num is None:
            raise DataError("--num is required (or give per-class counts with --classes NAME=COUNT)")
        return [everything] * num, num
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    counts: list[tuple[int, int]] = []
    names: list[int] = []
    if not parts:
        raise DataError(f"--classes: no class named in {spec!r} (give A,B or A=N,B=M, or leave the flag out)")
    for part in parts:
        name, _, count = part.partition("=")
        if name not in class_map.names or name == class_map.names[0]:
            raise DataError(f"--classes: '{name}' is not a defect class of the generator "
                            f"(choose from {', '.join(class_map.names[1:])})")
        cid = class_map.id_of(name)
        if cid in names or cid in dict(counts):
            raise DataError(f"--classes: '{name}' is named twice in {spec!r}")
        if count:
            if not count.isdigit() or not 1 <= int(count) <= MAX_PAIRS:
                raise DataError(f"--classes: count for '{name}' must be an integer from 1 to {MAX_PAIRS}, got '{count}'")
            counts.append((cid, int(count)))
        else:
            names.append(cid)
    if counts and names:
        raise DataError("--classes: give either class names (A,B) or per-class counts (A=10,B=5), not both")
    if counts:
        total = sum(n for _, n in counts)
        if num is not None and num != total:
            raise DataError(f"--num {num} differs from the per-class counts in --classes (total {total})")
        return [(cid,) for cid, n in counts for _ in range(n)], total
    if num is None:
        raise DataError("--num is required with --classes NAME[,NAME]")
    return [tuple(sorted(set(names)))] * num, num


def place_mask(mask: np.ndarray, allowed: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Keep the allowed classes of ``mask``, then a random flip/turn and a shift that keeps the defect inside."""
    keep = np.isin(mask, allowed)
    out = dihedral(np.where(keep, mask, 0).astype(np.uint8), int(rng.integers(0, 8)))
    ys, xs = np.nonzero(out)
    h, w = out.shape
    dy = int(rng.integers(-ys.min(), h - ys.max()))
    dx = int(rng.integers(-xs.min(), w - xs.max()))
    return np.roll(out, (dy, dx), axis=(0, 1))  # the shift keeps every defect pixel, so nothing wraps


def pick_mask(masks: Sequence[np.ndarray], allowed: tuple[int, ...], rng: np.random.Generator) -> int:
    """Index of a mask that holds at least one allowed class."""
    fits = [i for i, m in enumerate(masks) if np.isin(m, allowed).any()]
    if not fits:
        raise DataError(f"no mask holds any of the classes {list(allowed)}")
    return int(rng.choice(fits))


# ---------------------------------------------------------------- building the per-sample requests


@dataclass
class GuidedRequest:
    """A guided sampling request as the user states it (the CLI's flags, or Python)."""

    mode: str  # onto | masks | into-training
    mask_source: str  # folder | train | model
    good: Path | None = None
    masks: Path | None = None
    pairing: str = "stem"  # onto + mask folder: by stem, or at random
    classes: str | None = None
    blend: int = 2
    resample: int = 1
    defects_per_image: int | None = None  # full-size pairs: new defects (windows) per image (None: 1)
    region: Path | None = None  # full-size pairs: masks by stem, non-zero where new defects may go
    strength: float | None = None  # mask source paste: the pasted window noised to strength * T (None: 0.5)

    def check(self) -> None:
        if self.mode not in MODES[1:]:
            raise DataError(f"unknown guided mode '{self.mode}'")
        if self.mask_source not in MASK_SOURCES:
            raise DataError(f"unknown mask source '{self.mask_source}' (choose from {', '.join(MASK_SOURCES)})")
        if self.mode == "onto" and self.good is None:
            raise DataError("onto mode needs a folder of good images (--onto GOOD_DIR)")
        if self.mode == "masks" and self.mask_source in ("model", "paste"):
            raise DataError(f"--mask-source {self.mask_source} needs a background: add --onto GOOD_DIR or --into-training")
        if self.strength is not None and self.mask_source != "paste":
            raise DataError("--strength sets how far a pasted defect may change: it needs --mask-source paste")
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise DataError(f"--strength must be above 0 and at most 1 (a share of the schedule), got {self.strength}")
        if self.mask_source == "folder" and self.masks is None:
            raise DataError("a mask folder is needed (--masks MASK_DIR), or --mask-source train|model")
        if self.pairing not in ("stem", "random"):
            raise DataError(f"--pairing must be 'stem' or 'random', got '{self.pairing}'")
        if self.blend < 0:
            raise DataError(f"--blend must be 0 or more pixels, got {self.blend}")
        if self.resample < 1:
            raise DataError(f"--resample must be at least 1, got {self.resample}")
        if self.defects_per_image is not None and self.defects_per_image < 1:
            raise DataError(f"--defects-per-image must be at least 1, got {self.defects_per_image}")
        placed = [f for f, v in (("--defects-per-image", self.defects_per_image), ("--region", self.region)) if v is not None]
        if placed and self.mask_source == "folder":
            raise DataError(f"{placed[0]} places defects drawn from the training pairs or chosen by the model; "
                            "a mask folder (--masks) places its own")
        if placed and self.mode == "masks":
            raise DataError(f"{placed[0]} places defects in a background image: add --onto GOOD_DIR or --into-training")


@dataclass
class _Inputs:
    """Everything a request reads from disk, at the model size, by stem."""

    backgrounds: dict[str, np.ndarray] = field(default_factory=dict)
    bases: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    pairs: list[str] | None = None  # onto + mask folder by stem: the stems that have both


def _read_inputs(req: GuidedRequest, run: Path, class_map: ClassMap, size: int, image_channels: int) -> _Inputs:
    inp = _Inputs()
    if req.mode == "onto":
        cfg = run_config(run)
        good = read_good_images(req.good, size, image_channels, "resize" if cfg is None else cfg.resize_mode)
        inp.backgrounds = {k: v.array for k, v in good.items()}
    if req.mask_source == "folder":
        folder = read_mask_folder(req.masks, class_map, size)
        inp.masks = {k: v.array for k, v in folder.items()}
        if req.mode == "onto" and req.pairing == "stem":
            inp.pairs = _stem_pairs(req, good, folder)
    if req.mask_source == "train" or req.mode == "into-training":
        images, masks, stems = training_pairs(run, class_map, size)
        if req.mode == "into-training":
            inp.backgrounds, inp.bases = dict(zip(stems, images)), dict(zip(stems, masks))
        if req.mask_source == "train":
            inp.masks = dict(zip(stems, masks))
    return inp


def build_conditions(
    req: GuidedRequest, run: Path, class_map: ClassMap, size: int, image_channels: int, num: int | None, seed: int
) -> tuple[Callable[[int], Condition], int]:
    """Check the request and read its inputs; return ``condition(i)`` for sample i, and the sample count.

    On a run trained with ``resize_mode: crop``, ``onto`` and ``into-training`` give full-size pairs
    (``FullSizeConditions``: every window placed now, so a request that cannot be met fails before
    anything is sampled) and mask -> image gives ``size x size`` windows.
    """
    req.check()
    plan, num = parse_classes(req.classes, class_map, num)
    cfg = run_config(run)
    if cfg is not None and cfg.resize_mode == "crop":
        if req.mode == "masks":
            return _window_masks(req, run, cfg, class_map, plan, seed), num
        return FullSizeConditions.build(req, run, cfg, class_map, image_channels, plan, seed), num
    if req.defects_per_image is not None or req.region is not None or req.mask_source == "paste":
        raise DataError("--defects-per-image, --region and --mask-source paste place defects in full-size images, which "
                        "needs a run trained with resize_mode: crop; this run squashes every image to size x size")
    inp = _read_inputs(req, run, class_map, size, image_channels)
    bg_stems, mask_stems = sorted(inp.backgrounds), sorted(inp.masks)
    empty = np.zeros((size, size), np.uint8)

    def condition(i: int) -> Condition:
        rng = np.random.default_rng(sample_seed(seed, i))
        allowed = plan[i]
        info: dict[str, object] = {"mode": req.mode, "mask_source": req.mask_source,
                                   "classes": [class_map.names[c] for c in allowed]}
        bg = ms = None
        if inp.pairs is not None:
            bg = ms = inp.pairs[i % len(inp.pairs)]
        elif bg_stems:
            bg = bg_stems[int(rng.integers(len(bg_stems)))]
        image, base = inp.backgrounds.get(bg), inp.bases.get(bg, empty)
        if bg is not None:
            info["source_image"] = bg
        if req.mask_source == "model":
            return Condition(image, None, base, allowed, info)
        if ms is None:
            ms = mask_stems[pick_mask([inp.masks[s] for s in mask_stems], allowed, rng)]
        info["source_mask"] = ms
        if req.mask_source == "train":
            new = _placed(inp.masks[ms], allowed, base, rng, class_map)
        else:  # the user's own mask is used where it is drawn, with only the requested classes
            new = np.where(np.isin(inp.masks[ms], (0, class_map.ignore_index, *allowed)), inp.masks[ms], 0)
        if req.mode == "masks":
            return Condition(None, new.astype(np.uint8), empty, allowed, info)
        paint = (new > 0) & (new != class_map.ignore_index) & (base == 0)
        if not paint.any():
            raise DataError(f"sample {i}: mask '{ms}' has no requested defect pixel on the background of '{bg}'")
        mask = base.copy()
        mask[paint] = new[paint]
        return Condition(image, mask, base, allowed, info)

    return condition, num


def _placed(mask: np.ndarray, allowed: tuple[int, ...], base: np.ndarray, rng: np.random.Generator,
            class_map: ClassMap, tries: int = 50) -> np.ndarray:
    """A transformed training mask whose defect lands on the background's free pixels (a few tries)."""
    for _ in range(tries):
        placed = place_mask(mask, allowed, rng)
        if ((placed > 0) & (placed != class_map.ignore_index) & (base == 0)).any():
            break
    return placed


def _stem_pairs(req: GuidedRequest, good: dict[str, "Loaded"], folder: dict[str, "Loaded"]) -> list[str]:
    """Stems that have both a good image and a mask, with equal original sizes."""
    common = sorted(set(good) & set(folder))
    if not common:
        raise DataError(f"{req.masks}: no mask has the stem of a good image in {req.good} "
                        f"(masks {sorted(folder)[:3]}, images {sorted(good)[:3]}); name them alike or pass --pairing random")
    unused = sorted(set(good) - set(common))
    if unused:
        print(f"[defectgen] {len(unused)} good images have no mask of the same stem and are not used: {unused[:3]}",
              file=sys.stderr)
    for stem in common:
        if folder[stem].size != good[stem].size:
            (mw, mh), (w, h) = folder[stem].size, good[stem].size
            raise DataError(f"{folder[stem].path}: mask size {mw}x{mh} differs from image {good[stem].path.name} "
                            f"size {w}x{h}")
    return common


# ---------------------------------------------------------------- full-size pairs on crop-mode runs


@dataclass
class FullCondition:
    """What one full-size sample is asked to be: a whole background and the windows of its new defects."""

    image: np.ndarray  # (H,W,3) uint8, the background at its own resolution
    base: np.ndarray  # (H,W) labels that are kept (zeros for a good image)
    region: np.ndarray | None  # (H,W) bool: where new defect pixels may go (None: anywhere)
    windows: list[Window]
    allowed: tuple[int, ...]
    info: dict

    def window_conditions(self, size: int, class_map: ClassMap) -> list[Condition]:
        """One ``size x size`` request per window, at the run's scale: what the UNets saw in training."""
        out = []
        for w in self.windows:
            image = resize_image(self.image[w.box], size)
            base = resize_mask(self.base[w.box], size, class_map.num_classes, class_map.ignore_index)
            if w.new_model is None:
                hold = base == class_map.ignore_index
                if self.region is not None:
                    hold |= resize_mask(self.region[w.box].astype(np.uint8), size, 2) == 0
                out.append(Condition(image, None, base, self.allowed, hold=hold))
                continue
            mask = base.copy()
            put = (w.new_model > 0) & (w.new_model != class_map.ignore_index) & (base == 0)
            mask[put] = w.new_model[put]
            out.append(Condition(image, mask, base, self.allowed, start=self._pasted(w, size)))
        return out

    def _pasted(self, w: Window, size: int) -> np.ndarray | None:
        """The window with its copied defect pixels pasted in, at the run's scale (None: nothing copied)."""
        if w.pixels is None:
            return None
        window = self.image[w.box].copy()
        put = (w.new > 0) & (self.base[w.box] == 0)
        window[put] = w.pixels[put]
        return resize_image(window, size)

    def compose(self, outputs: Sequence[tuple[np.ndarray, np.ndarray, Condition]], size: int, blend: int,
                class_map: ClassMap) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """The full-size image and mask from each window's (image, mask, request), and each window's record.

        The new defect goes where the background is unlabelled (and inside the region); only it and
        its blend band are written into the image. ``blend`` is in pixels at the run's scale.
        """
        image, mask, records = self.image.copy(), self.base.copy(), []
        for w, (win_image, win_mask, cond) in zip(self.windows, outputs):
            new = w.new
            if new is None:  # the model's own label on the pixels it was free to paint, back at image scale
                free = (cond.base == 0) & ~cond.hold
                new = resize_mask(np.where(free, win_mask, 0).astype(np.uint8), w.side, class_map.num_classes,
                                  class_map.ignore_index)
                if self.region is not None:
                    new = np.where(self.region[w.box], new, 0)
            paint = (new > 0) & (new != class_map.ignore_index) & (self.base[w.box] == 0)
            resampled = w.side != size
            band = round(blend * w.side / size) if resampled else blend
            image[w.box] = composite(self.image[w.box], resize_image(win_image, w.side), paint, band, resampled)
            mask[w.box][paint] = new[paint]
            names = [class_map.names[c] for c in np.unique(new[paint]).tolist()]
            records.append({**w.record(size), "new_pixels": int(paint.sum()), "new_classes": names})
        return image, mask, records


@dataclass
class _Background:
    path: Path
    image: np.ndarray
    base: np.ndarray | None  # kept labels (training images); None for a good image
    region: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[:2]

    def loaded(self) -> Loaded:
        return Loaded(self.image, (self.shape[1], self.shape[0]), self.path)

    def blocked(self, class_map: ClassMap) -> np.ndarray | None:
        """Pixels a new defect must not cover: the image's own labels and what lies outside its region."""
        parts = [p for p in (None if self.base is None else self.base > 0,
                             None if self.region is None else ~self.region) if p is not None]
        return None if not parts else np.logical_or.reduce(parts)


@dataclass
class _Layout:
    background: str
    windows: list[Window]
    allowed: tuple[int, ...]
    info: dict


class FullSizeConditions:
    """``condition(i)`` of a full-size request: every sample's background and windows are chosen when
    the request is built (from the sample's own seed), so a window that does not fit is an error
    before the first pair is sampled; the arrays are cut when a sample is asked for."""

    full_size = True

    def __init__(self, backgrounds: dict[str, _Background], layouts: list[_Layout], size: int, long_side: int | None):
        self.backgrounds, self.layouts, self.size, self.long_side = backgrounds, layouts, size, long_side

    def __call__(self, i: int) -> FullCondition:
        lay = self.layouts[i]
        bg = self.backgrounds[lay.background]
        base = bg.base if bg.base is not None else np.zeros(bg.shape, np.uint8)
        return FullCondition(bg.image, base, bg.region, lay.windows, lay.allowed, lay.info)

    @classmethod
    def build(cls, req: GuidedRequest, run: Path, cfg: GeneratorConfig, class_map: ClassMap, image_channels: int,
              plan: list[tuple[int, ...]], seed: int) -> "FullSizeConditions":
        backgrounds = _full_backgrounds(req, run, class_map, image_channels)
        if req.region is not None:
            _read_regions(req.region, backgrounds)
        masks = _full_masks(req, run, cfg, class_map)
        count = req.defects_per_image or 1
        for stem, bg in backgrounds.items():
            side = window_side(bg.shape[1], bg.shape[0], cfg.size, cfg.long_side)
            if req.mask_source != "folder" and count > max_windows(bg.shape, side):
                raise DataError(f"{bg.path}: --defects-per-image {count}: at most {max_windows(bg.shape, side)} windows "
                                f"of {side}x{side} px fit side by side in this {bg.shape[1]}x{bg.shape[0]} image")
        by_stem = req.mode == "onto" and req.mask_source == "folder" and req.pairing == "stem"
        pairs = _stem_pairs(req, {k: b.loaded() for k, b in backgrounds.items()}, masks) if by_stem else None
        sources = _paste_sources(run, class_map, backgrounds) if req.mask_source == "paste" else {}
        layouts = [_layout(i, req, cfg, class_map, backgrounds, masks, pairs, plan[i], count, seed, sources)
                   for i in range(len(plan))]
        return cls(backgrounds, layouts, cfg.size, cfg.long_side)


def _full_backgrounds(req: GuidedRequest, run: Path, class_map: ClassMap, image_channels: int) -> dict[str, _Background]:
    """The backgrounds at their own size: good images (onto) or the generator's training pairs (into-training)."""
    if req.mode == "onto":
        return {k: _Background(v.path, v.array, None) for k, v in read_good_images(req.good, None, image_channels).items()}
    out = {}
    for rec in training_records(run, class_map):
        image, mask = load_pair(rec, class_map)
        out[rec.stem] = _Background(rec.image, image, mask)
    return out


def _read_regions(folder: Path, backgrounds: dict[str, _Background]) -> None:
    """``--region``: one mask per background stem, its size; non-zero = a new defect may go there."""
    files = {p.stem: p for p in _image_files(Path(folder))}
    for stem, bg in backgrounds.items():
        if stem not in files:
            raise DataError(f"{folder}: no region mask for '{stem}' ({bg.path}); --region needs one per background "
                            f"image, named by its stem (found {sorted(files)[:3]})")
        region = _mask_array(_open(files[stem]), files[stem]) > 0
        if region.shape != bg.shape:
            raise DataError(f"{files[stem]}: region mask size {region.shape[1]}x{region.shape[0]} differs from image "
                            f"{bg.path.name} size {bg.shape[1]}x{bg.shape[0]}")
        if not region.any():
            raise DataError(f"{files[stem]}: empty region mask (no non-zero pixel): no defect could be placed")
        bg.region = region


def _full_masks(req: GuidedRequest, run: Path, cfg: GeneratorConfig, class_map: ClassMap) -> dict[str, Loaded]:
    """Masks by stem: the user's at their own size, or the training masks at the run's scale (model, paste: none)."""
    if req.mask_source == "folder":
        return read_mask_folder(req.masks, class_map, None)
    if req.mask_source in ("model", "paste"):
        return {}

    records = training_records(run, class_map)
    _, scaled = load_scaled(records, class_map, cfg.long_side, cfg.size)
    return {r.stem: Loaded(m, (m.shape[1], m.shape[0]), r.mask or r.image) for r, m in zip(records, scaled)}


def _layout(i: int, req: GuidedRequest, cfg: GeneratorConfig, class_map: ClassMap, backgrounds: dict[str, _Background],
            masks: dict[str, Loaded], pairs: list[str] | None, allowed: tuple[int, ...], count: int, seed: int,
            sources: dict[str, tuple[np.ndarray, np.ndarray]]) -> _Layout:
    """Sample i's background and windows, drawn from its own seed (``sources``: the pairs paste cuts from)."""
    rng = np.random.default_rng(sample_seed(seed, i))
    stems = sorted(backgrounds)
    stem = pairs[i % len(pairs)] if pairs else stems[int(rng.integers(len(stems)))]
    bg = backgrounds[stem]
    side = window_side(bg.shape[1], bg.shape[0], cfg.size, cfg.long_side)
    info = {"mode": req.mode, "mask_source": req.mask_source, "classes": [class_map.names[c] for c in allowed],
            "source_image": stem, "image_size": [bg.shape[1], bg.shape[0]]}
    if req.mask_source == "folder":
        ms = stem if pairs else _same_size_mask(masks, bg, allowed, rng, req.masks)
        windows = cover_mask(masks[ms].array, allowed, side, str(masks[ms].path))
        if not windows:
            raise DataError(f"{masks[ms].path}: no defect pixel of the classes {info['classes']} in this mask")
        for w in windows:
            w.new_model = resize_mask(w.new, cfg.size, class_map.num_classes, class_map.ignore_index)
            w.info = {"mask_source": "folder", "source_mask": ms}
        return _Layout(stem, windows, allowed, info)
    draw = None
    if req.mask_source == "train":
        names, scaled = sorted(masks), [masks[s].array for s in sorted(masks)]
        draw = lambda r: _train_window(names, scaled, allowed, cfg.size, side, r, class_map)  # noqa: E731
    if req.mask_source == "paste":  # a defect of another training image, with its pixels
        others = {k: v for k, v in sources.items() if k != stem} or sources
        draw = lambda r: _paste_window(others, allowed, cfg, side, r, class_map)  # noqa: E731
    windows = place_windows(bg.shape, side, count, rng, bg.blocked(class_map), draw)
    if windows is None:
        where = " inside --region" if bg.region is not None else ""
        own = " off its own defects" if bg.base is not None else ""
        raise DataError(f"{bg.path}: {count} defect window(s) of {side}x{side} px do not fit without overlapping{where}{own} "
                        f"(sample {i}); lower --defects-per-image" + (" or widen the region" if where else ""))
    for w in windows:
        w.info.setdefault("mask_source", req.mask_source)
    return _Layout(stem, windows, allowed, info)


def _train_window(stems: list[str], masks: list[np.ndarray], allowed: tuple[int, ...], size: int, side: int,
                  rng: np.random.Generator, class_map: ClassMap) -> Window:
    """A new defect cut from a training mask at the run's scale (a window around one of its defects)."""
    k = pick_mask(masks, allowed, rng)
    crop, _, where = cut_defect(masks[k], allowed, size, rng)
    new = resize_mask(crop, side, class_map.num_classes, class_map.ignore_index)
    return Window(0, 0, side, new, crop, {"mask_source": "train", "source_mask": stems[k], **where})


def _paste_sources(run: Path, class_map: ClassMap, backgrounds: dict[str, _Background]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The training pairs at their own size, by stem (already read when they are the backgrounds)."""
    if all(b.base is not None for b in backgrounds.values()):
        return {k: (b.image, b.base) for k, b in backgrounds.items()}
    return {r.stem: load_pair(r, class_map) for r in training_records(run, class_map)}


def _paste_window(pairs: dict[str, tuple[np.ndarray, np.ndarray]], allowed: tuple[int, ...], cfg: GeneratorConfig,
                  side: int, rng: np.random.Generator, class_map: ClassMap) -> Window:
    """A real defect cut with its pixels from another training image (a window of the run's scale around
    it, randomly flipped or turned), at the target's ``side``: copy-paste, before the model harmonises it."""
    stems = sorted(pairs)
    k = pick_mask([pairs[s][1] for s in stems], allowed, rng)
    image, mask = pairs[stems[k]]
    src_side = window_side(mask.shape[1], mask.shape[0], cfg.size, cfg.long_side)
    cut, pixels, where = cut_defect(mask, allowed, src_side, rng, image)
    nc, ig = class_map.num_classes, class_map.ignore_index
    return Window(0, 0, side, resize_mask(cut, side, nc, ig), resize_mask(cut, cfg.size, nc, ig),
                  {"mask_source": "paste", "source_mask": stems[k], **where}, pixels=resize_image(pixels, side))


def _same_size_mask(masks: dict[str, Loaded], bg: _Background, allowed: tuple[int, ...], rng: np.random.Generator,
                    folder: Path | None) -> str:
    """--pairing random: a mask of the background's size holding an allowed class."""
    fits = sorted(k for k, m in masks.items() if m.array.shape == bg.shape and np.isin(m.array, allowed).any())
    if not fits:
        raise DataError(f"{folder}: no mask of {bg.path.name}'s size {bg.shape[1]}x{bg.shape[0]} holds the classes "
                        f"{list(allowed)}; full-size masks are drawn where they are, so sizes must match")
    return fits[int(rng.integers(len(fits)))]


def _window_masks(req: GuidedRequest, run: Path, cfg: GeneratorConfig, class_map: ClassMap,
                  plan: list[tuple[int, ...]], seed: int) -> Callable[[int], Condition]:
    """mask -> image on a crop-mode run: ``size x size`` windows, since a full-size mask has no image to go
    with. A mask folder must hold window-sized masks; training masks give a window around one of their defects."""
    size = cfg.size
    masks = _full_masks(req, run, cfg, class_map)
    if req.mask_source == "folder":
        for m in masks.values():
            if max(m.size) > size:
                raise DataError(f"{m.path}: a {m.size[0]}x{m.size[1]} mask; mask -> image on a run trained on crops "
                                f"makes {size}x{size} windows, so masks may be at most that size; to paint full-size "
                                "masks, give their backgrounds: --onto GOOD_DIR --masks DIR")
    stems = sorted(masks)
    arrays = [masks[s].array for s in stems]
    empty = np.zeros((size, size), np.uint8)

    def condition(i: int) -> Condition:
        rng = np.random.default_rng(sample_seed(seed, i))
        allowed = plan[i]
        k = pick_mask(arrays, allowed, rng)
        info = {"mode": "masks", "mask_source": req.mask_source, "classes": [class_map.names[c] for c in allowed],
                "source_mask": stems[k]}
        if req.mask_source == "train":
            new, _, where = cut_defect(arrays[k], allowed, size, rng)
            info.update(where)
        else:
            kept = np.where(np.isin(arrays[k], (0, class_map.ignore_index, *allowed)), arrays[k], 0).astype(np.uint8)
            new = np.asarray(Image.fromarray(kept).resize((size, size), Image.NEAREST))
        return Condition(None, new, empty, allowed, info)

    return condition
