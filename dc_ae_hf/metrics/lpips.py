"""LPIPS (Zhang et al. 2018) through the ``lpips`` package: evaluation metric and training perceptual loss.

``lpips.LPIPS`` builds its trunk with torchvision (``pretrained=True``), which loads the ImageNet backbone from
``$TORCH_HOME/hub/checkpoints/<file>`` and downloads it when the file is missing; its calibrated linear heads ship
inside the ``lpips`` wheel. :func:`load_lpips` keeps that normal path and only turns an offline download failure
into an error that names the file to place and where.

Official AE evaluation (``dc_gen/aecore/trainer.py``) uses torchmetrics' ``LearnedPerceptualImagePatchSimilarity(
normalize=True)`` on the uint8-quantised images divided by 255; torchmetrics' default trunk is AlexNet, so
``load_lpips("alex")`` with images ``to_uint8(x) / 127.5 - 1`` reproduces it. The DC-AE training perceptual loss is
usually the VGG trunk (this module's default).
"""

from __future__ import annotations

import os
import urllib.error
import warnings

import torch
from torchvision import models as tv_models

from dc_ae_hf.extras import missing_extra

try:
    import lpips
except ImportError as error:
    raise missing_extra(error, "dc_ae_hf.metrics.lpips (LPIPS)") from error

__all__ = ["LPIPS_BACKBONES", "load_lpips", "lpips_backbone_checkpoint_path"]

# lpips' ``net`` name -> the torchvision weights enum its trunk loads (lpips/pretrained_networks.py).
LPIPS_BACKBONES: dict[str, type[tv_models.WeightsEnum]] = {
    "vgg": tv_models.VGG16_Weights,
    "alex": tv_models.AlexNet_Weights,
    "squeeze": tv_models.SqueezeNet1_1_Weights,
}


def lpips_backbone_checkpoint_path(net: str) -> str:
    """Where torchvision looks for the ImageNet backbone of LPIPS ``net``: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    weights = LPIPS_BACKBONES[_check_net(net)].DEFAULT
    file_name = os.path.basename(weights.url)  # e.g. "vgg16-397923af.pth"
    return os.path.join(torch.hub.get_dir(), "checkpoints", file_name)


def load_lpips(net: str = "vgg", device: str | torch.device | None = None) -> lpips.LPIPS:
    """Return a frozen, eval-mode ``lpips.LPIPS`` (version 0.1) with trunk ``net`` ("vgg", "alex" or "squeeze").

    Inputs of the returned module are images in [-1, 1] of shape (B, 3, H, W); ``model(pred, target)`` gives
    (B, 1, 1, 1). Gradients still flow to the inputs, so it also serves as the training perceptual loss.

    Raises:
        ValueError: unknown ``net``.
        FileNotFoundError: the torchvision backbone is not in ``$TORCH_HOME/hub/checkpoints`` and cannot be
            downloaded (offline); the message names the file and the folder.
    """
    net = _check_net(net)
    checkpoint = lpips_backbone_checkpoint_path(net)
    try:
        with warnings.catch_warnings():
            # lpips calls torchvision's deprecated ``pretrained=True``; the warning is about lpips' code, not the user's.
            warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
            model = lpips.LPIPS(net=net, version="0.1", verbose=False)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        if os.path.exists(checkpoint):
            raise
        url = LPIPS_BACKBONES[net].DEFAULT.url
        raise FileNotFoundError(
            f"LPIPS(net={net!r}) needs the torchvision backbone weights {os.path.basename(checkpoint)!r}, which are "
            f"not in {os.path.dirname(checkpoint)!r} and could not be downloaded ({type(error).__name__}: {error}). "
            f"Download {url} on a machine with network access and place it at {checkpoint!r} (the folder is "
            f"$TORCH_HOME/hub/checkpoints; TORCH_HOME defaults to ~/.cache/torch)."
        ) from error
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return model


def _check_net(net: str) -> str:
    if net == "vgg16":  # lpips accepts both spellings
        net = "vgg"
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}.")
    return net
