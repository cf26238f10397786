"""PatchGAN discriminator for the GAN loss of autoencoder training (DC-AE phase 3, "local refinement").

Architecture: the N-layer PatchGAN of pix2pix (Isola et al. 2017), as used by taming-transformers' VQGAN and most
latent-diffusion autoencoders: strided 4x4 convolutions with LeakyReLU(0.2), channel width doubling up to 8x, and
one logit per overlapping patch (receptive field 70 px for `num_layers=3`). The official DC-AE discriminator is not
released (DC-Gen's dc_gen/aecore/trainer.py references a `dc_ae_train` model that is not in the
repository); this is the common choice, documented in docs/training.md.

One deliberate difference from taming's `NLayerDiscriminator`: the default normalisation is GroupNorm instead of
BatchNorm. Real and fake images go through the discriminator in one batch (one DDP forward per step), and the
per-rank batch of high-resolution autoencoder training is tiny; GroupNorm keeps every logit a function of its own
image only. `norm_type="batch_norm"` restores taming's behaviour.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from dc_ae_hf.checks import check_int
from dc_ae_hf.choices import NORM_TYPES


def _norm(norm_type: str, channels: int) -> nn.Module:
    if norm_type == "group_norm":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if norm_type == "batch_norm":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class PatchDiscriminator(ModelMixin, ConfigMixin):
    r"""N-layer PatchGAN discriminator: images (B, C, H, W) in [-1, 1] -> patch logits (B, 1, h, w).

    Args:
        in_channels (`int`, defaults to 3): image channels.
        base_channels (`int`, defaults to 64): width of the first convolution; layer i has
            `base_channels * min(2**i, 8)` channels.
        num_layers (`int`, defaults to 3): number of stride-2 convolutions; the output has side
            `H / 2**num_layers - 2` (see `output_size`), so images must be at least `3 * 2**num_layers` px.
        norm_type (`str`, defaults to `"group_norm"`): `"group_norm"` (groups = gcd(32, channels)),
            `"batch_norm"` (taming-transformers) or `"none"`.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        num_layers: int = 3,
        norm_type: str = "group_norm",
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("base_channels", base_channels),
            ("num_layers", num_layers),
        ):
            check_int(name, value, minimum=1)
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
        use_bias = norm_type == "none"  # a bias before a normalisation layer is redundant

        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        channels = base_channels
        for i in range(1, num_layers + 1):
            out_channels = base_channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1  # the last hidden layer keeps the resolution (pix2pix)
            layers += [
                nn.Conv2d(channels, out_channels, kernel_size=4, stride=stride, padding=1, bias=use_bias),
                _norm(norm_type, out_channels),
                nn.LeakyReLU(0.2),
            ]
            channels = out_channels
        layers.append(nn.Conv2d(channels, 1, kernel_size=4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self._init_weights()

    def _init_weights(self) -> None:
        # DCGAN / taming `weights_init`: conv weights N(0, 0.02), normalisation scales N(1, 0.02), biases 0.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def output_size(self, resolution: int) -> int:
        """Side of the logit map for a square input of side `resolution` (< 1 means the input is too small)."""
        size = resolution
        for _ in range(self.config.num_layers):
            size = (size + 2 - 4) // 2 + 1  # k4, s2, p1
        return size - 2  # two k4, s1, p1 convolutions remove one pixel each

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        """Patch logits for images `sample` (B, C, H, W) in [-1, 1]: (B, 1, H / 2**num_layers - 2, ...)."""
        if sample.ndim != 4 or sample.shape[1] != self.config.in_channels:
            raise ValueError(f"sample must have shape (B, {self.config.in_channels}, H, W), got {tuple(sample.shape)}")
        if self.output_size(min(sample.shape[-2:])) < 1:
            raise ValueError(
                f"images of size {tuple(sample.shape[-2:])} are too small for num_layers={self.config.num_layers}; "
                f"they must be at least {3 * 2**self.config.num_layers} px"
            )
        return self.layers(sample)  # (B, 1, h, w)
