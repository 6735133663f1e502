"""The one device resolver of every command: ``--device`` or, when not given, CUDA if available."""
from __future__ import annotations

import torch

from defectgen.config import ConfigError


def resolve_device(device: str | None = None) -> torch.device:
    """``device``, or cuda when available and else cpu; an unknown name or CUDA without a GPU is refused."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"--device {device}: not a device name (use cpu or cuda)") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: only cpu and cuda are supported")
    return dev
