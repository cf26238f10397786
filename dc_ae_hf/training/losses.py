"""Losses of autoencoder training: L1 + LPIPS reconstruction and the hinge GAN loss.

DC-AE's reconstruction loss is L1 + perceptual (LPIPS) (maintainer statement, efficientvit issue #143); the GAN
loss enters only in phase 3 (local refinement, DC-AE paper Sec. 3). The adversarial objective is the hinge loss of
Lim & Ye 2017 / Miyato et al. 2018 as used by taming-transformers' VQGAN:

    L_D = 1/2 (E[relu(1 - D(x))] + E[relu(1 + D(G(x)))])        L_G = -E[D(G(x))]

Structured latent space (paper Eq. 1): the reconstructions of all sampled channel prefixes c' are scored against the
same images and averaged with equal weight (official: one loss per c', averaged; `dc_gen/aecore/trainer.py`).
Every prefix reconstructs the same batch, so the mean over the concatenated batch is exactly that average.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["generator_adversarial_loss", "hinge_d_loss", "hinge_g_loss", "reconstruction_loss"]


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``(mean(relu(1 - real)) + mean(relu(1 + fake))) / 2`` (a scalar)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss ``-mean(fake)`` (a scalar)."""
    return -logits_fake.mean()


def _stack_prefixes(reconstructions: Sequence[torch.Tensor], images: torch.Tensor) -> tuple[torch.Tensor, int]:
    if isinstance(reconstructions, torch.Tensor) or not reconstructions:
        raise TypeError("reconstructions must be a non-empty list of (B, 3, H, W) tensors, one per channel prefix")
    for reconstruction in reconstructions:
        if reconstruction.shape != images.shape:
            raise ValueError(
                f"every reconstruction must have the images' shape {tuple(images.shape)}, "
                f"got {tuple(reconstruction.shape)}"
            )
    return torch.cat(list(reconstructions)), len(reconstructions)  # (K*B, 3, H, W)


def reconstruction_loss(
    reconstructions: Sequence[torch.Tensor],
    images: torch.Tensor,
    lpips_model: nn.Module | None = None,
    l1_weight: float = 1.0,
    lpips_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Weighted L1 + LPIPS, averaged with equal weight over the channel prefixes.

    Args:
        reconstructions: one (B, 3, H, W) reconstruction per sampled prefix c', in [-1, 1] (not clamped).
        images: the targets (B, 3, H, W) in [-1, 1].
        lpips_model: an LPIPS module taking two [-1, 1] batches (`dc_ae_hf.metrics.lpips.load_lpips`); required
            when `lpips_weight > 0`.
        l1_weight, lpips_weight: the loss weights.

    Returns:
        ``{"loss": l1_weight * l1 + lpips_weight * lpips, "l1": ..., "lpips": ...}`` (scalars; "lpips" only when
        computed).
    """
    if lpips_weight > 0 and lpips_model is None:
        raise ValueError(f"lpips_weight={lpips_weight} > 0 needs an lpips_model")
    stacked, num_prefixes = _stack_prefixes(reconstructions, images)
    target = images.repeat(num_prefixes, 1, 1, 1)  # (K*B, 3, H, W)
    l1 = F.l1_loss(stacked, target)
    losses = {"l1": l1, "loss": l1_weight * l1}
    if lpips_weight > 0:
        perceptual = lpips_model(stacked, target).mean()  # (K*B, 1, 1, 1) -> scalar
        losses["lpips"] = perceptual
        losses["loss"] = losses["loss"] + lpips_weight * perceptual
    return losses


def generator_adversarial_loss(reconstructions: Sequence[torch.Tensor], discriminator: nn.Module) -> torch.Tensor:
    """Generator hinge loss of the reconstructions of all prefixes, with the discriminator held fixed.

    The discriminator is evaluated with detached copies of its parameters (`torch.func.functional_call`), so the
    gradient reaches only the reconstructions: the discriminator's own gradients, which its optimizer is
    accumulating from its hinge loss, are left untouched, and no DDP reduction of the discriminator is triggered.
    """
    stacked = torch.cat(list(reconstructions))  # (K*B, 3, H, W)
    frozen = {name: tensor.detach() for name, tensor in discriminator.state_dict(keep_vars=True).items()}
    logits_fake = torch.func.functional_call(discriminator, frozen, (stacked,))
    return hinge_g_loss(logits_fake)
