"""Segmentation evaluation: does training on real + synthetic pairs segment defects better?

- ``models``: the baseline segmenters (smp factories by name).
- ``train``: ``SegConfig``, ``fit_segmenter``, ``predict`` (fixed steps, same schedule for every run).
- ``metrics``: confusion matrix, IoU/Dice, mIoU (all and defect-only), FP/FN, image-level detection.
- ``mixing``: synthetic sets, the ratio mixing and the leak check.
- ``copypaste``: the non-generative baseline.
- ``evaluate``: ``run_evaluation`` (one model, one ratio, several seeds).
- ``ablate``: the resumable grid with table, plot and report.
- ``stats``: mean ± std and the paired gain with a t-interval.
"""
