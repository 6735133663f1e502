"""Segmentation evaluation: does training on real + synthetic pairs segment defects better?

- ``models``: the baseline segmenters (smp factories by name).
- ``train``: ``SegConfig``, ``fit_segmenter``, ``predict`` (fixed steps, same schedule for every run).
- ``metrics``: confusion matrix, IoU/Dice (the one IoU of the project), mIoU (all and defect-only), FP/FN,
  image-level detection.
- ``mixing``: synthetic sets, the ratio mixing and the leak check.
- ``copypaste``: the non-generative baseline.
- ``usage``: how synthetic pairs enter training (``mix``, ``pretrain``, ``weighted``).
- ``evaluate``: ``train_and_score`` (one cell) and ``run_evaluation`` (one model, one ratio, one usage mode,
  several seeds).
- ``store``: the resumable result store of evaluate, ablate, the curve and compare: cells keyed by their protocol.
- ``ablate``: the resumable grid with table, plot and report.
- ``stats``: mean ± std and the paired gain with a t-interval.
- ``curve``: real-only val mIoU against steps (the step count is chosen on val).
- ``protocol``: the JSON-lines log of every choice, on which split, with which numbers.
"""
