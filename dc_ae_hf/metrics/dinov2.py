"""FD-DINOv2: the Frechet distance in DINOv2 feature space, as EDM2 computes it.

EDM2 (``calculate_metrics.py``, ``DINOv2Detector``): uint8 images -> bicubic antialiased resize to 224x224 -> /255
-> ImageNet mean/std -> DINOv2 ViT-L/14 CLS token after the final layer norm (the Hugging Face ``Dinov2Model``
``pooler_output``; ``facebook/dinov2-large`` holds the weights of the torch.hub ``dinov2_vitl14`` used by EDM2) ->
Frechet distance (``dc_ae_hf/metrics/frechet.py``). Image sets: ``dc_ae_hf/metrics/image_sets.py``.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dc_ae_hf.checks import check_int
from dc_ae_hf.extras import missing_extra
from dc_ae_hf.metrics.frechet import feature_statistics, frechet_distance, load_statistics
from dc_ae_hf.metrics.image_sets import ImageSet, as_dataset, is_statistics_file

try:
    from transformers import Dinov2Model
except ImportError as error:
    raise missing_extra(error, "dc_ae_hf.metrics (FID, IS, precision/recall, FD-DINOv2)") from error

__all__ = ["DEFAULT_DINOV2", "dinov2_features", "fd_dinov2", "load_dinov2"]

DEFAULT_DINOV2 = "facebook/dinov2-large"  # ViT-L/14, the model EDM2 uses for FD-DINOv2
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def load_dinov2(
    name_or_path: str | os.PathLike = DEFAULT_DINOV2,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Dinov2Model:
    """Load a ``transformers.Dinov2Model`` (Hub id or local folder) in eval mode with gradients off."""
    try:
        model = Dinov2Model.from_pretrained(os.fspath(name_or_path), cache_dir=cache_dir)
    except OSError as error:
        raise OSError(
            f"Could not load the DINOv2 model {os.fspath(name_or_path)!r} ({error}). Offline, pass a local folder "
            f"written by save_pretrained, or a Hub id already in the Hugging Face cache (cache_dir={cache_dir!r})."
        ) from error
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return model


@torch.no_grad()
def dinov2_features(images: ImageSet, model: Dinov2Model, batch_size: int = 64) -> torch.Tensor:
    """DINOv2 CLS features (N, D) float64 of an image set, preprocessed like EDM2's ``DINOv2Detector``."""
    if not isinstance(model, Dinov2Model):
        raise TypeError(f"model must be a transformers Dinov2Model, got {type(model).__name__}.")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    dataset = as_dataset(images, "images")
    parameter = next(model.parameters())
    mean = torch.tensor(_IMAGENET_MEAN, device=parameter.device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=parameter.device).view(1, 3, 1, 1)
    features = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(
                f"image datasets must yield uint8 (3, H, W) tensors, got a batch {batch.dtype} {tuple(batch.shape)}."
            )
        x = batch.to(parameter.device, torch.float32)  # (B, 3, H, W) in 0..255
        x = F.interpolate(x, size=(224, 224), mode="bicubic", antialias=True)  # (B, 3, 224, 224)
        x = (x / 255 - mean) / std
        cls = model(pixel_values=x.to(parameter.dtype)).pooler_output  # (B, D): CLS token after the final LayerNorm
        features.append(cls.double().cpu())
    return torch.cat(features)


def fd_dinov2(images: ImageSet, reference: ImageSet, model: Dinov2Model, batch_size: int = 64) -> float:
    """Frechet distance in DINOv2 feature space between an image set and a reference set or ``.npz`` file
    (``mu_dinov2``/``sigma_dinov2`` from ``compute_reference_statistics``)."""
    mu, sigma = feature_statistics(dinov2_features(images, model, batch_size))
    if is_statistics_file(reference):
        mu_ref, sigma_ref = load_statistics(reference, prefix="dinov2")
    else:
        mu_ref, sigma_ref = feature_statistics(dinov2_features(reference, model, batch_size))
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)
