"""Where guided sampling's requests used to live; they are in ``defectgen.pipelines.defectgen`` now (re-exported
here), the readers of the user's folders in ``defectgen.data.folders`` and of the run's pairs in ``RunFolder``."""
from pathlib import Path

import numpy as np

from defectgen.data import ClassMap
from defectgen.data.folders import Loaded, read_good_images, read_mask_folder
from defectgen.pipelines.defectgen.conditions import build_conditions
from defectgen.pipelines.defectgen.full_size import FullCondition, FullSizeConditions
from defectgen.pipelines.defectgen.guidance import Condition, init_batch, known_batch
from defectgen.pipelines.defectgen.request import (MASK_SOURCES, MODES, PASTE_STRENGTH, GuidedRequest, parse_classes,
                                                   pick_mask, place_mask)
from defectgen.run import RunFolder

__all__ = ["MASK_SOURCES", "MODES", "PASTE_STRENGTH", "Condition", "FullCondition", "FullSizeConditions",
           "GuidedRequest", "Loaded", "build_conditions", "init_batch", "known_batch", "parse_classes", "pick_mask",
           "place_mask", "read_good_images", "read_mask_folder", "training_pairs"]


def training_pairs(run: Path, class_map: ClassMap, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``RunFolder.find(run).training_pairs(class_map, size)``."""
    return RunFolder.find(run).training_pairs(class_map, size)
