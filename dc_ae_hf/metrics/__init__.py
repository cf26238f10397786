"""Reconstruction (PSNR, SSIM, LPIPS, rFID per channel prefix) and generation (FID, IS, precision/recall,
FD-DINOv2) metrics, shared by the autoencoder and diffusion sides."""

from .autoencoder import evaluate_autoencoder, format_markdown_table
from .image import psnr, ssim, to_uint8
from .lpips import load_lpips

__all__ = ["evaluate_autoencoder", "format_markdown_table", "load_lpips", "psnr", "ssim", "to_uint8"]
