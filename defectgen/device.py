"""The one device resolver of every command (``--device`` or, when not given, CUDA if available), and the
memory check that refuses sizes and counts the machine cannot hold."""
from __future__ import annotations

import os
from pathlib import Path

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


def memory_bytes(device: str | torch.device | None = None) -> int:
    """What arrays on ``device`` may take at most: the GPU's memory, or this machine's RAM (within a container's limit)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return int(torch.cuda.get_device_properties(dev).total_memory)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        return min(total, int(limit)) if limit.isdigit() else total
    except OSError:
        return total


def _human(nbytes: float) -> str:
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")
    k = 0
    while nbytes >= 1024 and k < len(units) - 1:
        nbytes, k = nbytes / 1024, k + 1
    return f"{nbytes:.0f} bytes" if k == 0 else f"{nbytes:.1f} {units[k]}"


def need_memory(nbytes: float, what: str, device: str | torch.device | None = None) -> None:
    """Refuse work whose arrays alone would not fit in memory, before anything is allocated.

    A size or count far beyond the machine is a mistake to name at once, not a MemoryError (or a
    killed process) minutes later; ``what`` names the flag or key and the arrays it asks for.
    """
    have = memory_bytes(device)
    if nbytes > have:
        raise ConfigError(f"{what} needs about {_human(nbytes)} of memory; this machine has {_human(have)}")
