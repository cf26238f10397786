"""The one place where latents are moved between the autoencoder's space and the diffusion model's space.

Official convention (``dc_gen/c2icore/autoencoder.py``, ``SingleAutoencoder.encode/decode``): the latent is
multiplied by ``scaling_factor`` right after encoding and divided by it right before decoding; there is no shift.
The pipeline, both trainers, the latent cache and the tests all go through these functions, so a checkpoint's
``vae.config.scaling_factor`` is read in exactly one place. :func:`compute_scaling_factor` measures the factor
(``1 / std`` of the latents) for a new autoencoder.

It is also where a channel prefix c' (DC-AE 1.5's structured latent space, paper Sec. 3.2) is decoded with any
diffusers ``AutoencoderDC``: :func:`decode_prefix` zero-fills the missing channels (:func:`zero_fill_prefix`) after
checking c' with the model's own rules (``AutoencoderDC15.check_prefix`` and ``is_trained_prefix``), or, for a plain
``AutoencoderDC``, which records no trained prefixes, with :func:`check_prefix`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderDC


def _encode(vae: AutoencoderDC, images: torch.Tensor, latent_channels: int | None) -> torch.Tensor:
    """The autoencoder's (unscaled) latent of images (B, 3, H, W); the first ``latent_channels`` channels if given."""
    if latent_channels is None:
        return vae.encode(images).latent
    return vae.encode(images, latent_channels=latent_channels).latent


def check_scaling_factor(scaling_factor) -> float:
    """`scaling_factor` as a float if it is a finite number > 0 (latents are multiplied by it); ValueError
    otherwise."""
    if (
        isinstance(scaling_factor, bool)
        or not isinstance(scaling_factor, numbers.Real)
        or not math.isfinite(scaling_factor)
        or scaling_factor <= 0
    ):
        raise ValueError(
            f"scaling_factor={scaling_factor!r} is not allowed: it must be a finite number > 0 (diffusion latents are "
            "the autoencoder latents times it, dc_ae_hf/latents.py)."
        )
    return float(scaling_factor)


def get_scaling_factor(vae: AutoencoderDC) -> float:
    """Return ``vae.config.scaling_factor`` as a float, rejecting values that cannot scale a latent."""
    return check_scaling_factor(getattr(vae.config, "scaling_factor", 1.0))


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
    return to_diffusion_space(vae, _encode(vae, images, latent_channels))


def decode_from_diffusion_space(vae: AutoencoderDC, latents: torch.Tensor) -> torch.Tensor:
    """Decode scaled latents (B, c', h, w) to images (B, 3, h*f, w*f), roughly in [-1, 1] (not clamped).

    A prefix c' < latent_channels is decoded by :func:`decode_prefix`, with any ``AutoencoderDC``."""
    return decode_prefix(vae, from_diffusion_space(vae, latents))


# ---------------------------------------------------------------------------------------------------------------
# Channel prefixes c' (structured latent space, DC-AE 1.5)
# ---------------------------------------------------------------------------------------------------------------
#
# The rules belong to the model: `AutoencoderDC15` says which prefixes it can decode (`can_decode_prefix`,
# `check_prefix`) and which it was trained for (`latent_channel_choices`, `is_trained_prefix`). The functions below
# ask it through those methods (by name: this module cannot import the model's, which imports this one) and apply
# the one rule there is for a plain diffusers `AutoencoderDC`, which records no trained prefixes: any prefix decodes
# zero-filled unless its decoder has an input shortcut (`decoder_in_shortcut`, DC-AE 1.0), which repeats latent
# channels into the decoder stem.


def _owns_prefix_rules(vae: AutoencoderDC) -> bool:
    """Whether `vae` states its own prefix rules (an `AutoencoderDC15`, ours or a self-contained folder's copy)."""
    methods = ("can_decode_prefix", "check_prefix", "is_trained_prefix")
    return all(callable(getattr(vae, method, None)) for method in methods)


def _check_latent_tensor(latents, name: str) -> torch.Tensor:
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B, c', h, w), got {type(latents).__name__}.")
    if latents.ndim != 4:
        raise ValueError(f"{name} must be 4-D (batch, channels, height, width), got shape {tuple(latents.shape)}.")
    return latents


def zero_fill_prefix(latents: torch.Tensor, latent_channels: int) -> torch.Tensor:
    """A channel prefix (B, c', h, w) as the full latent (B, C, h, w), C = ``latent_channels``: channels c'..C-1 are
    zeros; a full latent is returned as it is.

    Decoding this equals decoding the prefix with the official ``AdaptiveInputConvLayer``
    (``dc_gen/models/nn/ops.py``), which uses only the first c' input slices of the decoder stem's weight: the stem
    is a convolution, so zero channels add nothing. Only valid for a decoder without an input shortcut (see
    :func:`check_prefix`). ValueError when ``latents`` has more than ``latent_channels`` channels.
    """
    _check_latent_tensor(latents, "latents")
    if isinstance(latent_channels, bool) or not isinstance(latent_channels, int):
        raise TypeError(f"latent_channels must be an int, got {latent_channels!r} ({type(latent_channels).__name__}).")
    missing = latent_channels - latents.shape[1]
    if missing < 0:
        raise ValueError(
            f"latents has {latents.shape[1]} channels, more than latent_channels={latent_channels}: a prefix has at "
            "most the full latent's channels."
        )
    if not missing:
        return latents
    return F.pad(latents, (0, 0, 0, 0, 0, missing))  # (B, C, h, w), trailing channels zero


