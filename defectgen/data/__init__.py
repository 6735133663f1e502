"""Reading defect data: layouts, the class map, decoding pairs, few-shot selection."""
from defectgen.data.classmap import IGNORE_INDEX, ClassMap, read_labels_file
from defectgen.data.errors import DataError
from defectgen.data.dataset import good_images, open_dataset
from defectgen.data.folders import read_good_images, read_mask_folder
from defectgen.data.formats import FORMATS, detect_format
from defectgen.data.records import DefectDataset, PairRecord
from defectgen.data.loading import load_pair, load_pairs, present_classes, read_mask_ids
from defectgen.data.selection import SelectionConfig, read_stem_list, select_records

__all__ = [
    "IGNORE_INDEX", "ClassMap", "read_labels_file", "DataError", "FORMATS", "DefectDataset", "PairRecord",
    "detect_format", "good_images", "open_dataset", "load_pair", "load_pairs", "present_classes", "read_mask_ids",
    "SelectionConfig", "read_stem_list", "select_records", "read_good_images", "read_mask_folder",
]
