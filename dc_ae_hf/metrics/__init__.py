"""Reconstruction (PSNR, SSIM, LPIPS, rFID per channel prefix) and generation (FID, IS, precision/recall,
FD-DINOv2) metrics, shared by the autoencoder and diffusion sides.

Modules: ``image`` (PSNR, SSIM, uint8 quantisation), ``lpips``, ``autoencoder`` (evaluation per prefix c'),
``frechet`` (Frechet distance, statistics files), ``image_sets``, ``inception`` (torch-fidelity: FID, IS,
precision/recall, reference statistics), ``dinov2`` (FD-DINOv2), ``generation`` (all generation metrics in one
namespace) and ``classifier`` (the toy's small-classifier metrics).
"""

from .autoencoder import evaluate_autoencoder, format_markdown_table
from .image import psnr, ssim, to_uint8
from .lpips import load_lpips

__all__ = ["evaluate_autoencoder", "format_markdown_table", "load_lpips", "psnr", "ssim", "to_uint8"]
