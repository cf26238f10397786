"""Stand-in weights so the real loading code of LPIPS, torch-fidelity and DINOv2 runs offline.

The machine that builds and tests this package has no access to the torchvision, torch-fidelity or Hugging Face
weight downloads. These helpers write randomly initialised (seeded, hence reproducible) weights in exactly the
files and formats those libraries read, so tests and toy examples exercise the normal code paths:

- :func:`write_standin_lpips_backbone`: a torchvision backbone at ``$TORCH_HOME/hub/checkpoints/<file>``, which
  ``lpips.LPIPS(net=...)`` (and :func:`dc_ae_hf.metrics.lpips.load_lpips`) load through torchvision.
- :func:`write_standin_inception_weights`: a state dict for torch-fidelity's ``inception-v3-compat`` feature
  extractor, used through ``feature_extractor_weights_path=``.
- :func:`write_tiny_dinov2`: a tiny ``transformers.Dinov2Model`` saved with ``save_pretrained``.

Metric values computed with stand-in weights are only meaningful relative to each other (0 for identical sets,
larger for more different sets); they are not comparable to published numbers.
"""

from __future__ import annotations

import os
import tempfile

import torch
from torch import nn
from torchvision import models as tv_models

from dc_ae_hf.extras import missing_extra
from dc_ae_hf.metrics.lpips import LPIPS_BACKBONES

try:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from transformers import Dinov2Config, Dinov2Model
except ImportError as error:
    raise missing_extra(error, "dc_ae_hf.testing (stand-in metric weights)") from error

__all__ = ["write_standin_inception_weights", "write_standin_lpips_backbone", "write_tiny_dinov2"]

# lpips' ``net`` name -> torchvision constructor of the backbone whose state dict torchvision loads.
_TORCHVISION_BUILDERS = {
    "squeeze": tv_models.squeezenet1_1,
    "alex": tv_models.alexnet,
    "vgg": tv_models.vgg16,
}


def _kaiming_normal_(module: nn.Module, generator: torch.Generator) -> None:
    """Kaiming-normal (fan_in, ReLU gain) conv/linear weights, zero biases, identity batch norms."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_in = layer.weight[0].numel()
            with torch.no_grad():
                layer.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()
        elif isinstance(layer, nn.BatchNorm2d):
            layer.reset_parameters()  # weight 1, bias 0, running mean 0, running var 1


def write_standin_lpips_backbone(net: str, torch_home: str | os.PathLike, seed: int = 0) -> str:
    """Write a Kaiming-normal torchvision backbone for LPIPS ``net`` where torchvision's loader looks for it.

    Args:
        net: "squeeze" (squeezenet1_1, 5 MB), "alex" (alexnet, 233 MB) or "vgg" (vgg16, 528 MB).
        torch_home: the folder ``TORCH_HOME`` will point to; the file goes to ``<torch_home>/hub/checkpoints/``
            under the exact name of torchvision's weights URL (e.g. ``squeezenet1_1-b8a52dc0.pth``).
        seed: seed of the random initialisation.

    Returns the path of the written file.
    """
    if net == "vgg16":
        net = "vgg"
    if net not in _TORCHVISION_BUILDERS:
        raise ValueError(f"net must be one of {sorted(_TORCHVISION_BUILDERS)}, got {net!r}.")
    generator = torch.Generator().manual_seed(seed)
    backbone = _TORCHVISION_BUILDERS[net](weights=None)
    _kaiming_normal_(backbone, generator)
    file_name = os.path.basename(LPIPS_BACKBONES[net].DEFAULT.url)
    path = os.path.join(os.fspath(torch_home), "hub", "checkpoints", file_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # torchvision reads this file with torch.load(weights_only=True): a plain tensor state dict is what it expects.
    torch.save(backbone.state_dict(), path)
    return path


class _UnloadedInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception architecture without its weight loading, to produce a matching state dict."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None  # the weights are initialised by write_standin_inception_weights instead


def write_standin_inception_weights(path: str | os.PathLike, seed: int = 0) -> str:
    """Write Kaiming-normal weights for torch-fidelity's ``inception-v3-compat`` feature extractor.

    The file is what ``torch_fidelity.calculate_metrics(feature_extractor_weights_path=path)`` loads. PyTorch's
    default initialisation makes the 2048-d pool features vanish (every FID ~0); Kaiming-normal convolutions with
    identity batch norms keep activations at unit scale through the network, so different image sets get
    different features.

    Returns the path of the written file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        # The constructor insists on reading a weights file; an empty state dict is enough for the skipped load.
        empty = os.path.join(tmp, "empty.pth")
        torch.save({}, empty)
        model = _UnloadedInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    _kaiming_normal_(model, torch.Generator().manual_seed(seed))
    torch.save(model.state_dict(), path)
    return path


def write_tiny_dinov2(path: str | os.PathLike, seed: int = 0, hidden_size: int = 32, num_layers: int = 2) -> str:
    """Save a tiny randomly initialised ``Dinov2Model`` (patch 14, 224 px) with ``save_pretrained`` (safetensors).

    Load it back with ``dc_ae_hf.metrics.generation.load_dinov2(path)``. Returns ``path``.
    """
    config = Dinov2Config(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        patch_size=14,
        image_size=224,
    )
    # transformers initialises weights from the global generator: seed it inside fork_rng so the caller's RNG state
    # is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Dinov2Model(config).eval()
    model.save_pretrained(os.fspath(path))
    return os.fspath(path)
