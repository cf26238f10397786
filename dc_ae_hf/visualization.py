"""Pictures of the structured latent space: reconstructions from growing channel prefixes (paper Fig. 3), each
image next to the channel-wise mean of its latent (Fig. 2), and every channel of a latent (Fig. 9/10). Used by
`examples/visualize_latents.py`, the demo app (`app/app.py`) and the trainers' validation grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from dc_ae_hf.checks import check_channel_prefixes
from dc_ae_hf.latents import check_prefix, decode_prefix
from dc_ae_hf.metrics.image import to_uint8

__all__ = [
    "latent_channels_picture",
    "latent_heatmap",
    "latent_mean_picture",
    "log_images_to_trackers",
    "prefix_reconstruction_grid",
    "tile",
    "to_pil",
]


@torch.no_grad()
def prefix_reconstruction_grid(
    vae: nn.Module, images: torch.Tensor, channels: Sequence[int], padding: int = 2
) -> Image.Image:
    """A grid with one row per image: the original, then its reconstructions from the first c' latent channels for
    each c' in `channels` (ascending), as in paper Fig. 3.

    Args:
        vae: an `AutoencoderDC15` or a plain diffusers `AutoencoderDC` (prefixes decoded by
            `dc_ae_hf.latents.decode_prefix`).
        images: (N, 3, H, W) in [-1, 1]; H and W multiples of the spatial compression ratio.
        channels: the prefixes c' (columns), each one the vae can decode (`dc_ae_hf.latents.check_prefix`).
        padding: pixels between cells (torchvision `make_grid`).

    Returns:
        an RGB image of (N rows) x (1 + len(channels) columns) cells. Images are quantised like the metrics
        (`to_uint8`). Each image is encoded once; the vae's train/eval mode is restored afterwards.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (N, 3, H, W) in [-1, 1], got {shape}")
    channels = check_channel_prefixes("channels", channels, vae.config.latent_channels)
    channels = sorted({check_prefix(vae, c, f"channels[{index}]") for index, c in enumerate(channels)})
    was_training = vae.training
    vae.eval()
    try:
        parameter = next(vae.parameters())
        x = images.to(device=parameter.device, dtype=parameter.dtype)
        latent = vae.encode(x).latent  # (N, C, h, w), encoded once
        columns = [x] + [decode_prefix(vae, latent[:, :c]) for c in channels]  # each (N, 3, H, W)
    finally:
        vae.train(was_training)
    cells = torch.stack([to_uint8(column).cpu() for column in columns], dim=1)  # (N, 1 + K, 3, H, W)
    grid = make_grid(cells.flatten(0, 1), nrow=len(columns), padding=padding, pad_value=255)  # (3, H', W') uint8
    return Image.fromarray(grid.permute(1, 2, 0).numpy())


def to_pil(image: torch.Tensor, size: int | None = None) -> Image.Image:
    """A (3, H, W) image in [-1, 1] as an RGB picture, quantised like the metrics (`to_uint8`), optionally resized
    (nearest) to size x size."""
    picture = Image.fromarray(to_uint8(image).cpu().permute(1, 2, 0).numpy())
    return picture if size is None else picture.resize((size, size), Image.NEAREST)


def latent_heatmap(values: torch.Tensor, size: int) -> Image.Image:
    """A (h, w) map, min-max normalised, coloured with viridis and upscaled (nearest) to size x size."""
    from matplotlib import colormaps  # the `train` / `app` extras; only the pictures need it

    v = values.detach().float().cpu()
    v = (v - v.min()) / (v.max() - v.min()).clamp_min(1e-8)
    rgb = (colormaps["viridis"](v.numpy())[..., :3] * 255).astype(np.uint8)
    return Image.fromarray(rgb).resize((size, size), Image.NEAREST)


def tile(rows: list[list[Image.Image]], pad: int = 2) -> Image.Image:
    """Paste rows of equally sized pictures on white with `pad` pixels around each. Hand-written rather than
    diffusers' `make_image_grid` because rows may be ragged (the last row of a channel picture) and the pictures are
    read one by one, which the padding keeps apart."""
    width, height = rows[0][0].size
    columns = max(len(row) for row in rows)
    canvas = Image.new("RGB", (columns * (width + pad) + pad, len(rows) * (height + pad) + pad), "white")
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            canvas.paste(cell, (pad + j * (width + pad), pad + i * (height + pad)))
    return canvas


def latent_mean_picture(images: torch.Tensor, latents: torch.Tensor, size: int) -> Image.Image:
    """Paper Fig. 2: one row per image, the image (N, 3, H, W in [-1, 1]) next to the channel-wise mean of its latent
    (N, C, h, w), each cell size x size."""
    return tile([[to_pil(x, size), latent_heatmap(z.mean(0), size)] for x, z in zip(images, latents)])


def latent_channels_picture(latent: torch.Tensor, size: int, per_row: int = 16) -> Image.Image:
    """Paper Fig. 9/10: every channel of one latent (C, h, w), in channel order, `per_row` per row."""
    maps = [latent_heatmap(channel, size) for channel in latent]
    return tile([maps[i : i + per_row] for i in range(0, len(maps), per_row)])


def log_images_to_trackers(accelerator, images: dict[str, Image.Image], step: int) -> None:
    """Log PIL images to the accelerate trackers that take images (tensorboard, wandb); others are skipped."""
    for tracker in accelerator.trackers:
        for tag, image in images.items():
            if tracker.name == "tensorboard":
                tracker.writer.add_image(tag, np.asarray(image), step, dataformats="HWC")
            elif tracker.name == "wandb":
                import wandb  # only present when the wandb tracker is in use

                tracker.log({tag: wandb.Image(image)}, step=step)
