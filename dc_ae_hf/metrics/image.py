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

from typing import Literal

import torch

from dc_ae_hf.checks import check_number
from dc_ae_hf.extras import missing_extra

try:
    from torchmetrics.functional.image import structural_similarity_index_measure
except ImportError as error:
    raise missing_extra(error, "dc_ae_hf.metrics.image (SSIM)") from error

__all__ = ["psnr", "ssim", "to_uint8"]

_SSIM_SIGMA = 1.5
_SSIM_KERNEL_SIZE = int(3.5 * _SSIM_SIGMA + 0.5) * 2 + 1  # 11: torchmetrics' gaussian window for sigma 1.5


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
    data_range = check_number("data_range", data_range, minimum=0.0, exclusive_minimum=True)
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

    The SSIM map is torchmetrics' ``structural_similarity_index_measure`` with the settings of the official AE
    evaluation (``dc_gen/aecore/trainer.py``: ``StructuralSimilarityIndexMeasure(data_range=(0.0, 255.0))`` on the
    uint8 images): gaussian window of size 11 (``int(3.5 * sigma + 0.5) * 2 + 1``) with sigma 1.5, K1 = 0.01,
    K2 = 0.03, images clamped to ``data_range``, C1 = (K1 L)^2 and C2 = (K2 L)^2 with L = high - low, variances
    clamped at 0, reflect padding by 5 pixels. Where this function differs from calling torchmetrics directly:

    - Shift: the images are shifted to [0, high - low] first. SSIM is invariant to a common scale when C1 and C2
      scale with it, but not to a shift, so the float images in [-1, 1] of a picture give the same value as its uint8
      images with ``data_range=(0, 255)`` (the official numbers); torchmetrics on the [-1, 1] images with
      ``data_range=(-1, 1)`` gives a different one.
    - Precision: float64 (float32 on MPS, which has no float64). torchmetrics computes in the input's dtype, and the
      official call passes uint8 tensors, which its clamp promotes to float32; the float32 round-off moves the
      per-image SSIM by about 1e-6 (``E[x^2] - E[x]^2`` cancels in flat regions), below the 4 decimals reported.
    - Border: torchmetrics' own reduction changed with its releases (see ``border``), so the full SSIM map is taken
      from torchmetrics (``return_full_image=True``) and averaged here; the installed version does not decide.

    Args:
        pred, target: images of shape (B, C, H, W) with H, W >= 11 (float, or uint8 with ``data_range=(0, 255)``).
        data_range: (low, high) of the value range; (-1, 1) for the package's images.
        border: "reflect" (torchmetrics releases after its PR #2721, Sept. 2024, what a current install computes:
            average the SSIM map over the whole image) or "valid" (earlier torchmetrics releases, and
            ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``:
            average only over windows that fit inside the image, i.e. without the 5-pixel border). The official
            requirements do not pin torchmetrics.
    """
    _check_pair(pred, target)
    low, high = _check_value_range(data_range)
    if pred.dtype == torch.uint8 and (low, high) != (0.0, 255.0):
        raise ValueError(f"uint8 images have values 0..255, so data_range must be (0.0, 255.0), got {data_range}.")
    if border not in ("reflect", "valid"):
        raise ValueError(f"border must be 'reflect' or 'valid', got {border!r}.")
    if min(pred.shape[-2:]) < _SSIM_KERNEL_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {_SSIM_KERNEL_SIZE}x{_SSIM_KERNEL_SIZE} pixels, got {tuple(pred.shape)}."
        )

    dtype = torch.float32 if pred.device.type == "mps" else torch.float64
    x = pred.to(dtype) - low  # (B, C, H, W); torchmetrics clamps it to [0, L]
    y = target.to(dtype) - low
    _, ssim_map = structural_similarity_index_measure(
        x,
        y,
        gaussian_kernel=True,
        sigma=_SSIM_SIGMA,
        kernel_size=_SSIM_KERNEL_SIZE,
        reduction="none",
        data_range=(0.0, high - low),
        k1=0.01,
        k2=0.03,
        return_full_image=True,
    )  # (B, C, H, W): SSIM of the window centred on each pixel, reflect-padded at the border
    if border == "valid":
        pad = (_SSIM_KERNEL_SIZE - 1) // 2
        ssim_map = ssim_map[..., pad:-pad, pad:-pad]
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
    if not isinstance(data_range, (tuple, list)) or len(data_range) != 2:
        raise TypeError(f"data_range must be a (low, high) pair of numbers such as (-1.0, 1.0), got {data_range!r}.")
    low = check_number("data_range[0]", data_range[0])
    high = check_number("data_range[1]", data_range[1])
    if not low < high:
        raise ValueError(f"data_range must be finite with low < high, got {data_range!r}.")
    return low, high


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    return f"{type(value).__name__}"
