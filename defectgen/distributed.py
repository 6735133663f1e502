"""Several processes (``torchrun`` / ``accelerate launch``), one result: who works on what, who writes.

Every process computes; only the main process writes shared files (logs, previews, checkpoints,
``final/``, ``pipeline/``, the sample manifest), and the others wait at a barrier where they must
read what it wrote. A single process needs no launcher: everything here then is the identity.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

T = TypeVar("T")


def process_state() -> PartialState:
    """The process group this program was launched into (one process when started plainly).

    Without CUDA (or with ``ACCELERATE_USE_CPU=true``) several processes form a CPU (gloo) group,
    as accelerate's ``Accelerator`` would set it up; whichever is created first fixes the group.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Process ``rank``'s share of ``items``: every ``world``-th item, so the shares stay balanced."""
    return list(items[rank::world])