def trained_prefixes(vae: AutoencoderDC) -> tuple[int, ...] | None:
    """The channel prefixes c' ``vae`` was trained for: ``AutoencoderDC15.latent_channel_choices`` (the full latent
    alone for an unstructured one); None for a plain diffusers ``AutoencoderDC``, which does not record them."""
    return tuple(vae.latent_channel_choices) if _owns_prefix_rules(vae) else None


def can_decode_prefix(vae: AutoencoderDC, latent_channels: int) -> bool:
    """Whether ``vae`` can decode the first c' = ``latent_channels`` channels of its latent.

    An ``AutoencoderDC15`` answers itself (``vae.can_decode_prefix``: no prefix with latent-level shortcuts). A plain
    ``AutoencoderDC``: any int 1 <= c' <= latent_channels unless its decoder has an input shortcut
    (``decoder_in_shortcut``), which allows the full latent only."""
    if _owns_prefix_rules(vae):
        return vae.can_decode_prefix(latent_channels)
    c = vae.config.latent_channels
    if isinstance(latent_channels, bool) or not isinstance(latent_channels, int) or not 1 <= latent_channels <= c:
        return False
    return latent_channels == c or not vae.config.decoder_in_shortcut


def check_prefix(vae: AutoencoderDC, latent_channels: int, name: str = "latent_channels") -> int:
    """``latent_channels`` if :func:`can_decode_prefix`; otherwise TypeError (not an int) or ValueError naming
    ``name``, the value and what is allowed. An ``AutoencoderDC15`` raises its own errors (``vae.check_prefix``)."""
    if _owns_prefix_rules(vae):
        return vae.check_prefix(latent_channels, name)
    if can_decode_prefix(vae, latent_channels):
        return latent_channels
    c = vae.config.latent_channels
    if isinstance(latent_channels, bool) or not isinstance(latent_channels, int):
        raise TypeError(
            f"{name} must be an int in 1..{c}, got {latent_channels!r} ({type(latent_channels).__name__})."
        )
    if not 1 <= latent_channels <= c:
        raise ValueError(
            f"{name}={latent_channels} is outside the allowed range 1..{c} (latent_channels of this "
            f"{type(vae).__name__})."
        )
    raise ValueError(
        f"{name}={latent_channels} < latent_channels={c}, but this {type(vae).__name__} has latent shortcuts "
        "(decoder_in_shortcut=True, a DC-AE 1.0 model): its decoder repeats latent channels into its stem, so it "
        "cannot decode a channel prefix. Use the full latent."
    )


def decode_prefix(vae: AutoencoderDC, latents: torch.Tensor) -> torch.Tensor:
    """Decode autoencoder latents (B, c', h, w) (unscaled; 1 <= c' <= latent_channels) to images (B, 3, h*f, w*f),
    roughly in [-1, 1] (not clamped), with any ``AutoencoderDC``.

    An ``AutoencoderDC15`` decodes the prefix itself (``vae.decode``: ``check_prefix``, a warning for a prefix that
    is not ``is_trained_prefix``, zero-filling). A plain ``AutoencoderDC`` gets c' checked by :func:`check_prefix`
    and the zero-filled latent (:func:`zero_fill_prefix`). Pass latents in the vae's dtype and on its device.
    """
    if _owns_prefix_rules(vae):
        return vae.decode(latents).sample
    _check_latent_tensor(latents, "latents")
    check_prefix(vae, latents.shape[1], "latents.shape[1] (latent channels of latents)")
    return vae.decode(zero_fill_prefix(latents, vae.config.latent_channels)).sample


# ---------------------------------------------------------------------------------------------------------------
# Measuring the scaling factor
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class LatentStatistics:
    """Streaming mean and std over all elements of latent tensors: element count, sum and sum of squares in float64.

    ``update`` adds a tensor (any shape), ``merge`` combines statistics gathered separately (per shard, per
    process), ``to_dict``/``from_dict`` store them (the latent cache keeps one per shard). The std is the
    *population* std around the mean, ``sqrt(E[z^2] - E[z]^2)``, over all channels and positions together.
    """

    count: int = 0
    sum: float = 0.0
    sum_of_squares: float = 0.0

    def update(self, latents: torch.Tensor) -> LatentStatistics:
        values = latents.detach().to(torch.float64)
        self.count += values.numel()
        self.sum += float(values.sum())
        self.sum_of_squares += float(values.square().sum())
        return self

    def merge(self, other: LatentStatistics) -> LatentStatistics:
        return LatentStatistics(
            self.count + other.count, self.sum + other.sum, self.sum_of_squares + other.sum_of_squares
        )

    @property
    def mean(self) -> float:
        if self.count == 0:
            raise ValueError("no latent elements were accumulated: the mean of an empty set is undefined")
        return self.sum / self.count

    @property
    def std(self) -> float:
        mean = self.mean
        return math.sqrt(max(self.sum_of_squares / self.count - mean * mean, 0.0))

    def to_dict(self) -> dict[str, int | float]:
        return {"count": self.count, "sum": self.sum, "sum_of_squares": self.sum_of_squares}

    @classmethod
    def from_dict(cls, values: Mapping) -> LatentStatistics:
        return cls(int(values["count"]), float(values["sum"]), float(values["sum_of_squares"]))


