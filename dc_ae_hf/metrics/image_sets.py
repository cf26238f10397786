"""The image sets the generation metrics read, checked once and turned into what torch-fidelity takes.

An image set is any of:

- a folder of PNG/JPEG images (all of one size, non-recursive, as torch-fidelity reads them),
- a tensor (N, 3, H, W): uint8, or float in [-1, 1] (quantised like the official code, see ``to_uint8``),
- a ``torch.utils.data.Dataset`` whose items are uint8 tensors (3, H, W).

A path ending in ``.npz`` is not an image set but a statistics file (``dc_ae_hf/metrics/frechet.py``); the metrics
that accept one test for it with :func:`is_statistics_file`.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from dc_ae_hf.checks import is_statistics_file
from dc_ae_hf.extras import missing_extra
from dc_ae_hf.metrics.image import to_uint8

try:
    from torch_fidelity.datasets import ImagesPathDataset
    from torch_fidelity.utils import glob_samples_paths
except ImportError as error:
    raise missing_extra(error, "dc_ae_hf.metrics (FID, IS, precision/recall, FD-DINOv2)") from error

__all__ = ["IMAGE_EXTENSIONS", "ImageSet", "UInt8Images", "as_dataset", "as_fidelity_input", "is_statistics_file"]

ImageSet = str | os.PathLike | torch.Tensor | Dataset

IMAGE_EXTENSIONS = "png,jpg,jpeg"  # torch-fidelity's glob pattern for image folders


class UInt8Images(Dataset):
    """A tensor (N, 3, H, W) of images as a dataset of uint8 (3, H, W) tensors, the format torch-fidelity reads."""

    def __init__(self, images: torch.Tensor):
        self.images = images if images.dtype == torch.uint8 else to_uint8(images)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def as_fidelity_input(images: ImageSet, name: str) -> str | Dataset:
    """Check an image set and return what torch-fidelity takes: a folder path (str) or a uint8 Dataset.

    ``name`` is how the caller's user named the set (``"generated"``, ``"--reference"``), for the messages.
    """
    if isinstance(images, (str, os.PathLike)):
        folder = os.fspath(images)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{name}: image folder {folder!r} does not exist.")
        if not glob_samples_paths(folder, False, IMAGE_EXTENSIONS, verbose=False):
            raise ValueError(f"{name}: folder {folder!r} has no {IMAGE_EXTENSIONS} images.")
        return folder
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{name} must have shape (N, 3, H, W), got shape {tuple(images.shape)}.")
        if not (images.dtype == torch.uint8 or images.is_floating_point()):
            raise TypeError(f"{name} must be uint8 or float in [-1, 1], got dtype {images.dtype}.")
        if images.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 images, got {images.shape[0]}.")
        return UInt8Images(images.detach().cpu())
    if isinstance(images, Dataset):
        return images
    raise TypeError(
        f"{name} must be an image folder path, a (N, 3, H, W) tensor or a Dataset of uint8 images, "
        f"got {type(images).__name__}."
    )


def as_dataset(images: ImageSet, name: str) -> Dataset:
    """Check an image set and return it as a Dataset of uint8 (3, H, W) tensors (a folder is read with PIL)."""
    data = as_fidelity_input(images, name)
    if isinstance(data, str):
        return ImagesPathDataset(glob_samples_paths(data, False, IMAGE_EXTENSIONS, verbose=False))
    return data
