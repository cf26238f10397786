"""The recipe's pictures: the prefix reconstruction grids (`write_prefix_grids`: `prefix_grid_structured.png`,
`prefix_grid_plain.png`, one held-out image per class, then its reconstructions from the first c' channels, c' in
`GRID_CHANNELS`) and the grid of samples (`sample_grid`: `samples_struct_aug.png`, and `samples.png` of the built-in
default, one row per class)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.utils import make_image_grid
from PIL import Image, ImageOps

from dc_ae_hf.checks import check_int
from dc_ae_hf.data.shapes import SHAPE_CLASSES
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.visualization import prefix_reconstruction_grid
from examples.toy.toy_settings import GRID_CHANNELS


def write_prefix_grids(
    results_dir: Path, struct: AutoencoderDC15, plain: AutoencoderDC15, heldout: torch.Tensor
) -> None:
    """`prefix_grid_structured.png` and `prefix_grid_plain.png` (`prefix_reconstruction_grid`) of one held-out
    image per class: the imagefolder is sorted by class, so evenly spaced images are one of each."""
    count = len(SHAPE_CLASSES)
    images = heldout[torch.arange(count) * (len(heldout) // count)]
    for name, vae in (("structured", struct), ("plain", plain)):
        prefix_reconstruction_grid(vae, images, GRID_CHANNELS).save(results_dir / f"prefix_grid_{name}.png")


def sample_grid(images: list[Image.Image], columns: int, border: int = 1, upscale: int = 3) -> Image.Image:
    """Equally sized images in a grid of `columns` columns (`diffusers.utils.make_image_grid`), every cell and the
    whole grid framed by `border` white pixels (cells 2 * border apart and from the edge), then enlarged
    `upscale` times with nearest-neighbour resampling (for viewing 32 px samples)."""
    check_int("columns", columns, minimum=1)
    check_int("border", border, minimum=0)
    check_int("upscale", upscale, minimum=1)
    if not images or len(images) % columns:
        raise ValueError(f"sample_grid needs a non-empty multiple of columns={columns} images, got {len(images)}")
    cells = [ImageOps.expand(image.convert("RGB"), border=border, fill="white") for image in images]
    grid = make_image_grid(cells, rows=len(cells) // columns, cols=columns)
    grid = ImageOps.expand(grid, border=border, fill="white")
    return grid.resize((grid.width * upscale, grid.height * upscale), Image.NEAREST)