def _image_batch(batch, position: int) -> torch.Tensor:
    """The (B, 3, H, W) pixels of one batch: a tensor, or a mapping with "pixel_values" (the trainers' loaders)."""
    if isinstance(batch, Mapping):
        if "pixel_values" not in batch:
            raise TypeError(
                f"images: batch {position} is a mapping without a 'pixel_values' key (keys: {sorted(batch)}); "
                "pass tensors (B, 3, H, W) or dicts with 'pixel_values'"
            )
        batch = batch["pixel_values"]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(
            f"images: batch {position} is a {type(batch).__name__}; expected a tensor (B, 3, H, W) in [-1, 1] or a "
            "dict with 'pixel_values'"
        )
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"images: batch {position} has shape {tuple(batch.shape)}; expected (B, 3, H, W)")
    return batch


def latent_statistics(
    vae: AutoencoderDC,
    images: Iterable[torch.Tensor | Mapping[str, torch.Tensor]] | torch.Tensor,
    latent_channels: int | None = None,
) -> LatentStatistics:
    """Encode ``images`` (without gradients, on the vae's device in its dtype) and return the statistics of the
    *unscaled* latents (the autoencoder's own space, before ``scaling_factor``).

    ``images``: an iterable of batches, each a tensor (B, 3, H, W) in [-1, 1] or a dict with "pixel_values" (as the
    trainers' dataloaders yield); a single 4-D tensor counts as one batch. Batches are encoded one at a time and only
    their sums are kept (no concatenation). ``latent_channels`` keeps the first c' channels (structured latent
    space); None: the full latent.
    """
    if isinstance(images, torch.Tensor):
        images = [images]
    try:
        batches = iter(images)
    except TypeError:
        raise TypeError(
            f"images must be an iterable of image batches (B, 3, H, W), got {type(images).__name__}"
        ) from None
    device, dtype = vae.device, vae.dtype
    statistics = LatentStatistics()
    num_batches = 0
    with torch.no_grad():
        for position, batch in enumerate(batches):
            pixels = _image_batch(batch, position)
            num_batches += 1
            if pixels.shape[0] == 0:
                continue
            statistics.update(_encode(vae, pixels.to(device, dtype), latent_channels))
    if statistics.count == 0:
        raise ValueError(
            f"images yielded {'no batch' if num_batches == 0 else 'only empty batches'}: the scaling factor needs "
            "at least one image"
        )
    return statistics


def compute_scaling_factor(
    vae: AutoencoderDC,
    images: Iterable[torch.Tensor | Mapping[str, torch.Tensor]] | torch.Tensor,
    latent_channels: int | None = None,
) -> float:
    """``1 / std`` of the autoencoder's latents of ``images``: the ``scaling_factor`` giving unit-variance diffusion
    latents.

    The scaling factor of latent diffusion is one over the std of the latents over the training data (Rombach et
    al., LDM, Sec. 4.3.2 and App. D.1; the official models' factors, ``dc_gen/c2icore/autoencoder.py``, are used the
    same way: multiply after encoding, divide before decoding). The std is the population std over all elements of
    all channels (one number, not per channel, as in diffusers and Sana), taken *around the mean* like the usual
    ``1 / latents.std()``. The mean is subtracted only to measure the spread, never from the latents: the official
    convention has no shift, so a factor can only fix the spread, and with the centred std the diffusion latents
    have variance exactly 1 (their mean, ``latent_statistics(...).mean`` times the factor, is usually small; the
    latent cache records it). Use the images (crop, resolution) the diffusion model trains on; ~1000 suffice.

    ``images`` and ``latent_channels``: as in :func:`latent_statistics`. Raises ValueError for an empty
    ``images`` or latents whose std is 0 or not finite.
    """
    statistics = latent_statistics(vae, images, latent_channels)
    std = statistics.std
    if not math.isfinite(std) or not std > 0:
        raise ValueError(
            f"the latents of the given images have std {std} (mean {statistics.mean}, {statistics.count} elements): "
            "1 / std is not a usable scaling factor; check the images (e.g. all identical or NaN) and the autoencoder"
        )
    return 1.0 / std
