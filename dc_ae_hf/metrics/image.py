"""Per-image reconstruction metrics: PSNR and SSIM, plus the official uint8 quantisation.

Range convention: the package's images are float tensors of shape (B, 3, H, W) in [-1, 1] (what the autoencoder
takes and returns). Both metrics default to that range; uint8 images (values 0..255) are accepted with
``data_range=255.0`` (PSNR) or ``data_range=(0.0, 255.0)`` (SSIM).

Official AE evaluation (``dc_gen/aecore/trainer.py``, ``dc_gen/apps/metrics/psnr/psnr.py``) quantises input and
reconstruction to uint8 first (:func:`to_uint8`), then computes per-image PSNR with peak 255 and torchmetrics'
``StructuralSimilarityIndexMeasure(data_range=(0.0, 255.0))`` (gaussian window 11, sigma 1.5, K1 0.01, K2 0.03).
``evaluate_autoencoder`` (``dc_ae_hf/metrics/autoencoder.py``) does exactly that with these functions.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "to_uint8"]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Quantise images in [-1, 1] to uint8 exactly like the official code.

    ``clamp(127.5 * x + 128, 0, 255)`` then a truncating cast (``dc_gen/c2icore/trainer.py``; the AE trainer's
    ``(255 * (0.5 * x + 0.5) + 0.5).clamp(0, 255).to(uint8)`` is the same formula), i.e. round half up.
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"images must be a floating point torch.Tensor in [-1, 1], got {_describe(images)}.")
    return torch.clamp(127.5 * images.float() + 128.0, 0, 255).to(torch.uint8)


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image: ``10 * log10(data_range**2 / MSE)``, shape (B,).

    Args:
        pred, target: images of shape (B, C, H, W). Float images in [-1, 1] by default; uint8 images need
            ``data_range=255.0``.
        data_range: width of the value range (the peak signal): 2.0 for [-1, 1], 1.0 for [0, 1], 255.0 for uint8.

    Identical images give ``inf``. Computed in float64 (official: ``dc_gen/apps/metrics/psnr/psnr.py``, on uint8
    with peak 255; averaging the returned values over all images reproduces its mean).
    """
    _check_pair(pred, target)
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)):
        raise TypeError(f"data_range must be a positive number (the width of the value range), got {data_range!r}.")
    data_range = float(data_range)
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive finite number, got {data_range}.")
    if pred.dtype == torch.uint8 and data_range != 255.0:
        raise ValueError(f"uint8 images have values 0..255, so data_range must be 255.0, got {data_range}.")
    mse = (pred.double() - target.double()).square().flatten(1).mean(dim=1)  # (B,)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: tuple[float, float] = (-1.0, 1.0),
    border: Literal["reflect", "valid"] = "reflect",
) -> torch.Tensor:
    """Structural similarity per image (mean over pixels and channels), shape (B,), computed in float64.

    Follows torchmetrics' ``structural_similarity_index_measure`` with a tuple ``data_range`` (what the official AE
    evaluation uses): gaussian window of size 11 (``int(3.5 * sigma + 0.5) * 2 + 1``) with sigma 1.5, K1 = 0.01,
    K2 = 0.03, images clamped to ``data_range``, C1 = (K1 L)^2 and C2 = (K2 L)^2 with L = high - low, variances
    clamped at 0. torchmetrics is not a dependency of this package (it is not installed here and would only be needed
    for this one function), so the same computation is written with ``torch.nn.functional.conv2d``.

    Args:
        pred, target: images of shape (B, C, H, W) with H, W >= 11 (float, or uint8 with ``data_range=(0, 255)``).
        data_range: (low, high) of the value range; (-1, 1) for the package's images. Images are shifted to
            [0, high - low] (SSIM is invariant to a common scale when C1 and C2 scale with it, but not to a shift,
            so this gives the same value as torchmetrics on the uint8 images of the same picture).
        border: "reflect" (torchmetrics releases after its PR #2721, Sept. 2024: reflect-pad by 5 pixels and
            average the SSIM map over the whole image) or "valid" (earlier torchmetrics releases, and
            ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``:
            average only over windows that fit inside the image). The official requirements do not pin torchmetrics;
            "reflect" is what a current install computes. The two differ only through the 5-pixel border.
    """
    _check_pair(pred, target)
    low, high = _check_value_range(data_range)
    if pred.dtype == torch.uint8 and (low, high) != (0.0, 255.0):
        raise ValueError(f"uint8 images have values 0..255, so data_range must be (0.0, 255.0), got {data_range}.")
    if border not in ("reflect", "valid"):
        raise ValueError(f"border must be 'reflect' or 'valid', got {border!r}.")
    sigma = 1.5
    kernel_size = int(3.5 * sigma + 0.5) * 2 + 1  # 11, torchmetrics' gaussian kernel size for sigma 1.5
    pad = (kernel_size - 1) // 2
    if min(pred.shape[-2:]) < kernel_size:
        raise ValueError(f"SSIM needs images of at least {kernel_size}x{kernel_size} pixels, got {tuple(pred.shape)}.")

    # float64: in float32 the variance E[x^2] - E[x]^2 cancels badly (errors of ~1e-4 in SSIM for flat regions).
    dtype = torch.float32 if pred.device.type == "mps" else torch.float64  # MPS has no float64
    x = pred.to(dtype).clamp(low, high) - low  # (B, C, H, W) in [0, L]
    y = target.to(dtype).clamp(low, high) - low
    value_range = high - low
    c1 = (0.01 * value_range) ** 2
    c2 = (0.03 * value_range) ** 2

    channels = x.shape[1]
    coords = torch.arange(kernel_size, dtype=dtype, device=x.device) - (kernel_size - 1) / 2
    gauss = torch.exp(-0.5 * (coords / sigma) ** 2)
    gauss = gauss / gauss.sum()  # (11,)
    # The 11x11 gaussian window is the outer product of two 1-D windows: filter rows, then columns.
    kernel_w = gauss.view(1, 1, 1, kernel_size).expand(channels, 1, 1, kernel_size)  # (C, 1, 1, 11)
    kernel_h = gauss.view(1, 1, kernel_size, 1).expand(channels, 1, kernel_size, 1)  # (C, 1, 11, 1)

    if border == "reflect":
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    # Local means and second moments of x, y, x^2, y^2, xy in one grouped convolution: (5B, C, H', W').
    moments = torch.cat([x, y, x * x, y * y, x * y])
    moments = F.conv2d(F.conv2d(moments, kernel_w, groups=channels), kernel_h, groups=channels)
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.split(x.shape[0])
    var_x = (e_xx - mu_x**2).clamp(min=0)
    var_y = (e_yy - mu_y**2).clamp(min=0)
    cov_xy = e_xy - mu_x * mu_y
    # Wang et al. 2004, Eq. 13.
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    for name, value in (("pred", pred), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {_describe(value)}.")
        if value.ndim != 4:
            raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(value.shape)}.")
        if not (value.is_floating_point() or value.dtype == torch.uint8):
            raise TypeError(f"{name} must be a float or uint8 tensor, got dtype {value.dtype}.")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    if (pred.dtype == torch.uint8) != (target.dtype == torch.uint8):
        raise TypeError(f"pred and target must both be uint8 or both be float, got {pred.dtype} and {target.dtype}.")


def _check_value_range(data_range: tuple[float, float]) -> tuple[float, float]:
    if (
        not isinstance(data_range, (tuple, list))
        or len(data_range) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in data_range)
    ):
        raise TypeError(f"data_range must be a (low, high) pair of numbers such as (-1.0, 1.0), got {data_range!r}.")
    low, high = float(data_range[0]), float(data_range[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"data_range must be finite with low < high, got {data_range!r}.")
    return low, high


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    return f"{type(value).__name__}"
