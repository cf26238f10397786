"""Pictures of the structured latent space (paper Fig. 3): reconstructions from growing channel prefixes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from dc_ae_hf.metrics.image import to_uint8

__all__ = ["log_images_to_trackers", "prefix_reconstruction_grid"]


@torch.no_grad()
def prefix_reconstruction_grid(
    vae: nn.Module, images: torch.Tensor, channels: Sequence[int], padding: int = 2
) -> Image.Image:
    """A grid with one row per image: the original, then its reconstructions from the first c' latent channels for
    each c' in `channels` (ascending), as in paper Fig. 3.

    Args:
        vae: an `AutoencoderDC15` (any prefix of its latent can be decoded).
        images: (N, 3, H, W) in [-1, 1]; H and W multiples of the spatial compression ratio.
        channels: the prefixes c' (columns), each in 1..latent_channels.
        padding: pixels between cells (torchvision `make_grid`).

    Returns:
        an RGB image of (N rows) x (1 + len(channels) columns) cells. Images are quantised like the metrics
        (`to_uint8`). Each image is encoded once; the vae's train/eval mode is restored afterwards.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (N, 3, H, W) in [-1, 1], got {shape}")
    channels = sorted({int(c) for c in channels})
    if not channels:
        raise ValueError("channels must list at least one latent-channel prefix")
    was_training = vae.training
    vae.eval()
    try:
        parameter = next(vae.parameters())
        x = images.to(device=parameter.device, dtype=parameter.dtype)
        latent = vae.encode(x).latent  # (N, C, h, w), encoded once
        columns = [x] + [vae.decode(latent[:, :c]).sample for c in channels]  # each (N, 3, H, W)
    finally:
        vae.train(was_training)
    cells = torch.stack([to_uint8(column).cpu() for column in columns], dim=1)  # (N, 1 + K, 3, H, W)
    grid = make_grid(cells.flatten(0, 1), nrow=len(columns), padding=padding, pad_value=255)  # (3, H', W') uint8
    return Image.fromarray(grid.permute(1, 2, 0).numpy())


def log_images_to_trackers(accelerator, images: dict[str, Image.Image], step: int) -> None:
    """Log PIL images to the accelerate trackers that take images (tensorboard, wandb); others are skipped."""
    for tracker in accelerator.trackers:
        for tag, image in images.items():
            if tracker.name == "tensorboard":
                tracker.writer.add_image(tag, np.asarray(image), step, dataformats="HWC")
            elif tracker.name == "wandb":
                import wandb  # only present when the wandb tracker is in use

                tracker.log({tag: wandb.Image(image)}, step=step)
