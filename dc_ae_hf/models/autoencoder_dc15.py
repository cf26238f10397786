"""DC-AE 1.5: a deep-compression autoencoder with a structured latent space (arXiv 2508.00413).

`AutoencoderDC15` is diffusers' `AutoencoderDC` plus the one thing DC-AE 1.5 adds at inference time: encoding to,
and decoding from, a *prefix* of the latent channels. Submodule names are the parent's, so state dicts are
interchangeable in both directions (`AutoencoderDC.from_pretrained` loads our folders and vice versa).

Channel prefixes (paper Sec. 3.2, Eq. 1). The official code truncates at the latent ends: the encoder head
(`AdaptiveOutputConvLayer`) computes only the first c' output filters and the decoder stem
(`AdaptiveInputConvLayer`) uses only the first c' input slices of its weight (`dc_gen/models/nn/ops.py`). Because
the decoder stem is a convolution and DC-AE 1.5 has no latent-level shortcut, that is exactly the same function as
slicing the full latent and zero-filling the missing channels before an ordinary decoder. We use the latter form: it
keeps every parent code path (tiling, slicing, offload hooks) untouched.

DC-AE 1.0 models have latent-level shortcuts (`encoder_out_shortcut` averages groups of channels into the latent,
`decoder_in_shortcut` repeats latent channels into the decoder stem). A prefix has no defined meaning there: zero
channels would be repeated into the stem and the averaged groups would be cut in half. Prefixes are rejected for
such models with a clear error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers import AutoencoderDC
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, EncoderOutput
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' pipeline loader looks it up here)
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook

from dc_ae_hf.latents import check_scaling_factor, zero_fill_prefix
from dc_ae_hf.loading import PretrainedChecksMixin
from dc_ae_hf.presets import AUTOENCODER_PRESETS, resolve_autoencoder_preset
from dc_ae_hf.self_contained import SelfContainedModelMixin


@dataclass
class AutoencoderDC15Output(BaseOutput):
    """Output of `AutoencoderDC15.forward`.

    Args:
        sample: reconstruction (B, 3, H, W), not clamped.
        latent: the latent prefix that was decoded (B, c', H/f, W/f), unscaled.
    """

    sample: torch.Tensor
    latent: torch.Tensor


class _CheckpointableStage(nn.Sequential):
    """An `nn.Sequential` stage whose blocks can be gradient-checkpointed one at a time.

    Same children, hence the same state-dict keys, as the `nn.Sequential` it replaces. `ModelMixin`'s
    `enable_gradient_checkpointing` finds it through the `gradient_checkpointing` attribute.
    """

    def __init__(self, *blocks: nn.Module) -> None:
        super().__init__(*blocks)
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for block in self:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, hidden_states)
            else:
                hidden_states = block(hidden_states)
        return hidden_states


class AutoencoderDC15(PretrainedChecksMixin, SelfContainedModelMixin, AutoencoderDC):
    r"""DC-AE with a structured latent space (DC-AE 1.5), loadable and savable like diffusers' `AutoencoderDC`.

    All of `AutoencoderDC`'s arguments are accepted with the same meaning (see its docstring); they are re-declared
    here because `ConfigMixin` only records the arguments of the class's own `__init__`.

    Args:
        latent_channel_choices (`tuple[int, ...]`, *optional*):
            The channel prefixes c' the latent space is structured for (paper Eq. 1; DC-AE 1.5 uses 16, 20, ..., c).
            Trainers draw c' uniformly from this list and validation iterates over it. `None` means the model is
            not structured: only the full latent is meaningful (the list is then `(latent_channels,)`). Must be
            strictly increasing values in `1..latent_channels`; models with latent shortcuts (DC-AE 1.0) only allow
            `None` or `(latent_channels,)`.

    Channel prefixes c' follow two rules, both owned here (the pipeline, the metrics, the trainers and
    `dc_ae_hf.latents.decode_prefix` ask the model rather than re-deriving them):

    - *decodable* (`can_decode_prefix`, `check_prefix`): every 1 <= c' <= latent_channels when the model has no
      latent-level shortcuts (DC-AE 1.5); only the full latent for a DC-AE 1.0 model with them.
    - *trained* (`latent_channel_choices`, `is_trained_prefix`): the prefixes the latent space is structured for. A
      decodable but untrained prefix still encodes and decodes, with a warning (evaluating one is a legitimate
      experiment, paper Fig. 3); `DCAE15Pipeline` refuses to sample in one.

    Images are (B, 3, H, W) in [-1, 1] with H and W multiples of `spatial_compression_ratio` (an image of another
    size raises: pad or resize it first; silently padding would shift the latent grid). Latents are unscaled; move
    them to diffusion space with `dc_ae_hf.latents` (multiply by `scaling_factor` after encoding).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ResBlock", "EfficientViTBlock", "DCDownBlock2d", "DCUpBlock2d"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 32,
        attention_head_dim: int = 32,
        encoder_block_types: str | tuple[str, ...] = "ResBlock",
        decoder_block_types: str | tuple[str, ...] = "ResBlock",
        encoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024),
        decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024),
        encoder_layers_per_block: tuple[int, ...] = (2, 2, 2, 3, 3, 3),
        decoder_layers_per_block: tuple[int, ...] = (3, 3, 3, 3, 3, 3),
        encoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,)),
        decoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,)),
        upsample_block_type: str = "pixel_shuffle",
        downsample_block_type: str = "pixel_unshuffle",
        decoder_norm_types: str | tuple[str, ...] = "rms_norm",
        decoder_act_fns: str | tuple[str, ...] = "silu",
        encoder_out_shortcut: bool = True,
        decoder_in_shortcut: bool = True,
        decoder_conv_act_fn: str = "relu",
        scaling_factor: float = 1.0,
        latent_channel_choices: tuple[int, ...] | None = None,
    ) -> None:
        _validate_latent_channel_choices(
            latent_channel_choices, latent_channels, encoder_out_shortcut or decoder_in_shortcut
        )
        check_scaling_factor(scaling_factor)
        super().__init__(
            in_channels=in_channels,
            latent_channels=latent_channels,
            attention_head_dim=attention_head_dim,
            encoder_block_types=encoder_block_types,
            decoder_block_types=decoder_block_types,
            encoder_block_out_channels=encoder_block_out_channels,
            decoder_block_out_channels=decoder_block_out_channels,
            encoder_layers_per_block=encoder_layers_per_block,
            decoder_layers_per_block=decoder_layers_per_block,
            encoder_qkv_multiscales=encoder_qkv_multiscales,
            decoder_qkv_multiscales=decoder_qkv_multiscales,
            upsample_block_type=upsample_block_type,
            downsample_block_type=downsample_block_type,
            decoder_norm_types=decoder_norm_types,
            decoder_act_fns=decoder_act_fns,
            encoder_out_shortcut=encoder_out_shortcut,
            decoder_in_shortcut=decoder_in_shortcut,
            decoder_conv_act_fn=decoder_conv_act_fn,
            scaling_factor=scaling_factor,
        )
        # Re-wrap the stages (same child modules, same keys) so each block can be gradient-checkpointed.
        self.encoder.down_blocks = nn.ModuleList(_CheckpointableStage(*stage) for stage in self.encoder.down_blocks)
        self.decoder.up_blocks = nn.ModuleList(_CheckpointableStage(*stage) for stage in self.decoder.up_blocks)
        self.use_channels_last = False

    # -- speed ---------------------------------------------------------------------------------------------------

    def enable_channels_last(self) -> None:
        """Run convolutions in channels-last memory layout (opt-in; the default path is diffusers' own layout).

        On the 2-core CPU of docs/benchmarks.md it measures no speed-up (0.87-1.10x against diffusers' model, the
        same spread as our default path, which runs the same kernels, at 0.91-1.04x): the convolutions already run
        at the dense-GEMM rate there. GPUs with tensor cores often prefer this layout; that is not measured here.

        Same function up to fp32 rounding: the weights are re-laid out, not changed. Inputs are converted on the
        way in and outputs returned in the usual contiguous (B, C, H, W) layout. Call it after loading weights.
        """
        self.to(memory_format=torch.channels_last)
        self.use_channels_last = True

    def disable_channels_last(self) -> None:
        """Back to the default contiguous layout."""
        self.to(memory_format=torch.contiguous_format)
        self.use_channels_last = False

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_channels_last:
            return super()._encode(x)
        return super()._encode(x.contiguous(memory_format=torch.channels_last)).contiguous()

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if not self.use_channels_last:
            return super()._decode(z)
        return super()._decode(z.contiguous(memory_format=torch.channels_last)).contiguous()

    # -- presets -------------------------------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **overrides) -> AutoencoderDC15:
        """A randomly initialised model with the architecture of an official model, e.g. `"dc-ae-1.5-f64c128"`.

        `overrides` replace preset config values (e.g. `latent_channel_choices=(32, 64, 128)`).
        """
        config = dict(AUTOENCODER_PRESETS[resolve_autoencoder_preset(name)])
        config.update(overrides)
        return cls(**config)

    # -- structured latent space ---------------------------------------------------------------------------------

    @property
    def latent_channel_choices(self) -> tuple[int, ...]:
        """The prefixes c' this model was trained for (`config.latent_channel_choices`); `(latent_channels,)`, the
        full latent only, for an unstructured model (config value None)."""
        choices = self.config.latent_channel_choices
        return tuple(choices) if choices else (self.config.latent_channels,)

    @property
    def has_latent_shortcuts(self) -> bool:
        """True for DC-AE 1.0-style models, where channel prefixes are undefined."""
        return bool(self.config.encoder_out_shortcut or self.config.decoder_in_shortcut)

    def is_trained_prefix(self, latent_channels: int) -> bool:
        """Whether c' = `latent_channels` is one of the prefixes this model was trained for (`latent_channel_choices`).

        False for anything that is not an int (bools included)."""
        return _is_int(latent_channels) and latent_channels in self.latent_channel_choices

    def can_decode_prefix(self, latent_channels: int) -> bool:
        """Whether this model can encode to and decode from the first c' = `latent_channels` latent channels.

        True for every 1 <= c' <= latent_channels when the model has no latent-level shortcuts (DC-AE 1.5: the
        official `AdaptiveInputConvLayer` / `AdaptiveOutputConvLayer`, `dc_gen/models/nn/ops.py`); only for the full
        latent when it has them (DC-AE 1.0: a prefix has no defined meaning, see the module docstring). False for
        anything that is not an int (bools included). Decodable does not mean trained: see `is_trained_prefix`.
        """
        c = self.config.latent_channels
        if not _is_int(latent_channels) or not 1 <= latent_channels <= c:
            return False
        return latent_channels == c or not self.has_latent_shortcuts

    def check_prefix(self, latent_channels: int, name: str = "latent_channels") -> int:
        """`latent_channels` if `can_decode_prefix(latent_channels)`; otherwise TypeError (not an int) or ValueError
        (outside 1..latent_channels, or a prefix of a model with latent-level shortcuts), naming it `name`."""
        if self.can_decode_prefix(latent_channels):
            return latent_channels
        c = self.config.latent_channels
        if not _is_int(latent_channels):
            raise TypeError(
                f"{name} must be an int in 1..{c}, got {latent_channels!r} ({type(latent_channels).__name__})."
            )
        if not 1 <= latent_channels <= c:
            raise ValueError(
                f"{name}={latent_channels} is outside the allowed range 1..{c} (latent_channels of this model)."
            )
        raise ValueError(
            f"{name}={latent_channels} < latent_channels={c}, but this model has latent-level shortcuts "
            f"(encoder_out_shortcut={self.config.encoder_out_shortcut}, "
            f"decoder_in_shortcut={self.config.decoder_in_shortcut}, i.e. a DC-AE 1.0 model): channel prefixes "
            "are only defined for models without them (DC-AE 1.5). Use the full latent."
        )

    def _warn_untrained_prefix(self, latent_channels: int, name: str) -> None:
        # A warning, not an error: evaluating untrained prefixes (e.g. a plain autoencoder with channels zeroed, paper
        # Fig. 3) is a legitimate experiment. DCAE15Pipeline refuses to *sample* in an untrained prefix.
        if not self.is_trained_prefix(latent_channels):
            warnings.warn(
                f"{name}={latent_channels} is not one of this autoencoder's trained prefixes "
                f"{list(self.latent_channel_choices)} (config.latent_channel_choices); the result is an untrained "
                "reconstruction.",
                stacklevel=3,
            )

    # -- encode / decode -----------------------------------------------------------------------------------------

    @apply_forward_hook
    def encode(
        self, x: torch.Tensor, latent_channels: int | None = None, return_dict: bool = True
    ) -> EncoderOutput | tuple[torch.Tensor]:
        r"""Encode images (B, 3, H, W) in [-1, 1] to latents (B, c', H/f, W/f).

        Args:
            x: the images; H and W must be multiples of `spatial_compression_ratio`.
            latent_channels: keep only the first c' channels (official `DCAE.encode(x, latent_channels=c')`);
                `None` returns all `latent_channels`.
            return_dict: return an `EncoderOutput` (`.latent`) instead of a tuple.
        """
        self._check_images(x)
        if latent_channels is not None:
            self.check_prefix(latent_channels)
            self._warn_untrained_prefix(latent_channels, "latent_channels")
        latent = super().encode(x, return_dict=False)[0]  # (B, c, H/f, W/f)
        if latent_channels is not None:
            latent = latent[:, :latent_channels]  # (B, c', H/f, W/f): the encoder head's first c' filters
        if not return_dict:
            return (latent,)
        return EncoderOutput(latent=latent)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        r"""Decode latents (B, c', h, w) with 1 <= c' <= latent_channels to images (B, 3, h*f, w*f).

        A prefix of c' < latent_channels channels is decoded as the official `AdaptiveInputConvLayer` does, which
        equals zero-filling the missing trailing channels (`dc_ae_hf.latents.zero_fill_prefix`). c' must pass
        `check_prefix`; one that is not `is_trained_prefix` decodes with a warning.
        """
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}.")
        if z.ndim != 4:
            raise ValueError(f"z must be 4-D (batch, channels, height, width), got shape {tuple(z.shape)}.")
        name = "z.shape[1] (latent channels of z)"
        self._warn_untrained_prefix(self.check_prefix(z.shape[1], name), name)
        z = zero_fill_prefix(z, self.config.latent_channels)  # (B, c, h, w), trailing channels zero
        return super().decode(z, return_dict=return_dict)

    def forward(
        self, sample: torch.Tensor, latent_channels: int | None = None, return_dict: bool = True
    ) -> AutoencoderDC15Output | tuple[torch.Tensor, torch.Tensor]:
        r"""Reconstruct `sample` from the first `latent_channels` latent channels (paper Eq. 1's `D(E(x) * mask)`).

        Returns `AutoencoderDC15Output(sample=reconstruction, latent=latent_prefix)` or the tuple
        `(reconstruction, latent_prefix)`.
        """
        latent = self.encode(sample, latent_channels=latent_channels).latent  # (B, c', H/f, W/f)
        reconstruction = self.decode(latent).sample  # (B, 3, H, W)
        if not return_dict:
            return (reconstruction, latent)
        return AutoencoderDC15Output(sample=reconstruction, latent=latent)

    def _check_images(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of images, got {type(x).__name__}.")
        if x.ndim != 4:
            raise ValueError(f"x must be 4-D (batch, channels, height, width), got shape {tuple(x.shape)}.")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(f"x has {x.shape[1]} channels; this model expects in_channels={self.config.in_channels}.")
        f = self.spatial_compression_ratio
        height, width = x.shape[-2:]
        if height % f or width % f:
            raise ValueError(
                f"x has spatial size {height}x{width}, which is not divisible by the spatial compression ratio {f}; "
                f"pad or resize images to multiples of {f} (e.g. {-(-height // f) * f}x{-(-width // f) * f})."
            )


def _validate_latent_channel_choices(choices, latent_channels: int, has_shortcuts: bool) -> None:
    if choices is None:
        return
    if isinstance(choices, (str, bytes)) or not hasattr(choices, "__iter__"):
        raise TypeError(f"latent_channel_choices must be a sequence of ints or None, got {choices!r}.")
    choices = list(choices)
    if not choices or any(isinstance(c, bool) or not isinstance(c, int) for c in choices):
        raise ValueError(f"latent_channel_choices must be a non-empty sequence of ints, got {choices!r}.")
    if any(c < 1 or c > latent_channels for c in choices):
        raise ValueError(f"latent_channel_choices={choices} must lie in 1..latent_channels={latent_channels}.")
    if any(b <= a for a, b in zip(choices, choices[1:])):
        raise ValueError(f"latent_channel_choices={choices} must be strictly increasing.")
    if has_shortcuts and choices != [latent_channels]:
        raise ValueError(
            f"latent_channel_choices={choices} needs a model without latent shortcuts; set encoder_out_shortcut="
            "False and decoder_in_shortcut=False (DC-AE 1.5), or use None."
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
