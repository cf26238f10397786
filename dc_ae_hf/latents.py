"""The one place where latents are moved between the autoencoder's space and the diffusion model's space.

Official convention (``dc_gen/c2icore/autoencoder.py``, ``SingleAutoencoder.encode/decode``): the latent is
multiplied by ``scaling_factor`` right after encoding and divided by it right before decoding; there is no shift.
The pipeline, both trainers, the latent cache and the tests all go through these functions, so a checkpoint's
``vae.config.scaling_factor`` is read in exactly one place.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderDC


def get_scaling_factor(vae: AutoencoderDC) -> float:
    """Return ``vae.config.scaling_factor`` as a float, rejecting values that cannot scale a latent."""
    scaling_factor = float(getattr(vae.config, "scaling_factor", 1.0))
    if not scaling_factor > 0:
        raise ValueError(f"vae.config.scaling_factor must be > 0, got {scaling_factor}.")
    return scaling_factor


def to_diffusion_space(vae: AutoencoderDC, latent: torch.Tensor) -> torch.Tensor:
    """Autoencoder latent -> diffusion latent: ``z * scaling_factor``."""
    return latent * get_scaling_factor(vae)


def from_diffusion_space(vae: AutoencoderDC, latents: torch.Tensor) -> torch.Tensor:
    """Diffusion latent -> autoencoder latent: ``z / scaling_factor``."""
    return latents / get_scaling_factor(vae)


def encode_to_diffusion_space(
    vae: AutoencoderDC, images: torch.Tensor, latent_channels: int | None = None
) -> torch.Tensor:
    """Encode images in [-1, 1] of shape (B, 3, H, W) to scaled latents (B, c', H/f, W/f).

    ``latent_channels`` keeps only the first c' channels (structured latent space, DC-AE 1.5); it needs an
    ``AutoencoderDC15``. A plain diffusers ``AutoencoderDC`` encodes the full latent.
    """
    if latent_channels is None:
        latent = vae.encode(images).latent
    else:
        latent = vae.encode(images, latent_channels=latent_channels).latent
    return to_diffusion_space(vae, latent)


def decode_from_diffusion_space(vae: AutoencoderDC, latents: torch.Tensor) -> torch.Tensor:
    """Decode scaled latents (B, c', h, w) to images (B, 3, h*f, w*f), roughly in [-1, 1] (not clamped)."""
    return vae.decode(from_diffusion_space(vae, latents)).sample
