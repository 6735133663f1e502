"""FID and KID through torch-fidelity, with either the offline EfficientNet-Lite0 or Inception-v3.

Few-shot sets are tiny (5-shot NEU: 15 training images), so two choices matter:

- KID's subset size adapts: ``min(1000, n_real, n_fake)`` (torch-fidelity's default 1000 would refuse
  such sets). With a subset as large as the smaller set, the subsets of that set are all the same
  images; the spread over subsets then only reflects the other set's sampling.
- FID's covariance from fewer samples than feature dimensions (1280 or 2048) is rank-deficient, so
  FID is strongly biased upwards at these sizes; compare FIDs only at equal set sizes.

Inception-v3 is used only from a local file: ``inception_weights`` or torch-fidelity's download
cache. If neither exists we stop with a message instead of letting torch-fidelity try the network.
torch-fidelity reads a weights file with ``torch.load(weights_only=False)``, which runs whatever code
a pickle holds; so the file is read here, as tensors only (``inception_state``), and torch-fidelity
is handed those tensors, never the user's file.
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from defectgen.quality.features import (
    EFFICIENTNET_NAME,
    FEATURE_EXTRACTORS,
    FEATURE_LAYER,
    INCEPTION_NAME,
    NOT_COMPARABLE,
    FeatureExtractorError,
    as_uint8_nchw,
    extractor_label,
    register_with_torch_fidelity,
)

KID_MAX_SUBSET = 1000


class MissingWeightsError(FileNotFoundError):
    """The requested feature extractor's weights are not on this machine."""


class UInt8Images(Dataset):
    """A fixed set of images as torch-fidelity wants them: uint8 3 x H x W tensors."""

    def __init__(self, images: np.ndarray):
        x = as_uint8_nchw(images)
        self.images = x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def adaptive_kid_subset_size(n_real: int, n_fake: int, cap: int = KID_MAX_SUBSET) -> int:
    """The KID subset size: torch-fidelity's 1000, shrunk to the smaller set. Needs two samples each."""
    size = min(cap, n_real, n_fake)
    if size < 2:
        raise ValueError(f"KID needs at least 2 images in each set (real: {n_real}, generated: {n_fake})")
    return size


def inception_cache_path() -> Path:
    """Where torch-fidelity's ``load_state_dict_from_url`` keeps the Inception weights once downloaded."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3)


def resolve_inception_weights(path: str | Path | None) -> Path:
    """A local Inception-v3 weights file, or :class:`MissingWeightsError` (never a download)."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MissingWeightsError(f"Inception weights file not found: {path}")
        return path
    cached = inception_cache_path()
    if cached.is_file():
        return cached
    raise MissingWeightsError(
        f"Inception-v3 weights are not available offline: no --inception-weights file was given and "
        f"torch-fidelity's cache has no {cached}. Pass --inception-weights PATH (torch-fidelity's "
        f"'{cached.name}'), or use --feature-extractor {EFFICIENTNET_NAME} (offline; {NOT_COMPARABLE})."
    )


