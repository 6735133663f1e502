"""Generation-quality metrics: are the synthetic image + mask pairs good, and are they new?

- ``features``: the offline feature extractor (EfficientNet-Lite0 from a PyPI package), registered with torch-fidelity
- ``fidelity``: FID and KID through torch-fidelity
- ``memorisation``: nearest-training-image distances and the memorised share
- ``diversity``: mean pairwise and intra-cluster (IC-LPIPS-style) feature distances
- ``mask_agreement``: ``RealDataSegmenter``, trained on the real subset, and the IoU between its prediction and the
  generated mask
- ``filtering``: ``defectgen filter``, keeping the pairs that segmenter agrees with
- ``class_stats``: class frequency and defect-area distributions, real vs generated
- ``texture``: fine texture (mean |Laplacian| of the grey image) and defect share: how smooth a set is
- ``compute``: ``MetricsConfig``, ``evaluate`` (arrays) and ``compute_metrics`` (folders) run all of the above
- ``report``: ``metrics.json``, ``metrics.md`` and the figures; ``cli``: ``defectgen metrics``
"""
