"""Reconstruction evaluation of an autoencoder per latent-channel prefix: PSNR, SSIM, LPIPS and rFID.

Protocol (official ``dc_gen/aecore/trainer.py``, ``evaluate``): input and reconstruction are quantised to uint8 with
``clamp(127.5 x + 128, 0, 255)`` and a truncating cast; PSNR (peak 255) and SSIM (torchmetrics, ``data_range=(0,
255)``) are computed per image on the uint8 images and averaged over all images; LPIPS gets the uint8 images mapped
back to [-1, 1] (torchmetrics ``normalize=True`` on ``uint8 / 255``; torchmetrics' default trunk, used officially,
is AlexNet: pass ``load_lpips("alex")`` for parity). rFID here is torch-fidelity FID between the real and the
reconstructed uint8 images written as PNG folders (officially the reference is precomputed ImageNet-val
statistics; on the same images the two agree up to the Inception resize difference described in
``dc_ae_hf/metrics/inception.py``).

Structured latent space (DC-AE 1.5): each batch is encoded once to the full latent and decoded from its first c'
channels for every requested c' (``dc_ae_hf.latents.decode_prefix(vae, latent[:, :c'])``). Decoding a prefix equals
decoding the latent with channels c'.. set to zero when the decoder has no input shortcut (official
``AdaptiveInputConvLayer``, ``dc_gen/models/nn/ops.py``), which is how a plain diffusers ``AutoencoderDC`` is
evaluated on prefixes.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from dc_ae_hf.checks import check_channel_prefixes, check_int
from dc_ae_hf.latents import check_prefix, decode_prefix, trained_prefixes
from dc_ae_hf.metrics.image import psnr, ssim, to_uint8
from dc_ae_hf.metrics.inception import compute_generation_metrics

__all__ = ["evaluate_autoencoder", "format_markdown_table"]

_METRIC_COLUMNS = (
    ("psnr", "PSNR", ".2f"),
    ("ssim", "SSIM", ".4f"),
    ("lpips", "LPIPS", ".4f"),
    ("rfid", "rFID", ".3f"),
)


@torch.no_grad()
def evaluate_autoencoder(
    vae: nn.Module,
    dataloader: Iterable[Any],
    latent_channels_list: Sequence[int] | None = None,
    lpips_model: nn.Module | None = None,
    compute_rfid: bool = False,
    inception_weights_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    max_batches: int | None = None,
    progress: bool = False,
) -> dict[int, dict[str, float]]:
    """Evaluate reconstructions for every latent-channel prefix c'.

    Args:
        vae: an ``AutoencoderDC15`` or a diffusers ``AutoencoderDC`` (prefixes decoded by
            ``dc_ae_hf.latents.decode_prefix``).
        dataloader: yields dicts with ``"pixel_values"`` (B, 3, H, W) in [-1, 1], such tensors, or (images, ...)
            tuples.
        latent_channels_list: the c' values, each one the vae can decode (``dc_ae_hf.latents.check_prefix``; a
            DC-AE 1.0 model decodes the full latent only). Default: the prefixes it was trained for
            (``AutoencoderDC15.latent_channel_choices``); the full latent for a plain ``AutoencoderDC``.
        lpips_model: an LPIPS module taking two [-1, 1] batches (``load_lpips``); None skips LPIPS.
        compute_rfid: also compute rFID (torch-fidelity; needs ``inception_weights_path`` offline).
        device: where to run; default: the vae's device. The vae and ``lpips_model`` are moved there.
        max_batches: stop after this many batches.
        progress: show the rFID stage's progress on stderr (one bar over the c', torch-fidelity's own bars for the
            Inception features); the reconstruction pass is the caller's to show (wrap ``dataloader`` in tqdm).

    Returns:
        ``{c': {"psnr": ..., "ssim": ..., "lpips": ..., "rfid": ...}}`` (LPIPS/rFID only when requested), each the
        mean over all evaluated images.
    """
    if not isinstance(vae, nn.Module) or not hasattr(vae, "encode") or not hasattr(vae, "decode"):
        raise TypeError(f"vae must be an autoencoder module with encode/decode, got {type(vae).__name__}.")
    max_batches = check_int("max_batches", max_batches, minimum=1, optional=True)
    if lpips_model is not None and not isinstance(lpips_model, nn.Module):
        raise TypeError(f"lpips_model must be an nn.Module such as load_lpips(...), got {type(lpips_model).__name__}.")
    channels_list = _resolve_channels(vae, latent_channels_list)

    parameter = next(vae.parameters())
    device = torch.device(device) if device is not None else parameter.device
    was_training = vae.training
    vae.to(device).eval()
    if lpips_model is not None:
        lpips_model.to(device)

    sums = {c: {"psnr": 0.0, "ssim": 0.0, "lpips": 0.0} for c in channels_list}
    num_images = 0
    with tempfile.TemporaryDirectory(prefix="dc_ae_hf_rfid_") as tmp:
        try:
            for batch_index, batch in enumerate(dataloader):
                x = _pixel_values(batch).to(device=device, dtype=parameter.dtype)  # (B, 3, H, W) in [-1, 1]
                real_uint8 = to_uint8(x)  # (B, 3, H, W)
                latent = vae.encode(x).latent  # (B, C, H/f, W/f): encoded once, full latent
                if compute_rfid:
                    _save_png(real_uint8, os.path.join(tmp, "real"), num_images)
                for c in channels_list:
                    recon = decode_prefix(vae, latent[:, :c])  # (B, 3, H, W)
                    recon_uint8 = to_uint8(recon)
                    sums[c]["psnr"] += psnr(recon_uint8, real_uint8, data_range=255.0).sum().item()
                    sums[c]["ssim"] += ssim(recon_uint8, real_uint8, data_range=(0.0, 255.0)).sum().item()
                    if lpips_model is not None:
                        # torchmetrics LPIPS(normalize=True) on uint8 / 255 == LPIPS on uint8 / 127.5 - 1.
                        distance = lpips_model(recon_uint8.float() / 127.5 - 1, real_uint8.float() / 127.5 - 1)
                        sums[c]["lpips"] += distance.flatten().double().sum().item()
                    if compute_rfid:
                        _save_png(recon_uint8, os.path.join(tmp, f"recon_{c}"), num_images)
                num_images += x.shape[0]
                if max_batches is not None and batch_index + 1 >= max_batches:
                    break
        finally:
            vae.train(was_training)
        if num_images == 0:
            raise ValueError("dataloader yielded no images.")
        if compute_rfid and num_images < 2:
            raise ValueError(f"rFID needs at least 2 images (a covariance), the dataloader gave {num_images}.")

        results: dict[int, dict[str, float]] = {}
        for c in channels_list:
            results[c] = {"psnr": sums[c]["psnr"] / num_images, "ssim": sums[c]["ssim"] / num_images}
            if lpips_model is not None:
                results[c]["lpips"] = sums[c]["lpips"] / num_images
        rfid_prefixes = channels_list if compute_rfid else []
        for c in tqdm(rfid_prefixes, desc=f"rFID of {num_images} images per c'", unit="c'", disable=not progress):
            results[c]["rfid"] = compute_generation_metrics(
                os.path.join(tmp, f"recon_{c}"),
                os.path.join(tmp, "real"),
                fid=True,
                inception_score=False,
                precision_recall=False,
                inception_weights_path=inception_weights_path,
                device=device if device.type in ("cpu", "cuda") else "cpu",
                verbose=progress,
                # torch-fidelity's loader takes min(4, 2 x CPUs) workers: more processes than cores below 4
                save_cpu_ram=(os.cpu_count() or 1) < 4,
                # Extract the real images' Inception features once and reuse them for every c'.
                cache_root=os.path.join(tmp, "fidelity_cache"),
                input2_cache_name="real",
            )["fid"]
    return results


def format_markdown_table(results: dict[int, dict[str, float]]) -> str:
    """Format ``evaluate_autoencoder`` results as a markdown table, one row per c' (ascending)."""
    if not isinstance(results, dict) or not results:
        raise ValueError("results must be a non-empty dict {c': {metric: value}} from evaluate_autoencoder.")
    columns = [column for column in _METRIC_COLUMNS if any(column[0] in row for row in results.values())]
    lines = [
        "| c' | " + " | ".join(title for _, title, _ in columns) + " |",
        "|---:|" + "---:|" * len(columns),
    ]
    for c in sorted(results):
        cells = []
        for key, _, spec in columns:
            value = results[c].get(key)
            cells.append("–" if value is None else ("inf" if math.isinf(value) else format(value, spec)))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _resolve_channels(vae: nn.Module, latent_channels_list: Sequence[int] | None) -> list[int]:
    """The c' to evaluate, ascending, each checked once here (range, then the vae's prefix rule)."""
    full_channels = int(vae.config.latent_channels)
    if latent_channels_list is None:
        latent_channels_list = trained_prefixes(vae) or [full_channels]
    channels = check_channel_prefixes("latent_channels_list", latent_channels_list, full_channels)
    for index, c in enumerate(channels):
        check_prefix(vae, c, f"latent_channels_list[{index}]")
    return sorted(set(channels))


def _pixel_values(batch: Any) -> torch.Tensor:
    if isinstance(batch, dict):
        if "pixel_values" not in batch:
            raise KeyError(f"dataloader batches that are dicts need a 'pixel_values' key, got keys {sorted(batch)}.")
        images = batch["pixel_values"]
    elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        images = batch[0]
    else:
        images = batch
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"pixel_values must be a float tensor (B, 3, H, W) in [-1, 1], got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"pixel_values must have shape (B, 3, H, W), got shape {tuple(images.shape)}.")
    low, high = images.min().item(), images.max().item()
    if low < -1.001 or high > 1.001:
        raise ValueError(f"pixel_values must be in [-1, 1], got values in [{low:.4g}, {high:.4g}].")
    return images


def _save_png(images: torch.Tensor, folder: str, start_index: int) -> None:
    """Write uint8 images (B, 3, H, W) as lossless PNG files numbered from ``start_index``."""
    os.makedirs(folder, exist_ok=True)
    for offset, image in enumerate(images.permute(0, 2, 3, 1).cpu().numpy()):  # (H, W, 3) uint8
        Image.fromarray(image).save(os.path.join(folder, f"{start_index + offset:06d}.png"))
