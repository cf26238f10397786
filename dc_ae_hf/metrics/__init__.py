"""Reconstruction (PSNR, SSIM, LPIPS, rFID per channel prefix) and generation (FID, IS, precision/recall,
FD-DINOv2) metrics, shared by the autoencoder and diffusion sides.

Modules: ``image`` (PSNR, SSIM, uint8 quantisation), ``lpips``, ``autoencoder`` (evaluation per prefix c'),
``frechet`` (Frechet distance, statistics files), ``image_sets``, ``inception`` (torch-fidelity: FID, IS,
precision/recall, reference statistics), ``dinov2`` (FD-DINOv2), ``generation`` (all generation metrics in one
namespace) and ``classifier`` (the toy's small-classifier metrics).
"""

import importlib

# Imported on first use (PEP 562), so that `dc_ae_hf.metrics.image` (uint8 quantisation, PSNR, SSIM: torchmetrics
# only) serves the demo app and the pictures without the heavier extras of the other modules.
_LAZY = {
    "evaluate_autoencoder": "autoencoder",
    "format_markdown_table": "autoencoder",
    "load_lpips": "lpips",
    "psnr": "image",
    "ssim": "image",
    "to_uint8": "image",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
