"""Generation metrics: FID, Inception Score, precision/recall (torch-fidelity) and FD-DINOv2 (EDM2), in one namespace.

The code lives in one module per concern; this module gathers their public names:

- ``dc_ae_hf/metrics/frechet.py``: :func:`feature_statistics`, :func:`frechet_distance`, :func:`save_statistics`,
  :func:`load_statistics` (the Frechet distance of ``dc_gen/apps/metrics/fid/fid.py`` and the ``.npz`` files),
- ``dc_ae_hf/metrics/inception.py``: :func:`inception_features`, :func:`compute_reference_statistics`,
  :func:`fid_from_reference_statistics`, :func:`compute_generation_metrics` (torch-fidelity's Inception, and how it
  differs from the official ``dc_gen/apps/metrics/fid``),
- ``dc_ae_hf/metrics/dinov2.py``: :data:`DEFAULT_DINOV2`, :func:`load_dinov2`, :func:`dinov2_features`,
  :func:`fd_dinov2` (EDM2's FD-DINOv2),
- ``dc_ae_hf/metrics/image_sets.py``: the image sets all of them read (folders, tensors, datasets).
"""

from __future__ import annotations

from dc_ae_hf.metrics.dinov2 import DEFAULT_DINOV2, dinov2_features, fd_dinov2, load_dinov2
from dc_ae_hf.metrics.frechet import feature_statistics, frechet_distance, load_statistics, save_statistics
from dc_ae_hf.metrics.image_sets import ImageSet
from dc_ae_hf.metrics.inception import (
    compute_generation_metrics,
    compute_reference_statistics,
    fid_from_reference_statistics,
    inception_features,
)

__all__ = [
    "DEFAULT_DINOV2",
    "ImageSet",
    "compute_generation_metrics",
    "compute_reference_statistics",
    "dinov2_features",
    "fd_dinov2",
    "feature_statistics",
    "fid_from_reference_statistics",
    "frechet_distance",
    "inception_features",
    "load_dinov2",
    "load_statistics",
    "save_statistics",
]
