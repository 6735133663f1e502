"""Metrics and statistics of the segmentation evaluation, checked against hand-computed values."""
import math

import numpy as np
import pytest

from defectgen.seg.metrics import SegMetrics, confusion_matrix, iou_dice, segmentation_metrics
from defectgen.seg.stats import mean_std, paired_gain, t_quantile

NAMES = ["background", "scratch", "spot", "hole"]


def test_confusion_matrix_drops_ignore_pixels():
    target = np.array([0, 0, 0, 1, 1, 1, 255, 255])
    pred = np.array([0, 0, 1, 1, 1, 2, 3, 0])  # the two ignore pixels must not count, whatever is predicted
    cm = confusion_matrix(pred, target, 4)
    expected = np.zeros((4, 4), int)
    expected[0, 0], expected[0, 1] = 2, 1
    expected[1, 1], expected[1, 2] = 2, 1
    np.testing.assert_array_equal(cm, expected)


def test_iou_dice_absent_and_predicted_only_classes():
    cm = np.array([[2, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    iou, dice = iou_dice(cm)
    # background: tp 2, gt 3, pred 2 -> 2/3; scratch: tp 2, gt 3, pred 3 -> 2/4
    # spot: never in GT but predicted once -> 0; hole: nowhere -> undefined
    np.testing.assert_allclose(iou[:3], [2 / 3, 0.5, 0.0])
    np.testing.assert_allclose(dice[:3], [4 / 5, 4 / 6, 0.0])
    assert math.isnan(iou[3]) and math.isnan(dice[3])


def test_segmentation_metrics_by_hand():
    target = np.array([[[0, 0], [0, 1]], [[1, 1], [255, 255]]], dtype=np.uint8)
    pred = np.array([[[0, 0], [1, 1]], [[1, 2], [3, 0]]], dtype=np.uint8)
    m = segmentation_metrics(pred, target, NAMES)
    assert m["miou_all"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)  # 'hole' left out of the mean (NaN)
    assert m["miou_defect"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["per_class"]["hole"]["iou"] is None
    assert m["per_class"]["spot"]["iou"] == 0.0
    assert m["pixel_fp_rate"] == pytest.approx(1 / 3)  # 1 of 3 background pixels called defect
    assert m["pixel_fn_rate"] == 0.0  # every defect pixel got some defect class
    assert m["pixel_accuracy"] == pytest.approx(4 / 6)
    assert m["image_recall"] == 1.0
    assert m["image_fp_rate"] is None  # no defect-free image: undefined, not a crash
    assert m["num_images"] == 2 and m["num_defective_images"] == 2


def test_image_level_detection_threshold_and_false_positives():
    acc = SegMetrics(NAMES[:2], detect_min_area=0.25)
    clean = np.zeros((1, 4, 4), np.uint8)
    small = clean.copy()
    small[0, 0, :4] = 1  # 4 of 16 pixels = 0.25: not more than the minimum, not flagged
    big = clean.copy()
    big[0, :2, :3] = 1  # 6 of 16: flagged
    acc.update(small, clean)  # clean image, small false alarm
    acc.update(big, clean)  # clean image, big false alarm
    acc.update(big, big)  # defective, found
    acc.update(clean, big)  # defective, missed
    m = acc.compute()
    assert m["image_recall"] == 0.5
    assert m["image_fp_rate"] == 0.5
    assert m["pixel_fn_rate"] == pytest.approx(6 / 12)


def test_all_ignore_image_is_not_flagged_and_counts_nothing():
    target = np.full((1, 4, 4), 255, np.uint8)
    m = segmentation_metrics(np.ones((1, 4, 4), np.uint8), target, NAMES[:2])
    assert m["miou_all"] is None and m["image_recall"] is None and m["image_fp_rate"] == 0.0


def test_t_quantile_table_and_paired_gain_by_hand():
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(60) == pytest.approx(2.0003, abs=1e-3)
    g = paired_gain([0.5, 0.6, 0.7], [0.4, 0.45, 0.6])  # differences 0.10, 0.15, 0.10
    sd = math.sqrt(((0.1 - 0.35 / 3) ** 2 * 2 + (0.15 - 0.35 / 3) ** 2) / 2)
    assert g["mean"] == pytest.approx(0.35 / 3)
    assert g["std"] == pytest.approx(sd)
    assert g["ci_high"] - g["mean"] == pytest.approx(4.3027 * sd / math.sqrt(3), rel=1e-4)
    assert paired_gain([0.5], [0.4])["ci_low"] is None  # one seed: no interval


def test_mean_std_skips_undefined_values():
    s = mean_std([0.2, None, 0.4, float("nan")])
    assert s["n"] == 2 and s["mean"] == pytest.approx(0.3) and s["std"] == pytest.approx(math.sqrt(0.02))
    assert mean_std([])["mean"] is None
    assert mean_std([0.5]) == {"mean": 0.5, "std": None, "n": 1}
