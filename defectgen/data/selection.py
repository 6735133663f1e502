"""Few-shot selection: the same options pick the same real images for every command."""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from defectgen.data.errors import DataError
from defectgen.data.dataset import open_dataset
from defectgen.data.formats import FORMATS, DefectDataset, PairRecord
from defectgen.data.loading import present_classes


def read_stem_list(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: stem list not found")
    stems = [s.strip() for s in path.read_text().split() if s.strip()]
    if not stems:
        raise DataError(f"{path}: stem list is empty")
    return stems


def _split_records(ds: DefectDataset, split: str | None) -> list[PairRecord]:
    if split is None:
        return list(ds.records)
    if split not in ds.splits:
        raise DataError(f"{ds.root}: no split '{split}' (available: {', '.join(sorted(ds.splits)) or 'none'})")
    keep = set(ds.splits[split])
    return [r for r in ds.records if r.stem in keep]


def _shots_per_class(ds: DefectDataset, candidates: list[PairRecord], shots: int, seed: int) -> list[PairRecord]:
    order = list(candidates)
    random.Random(seed).shuffle(order)
    need = {cid: shots for cid in ds.class_map.defect_ids}
    chosen: list[PairRecord] = []
    for rec in order:
        if not any(need.values()):
            break
        for cid in sorted(present_classes(rec, ds.class_map)):
            if need.get(cid, 0) > 0:
                need[cid] -= 1
                chosen.append(rec)
                break
    short = {ds.class_map.names[c]: n for c, n in need.items() if n > 0}
    # a class with no image at all in the data (e.g. NEU's unused 'others') is not a shortage
    absent = {name for name, n in short.items() if n == shots}
    if short and set(short) - absent:
        raise DataError(f"{ds.root}: not enough images for {shots} shots per class; missing {short}")
    return sorted(chosen, key=lambda r: r.stem)


def select_records(
    ds: DefectDataset,
    *,
    split: str | None = None,
    shots: int | None = None,
    seed: int = 0,
    list_file: Path | None = None,
) -> list[PairRecord]:
    """Restrict to ``split``, then take the stems in ``list_file`` or ``shots`` images per defect class."""
    candidates = _split_records(ds, split)
    if list_file is not None:
        stems = read_stem_list(list_file)
        index = {r.stem: r for r in candidates}
        missing = [s for s in stems if s not in index]
        if missing:
            raise DataError(f"{list_file}: stems not in the data{' split ' + split if split else ''}: {missing[:5]}")
        return [index[s] for s in stems]
    if shots is not None:
        if shots < 1:
            raise DataError(f"--shots must be at least 1, got {shots}")
        return _shots_per_class(ds, candidates, shots, seed)
    if not candidates:
        raise DataError(f"{ds.root}: no images selected")
    return candidates


def add_selection_args(parser: argparse.ArgumentParser, data_flag: str = "--data", required: bool = True) -> None:
    """The shared options that pick the real images: every command that reads real data uses these."""
    g = parser.add_argument_group("real data selection")
    g.add_argument(data_flag, dest="data", type=Path, default=None,
                   help="data folder" + (" (or --images DIR --masks DIR)" if required else ""))
    g.add_argument("--format", choices=FORMATS, default=None, help="data layout (auto-detected by default)")
    g.add_argument("--images", type=Path, default=None, help="image folder of an image/mask folder pair (with --masks)")
    g.add_argument("--masks", type=Path, default=None, help="mask folder matching --images by file stem")
    g.add_argument("--good", type=Path, default=None, help="folder of defect-free images (never a class, never a shot)")
    g.add_argument("--threshold", type=int, default=None,
                   help="binary masks: pixels above this are defect (default 127 for 8-bit, 0 for 0/1 masks)")
    g.add_argument("--mask-suffix", default=None, help="binary-per-class: mask file suffix, e.g. _mask")
    g.add_argument("--split", default=None, help="restrict to a split file's stems, e.g. train")
    g.add_argument("--shots", type=int, default=None, help="K images per defect class")
    g.add_argument("--seed", type=int, default=0, help="seed of the few-shot selection")
    g.add_argument("--list", dest="list_file", type=Path, default=None, help="file of exact stems to use")
    parser.set_defaults(data_required=required, data_flag=data_flag)


def dataset_from_args(args: argparse.Namespace, log: bool = True) -> DefectDataset:
    """Open the data named by the selection options; print what the reader found (to stderr)."""
    if args.data is None and args.images is None and getattr(args, "data_required", True):
        raise DataError(f"no data given: pass {getattr(args, 'data_flag', '--data')} DIR, or --images DIR --masks DIR")
    ds = open_dataset(args.data, args.format, args.mask_suffix, images=args.images, masks=args.masks,
                      good=args.good, threshold=args.threshold)
    if log:
        for line in ds.report:
            print(f"[data] {line}", file=sys.stderr)
    return ds


def selection_from_args(args: argparse.Namespace) -> tuple[DefectDataset, list[PairRecord]]:
    ds = dataset_from_args(args)
    recs = select_records(ds, split=args.split, shots=args.shots, seed=args.seed, list_file=args.list_file)
    return ds, recs