def inception_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an Inception-v3 weights file (``.safetensors``, or a torch file read with
    ``weights_only=True``), checked to fit torch-fidelity's Inception-v3; nothing in the file is run."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = Path(path)
    try:
        with warnings.catch_warnings():  # the weights-only unpickler's notes on a foreign pickle protocol
            warnings.simplefilter("ignore")
            state = load_file(str(path)) if path.suffix == ".safetensors" else \
                torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise FeatureExtractorError(f"{path}: holds pickled objects other than tensors, which could run code when read; "
                                    "not read (give torch-fidelity's Inception weights file or a .safetensors file)") from err
    except (OSError, EOFError, RuntimeError, ValueError, SafetensorError) as err:
        raise FeatureExtractorError(f"{path}: not a readable weights file ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from err
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise FeatureExtractorError(f"{path}: not a state dict (a mapping of names to tensors)")
    try:
        FeatureExtractorInceptionV3(INCEPTION_NAME, ["2048"], feature_extractor_weights_path=_as_file(state))
    except RuntimeError as err:  # load_state_dict: missing, unexpected or misshapen tensors
        raise FeatureExtractorError(f"{path}: these tensors do not fit torch-fidelity's Inception-v3 "
                                    f"({str(err).splitlines()[-1].strip()[:200]})") from err
    return state


def _as_file(state: dict[str, torch.Tensor]) -> io.BytesIO:
    """Tensors written as torch-fidelity's loader reads them: our own plain state dict, no foreign pickle."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def _kid_kwargs(n_real: int, n_fake: int, kid_subsets: int, kid_subset_size: int | None, seed: int) -> dict[str, Any]:
    size = kid_subset_size or adaptive_kid_subset_size(n_real, n_fake)
    if size > min(n_real, n_fake):
        raise ValueError(f"KID subset size {size} exceeds the smaller set ({min(n_real, n_fake)} images)")
    return {"kid_subsets": kid_subsets, "kid_subset_size": size, "rng_seed": seed}


def _result(raw: dict[str, float], extractor: str, n_real: int, n_fake: int, kid: dict[str, Any]) -> dict[str, Any]:
    return {
        "fid": float(raw["frechet_inception_distance"]),
        "kid_mean": float(raw["kernel_inception_distance_mean"]),
        "kid_std": float(raw["kernel_inception_distance_std"]),
        "kid_subset_size": kid["kid_subset_size"],
        "kid_subsets": kid["kid_subsets"],
        "n_real": n_real,
        "n_generated": n_fake,
        **extractor_label(extractor),
    }


def fid_kid(
    real_images: np.ndarray,
    generated_images: np.ndarray,
    feature_extractor: str = EFFICIENTNET_NAME,
    inception_weights: str | Path | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    seed: int = 2020,
) -> dict[str, Any]:
    """FID and KID between two image sets ((N,H,W[,3]) uint8) via ``torch_fidelity.calculate_metrics``."""
    import torch_fidelity

    if feature_extractor not in FEATURE_EXTRACTORS:
        raise ValueError(f"unknown feature extractor '{feature_extractor}' (choose from {', '.join(FEATURE_EXTRACTORS)})")
    kwargs: dict[str, Any] = {}
    if feature_extractor == INCEPTION_NAME:
        kwargs["feature_extractor_weights_path"] = _as_file(inception_state(resolve_inception_weights(inception_weights)))
    else:
        register_with_torch_fidelity()
    n_real, n_fake = len(real_images), len(generated_images)
    kid = _kid_kwargs(n_real, n_fake, kid_subsets, kid_subset_size, seed)
    from defectgen.device import resolve_device

    cuda = resolve_device(device).type == "cuda"
    raw = torch_fidelity.calculate_metrics(
        input1=UInt8Images(real_images),
        input2=UInt8Images(generated_images),
        fid=True,
        kid=True,
        feature_extractor=feature_extractor,
        batch_size=batch_size,
        cuda=cuda,
        cache=False,  # never write feature caches into the user's torch home
        save_cpu_ram=True,  # no DataLoader workers: the images are already in memory
        verbose=False,
        **kid,
        **kwargs,
    )
    return _result(raw, feature_extractor, n_real, n_fake, kid)


def fid_kid_from_features(
    real_features: np.ndarray,
    generated_features: np.ndarray,
    feature_extractor: str = EFFICIENTNET_NAME,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    seed: int = 2020,
) -> dict[str, Any]:
    """The same FID/KID from features already extracted (torch-fidelity's own statistics and MMD code).

    Lets :func:`defectgen.quality.compute_metrics` run the network once for FID, KID, memorisation and
    diversity; a test checks it matches :func:`fid_kid` on the same images.
    """
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    real = torch.as_tensor(np.asarray(real_features, dtype=np.float32))
    fake = torch.as_tensor(np.asarray(generated_features, dtype=np.float32))
    kid = _kid_kwargs(len(real), len(fake), kid_subsets, kid_subset_size, seed)
    raw = fid_statistics_to_metric(fid_features_to_statistics(real), fid_features_to_statistics(fake), verbose=False)
    raw.update(kid_features_to_metric(real, fake, verbose=False, **kid))
    return _result(raw, feature_extractor, len(real), len(fake), kid)


__all__ = [
    "FEATURE_LAYER",
    "MissingWeightsError",
    "UInt8Images",
    "adaptive_kid_subset_size",
    "fid_kid",
    "fid_kid_from_features",
    "inception_cache_path",
    "inception_state",
    "resolve_inception_weights",
]
