"""Autoencoder training pieces used by `training/train_dc_ae.py`: the model to train and which of its parameters train
in each DC-AE phase, the encode-once / decode-every-prefix reconstruction of paper Eq. 1, the discriminator's step.
What a finished run writes (the model folders and their cards) is in `dc_ae_hf.training.export`.

DC-AE training phases ("Decoupled High-Resolution Adaptation", DC-AE paper Sec. 3; not in any released code, so the
exact layer split is our documented, configurable choice; see docs/training.md):

| phase | resolution | trains | loss |
|---|---|---|---|
| 1 full training | low | every parameter | L1 + LPIPS |
| 2 latent adaptation | high | encoder: last `k` stages + `conv_out`; decoder: `conv_in` + first `k` stages | L1 + LPIPS |
| 3 local refinement | low | decoder head: last `m` stages + `norm_out` + `conv_out` | L1 + LPIPS + GAN |

"Stage" means a non-empty entry of `encoder.down_blocks` / `decoder.up_blocks` (DC-AE 1.5's outermost stage has
depth 0: its role is played by the pixel-(un)shuffle convolutions `encoder.conv_in` / `decoder.conv_out`). The
decoder runs `up_blocks` in reverse order, so its *first* (innermost, next to the latent) stages are the last
entries of `up_blocks` and its *last* (outermost, next to the image) stages are the first non-empty entries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from dc_ae_hf.checks import check_channel_prefixes, check_int, invalid
from dc_ae_hf.choices import PHASES
from dc_ae_hf.loading import model_subfolder_hint
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.presets import AUTOENCODER_PRESETS, resolve_autoencoder_preset
from dc_ae_hf.training.losses import hinge_d_loss
from dc_ae_hf.training.optimization import compile_blocks

__all__ = [
    "build_autoencoder",
    "check_image_folder",
    "discriminator_step",
    "resolve_autoencoder_config",
    "freeze_frozen_norm_statistics",
    "load_autoencoder_config",
    "module_parameters",
    "phase_trainable_modules",
    "phase_trainable_parameters",
    "reconstruct_prefixes",
    "stage_indices",
    "subsample_channels",
]


def load_autoencoder_config(
    model_config: str | os.PathLike | None = None, pretrained_model_name_or_path: str | os.PathLike | None = None
) -> tuple[dict, str]:
    """The config dict of the model to train (no weights are loaded) and a description of where it came from.

    Args:
        model_config: train from scratch: a `config.json` file (or a folder holding one) or a preset name
            (`AUTOENCODER_PRESETS`, e.g. "dc-ae-1.5-f32c128").
        pretrained_model_name_or_path: fine-tune: a `save_pretrained` folder or Hub id.
    Exactly one must be given; errors name the training script's flag.
    """
    if (model_config is None) == (pretrained_model_name_or_path is None):
        raise ValueError(
            "give exactly one of --model_config (train from scratch) and --pretrained_model_name_or_path "
            f"(fine-tune), got {model_config!r} and {pretrained_model_name_or_path!r}"
        )
    if pretrained_model_name_or_path is not None:
        try:
            config = AutoencoderDC15.load_config(pretrained_model_name_or_path)
        except (OSError, ValueError) as error:
            hint = model_subfolder_hint(pretrained_model_name_or_path)
            raise ValueError(
                f"--pretrained_model_name_or_path={str(pretrained_model_name_or_path)!r} could not be loaded: {error}"
                f"{hint}"
            ) from error
        return {k: v for k, v in config.items() if not k.startswith("_")}, str(pretrained_model_name_or_path)
    path = Path(model_config)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}, str(path)
    try:
        name = resolve_autoencoder_preset(str(model_config))
    except ValueError:
        raise ValueError(
            f"--model_config={str(model_config)!r} is not allowed: neither a config.json file nor a preset "
            f"{sorted(AUTOENCODER_PRESETS)}"
        ) from None
    return dict(AUTOENCODER_PRESETS[name]), f"preset {name}"


def stage_indices(vae: nn.Module) -> dict[str, list[int]]:
    """Indices of the non-empty stages: ``{"encoder": [...], "decoder": [...]}`` into `down_blocks` / `up_blocks`."""
    return {
        "encoder": [i for i, stage in enumerate(vae.encoder.down_blocks) if len(stage) > 0],
        "decoder": [i for i, stage in enumerate(vae.decoder.up_blocks) if len(stage) > 0],
    }


def _check_stage_count(name: str, value: int, available: int) -> None:
    check_int(name, value, minimum=1, maximum=available)


def phase_trainable_modules(
    vae: nn.Module,
    phase: int,
    latent_adaptation_stages: int = 1,
    refinement_stages: int = 1,
    freeze_encoder: bool = False,
) -> list[str]:
    """Names of the submodules trained in `phase` (all others are frozen); phase 1 returns ``[""]`` (the model).

    Args:
        vae: an `AutoencoderDC15` (or diffusers `AutoencoderDC`).
        phase: 1, 2 or 3 (see the module docstring).
        latent_adaptation_stages: phase 2: how many stages next to the latent train on each side (`k`).
        refinement_stages: phase 3: how many of the decoder's outermost stages train with its head (`m`).
        freeze_encoder: keep the encoder fixed and train only the decoder's share of the phase (phase 1:
            ``["decoder"]``). This is the paper's fair protocol for a plain autoencoder at c' channels (Fig. 3:
            "fine-tune the decoder" for each channel count, the latent space left as it is).
    """
    if phase not in PHASES:
        raise ValueError(f"phase={phase!r} is not a DC-AE training phase; choose one of {sorted(PHASES)}")
    if not isinstance(freeze_encoder, bool):
        raise TypeError(f"freeze_encoder must be a bool, got {freeze_encoder!r}")
    if phase == 1:
        return ["decoder"] if freeze_encoder else [""]
    stages = stage_indices(vae)
    if phase == 2:
        available = min(len(stages["encoder"]), len(stages["decoder"]))
        _check_stage_count("latent_adaptation_stages", latent_adaptation_stages, available)
        encoder = [f"encoder.down_blocks.{i}" for i in stages["encoder"][-latent_adaptation_stages:]]
        decoder = [f"decoder.up_blocks.{i}" for i in stages["decoder"][-latent_adaptation_stages:]]
        return ([] if freeze_encoder else encoder + ["encoder.conv_out"]) + ["decoder.conv_in"] + decoder
    _check_stage_count("refinement_stages", refinement_stages, len(stages["decoder"]))
    head = [f"decoder.up_blocks.{i}" for i in stages["decoder"][:refinement_stages]]
    return head + ["decoder.norm_out", "decoder.conv_out"]


def phase_trainable_parameters(
    vae: nn.Module,
    phase: int,
    latent_adaptation_stages: int = 1,
    refinement_stages: int = 1,
    freeze_encoder: bool = False,
) -> dict[str, nn.Parameter]:
    """The parameters trained in `phase`, by name (in `named_parameters` order); see `phase_trainable_modules`."""
    prefixes = phase_trainable_modules(vae, phase, latent_adaptation_stages, refinement_stages, freeze_encoder)
    return module_parameters(vae, prefixes)


def module_parameters(model: nn.Module, modules: Sequence[str]) -> dict[str, nn.Parameter]:
    """The parameters of the submodules named in `modules` ("" is the model itself), by name, in
    `named_parameters` order."""
    return {
        name: parameter
        for name, parameter in model.named_parameters()
        if any(prefix == "" or name == prefix or name.startswith(prefix + ".") for prefix in modules)
    }


def freeze_frozen_norm_statistics(model: nn.Module) -> None:
    """Put batch norms without trainable parameters in eval mode, so a frozen layer stays bit-identical.

    Call after every `model.train()`. Only DC-AE 1.0 decoders have batch norms; 1.5 uses RMSNorm throughout.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters(recurse=False)
        ):
            module.eval()


def reconstruct_prefixes(
    model: nn.Module,
    images: torch.Tensor,
    channels: Sequence[int],
    decoder: nn.Module | None = None,
    decode_repeats: bool = False,
) -> list[torch.Tensor]:
    """Encode `images` once and reconstruct them from each channel prefix in `channels` (paper Eq. 1).

    The widest prefix goes through `model`'s forward (so a DDP/FSDP wrapper sees a forward pass and synchronises
    the gradients); it returns that reconstruction and the latent prefix, and the narrower prefixes are decoded from
    slices of it with `decoder.decode` (the unwrapped model). Decoding the first c' channels equals decoding the
    latent with channels c'.. zeroed (official `AdaptiveInputConvLayer`). A prefix drawn twice is decoded once,
    unless `decode_repeats`: sharded models (`--fsdp`) must run the decoder the same number of times on every
    process (each run gathers its parameters), whatever c' each process drew.

    Args:
        model: the (possibly wrapped) `AutoencoderDC15`.
        images: (B, 3, H, W) in [-1, 1].
        channels: the sampled prefixes c', e.g. `[128, 48]`.
        decoder: the unwrapped model (default: `model`).
        decode_repeats: decode every entry of `channels` after the first widest one, repeats included.

    Returns:
        one reconstruction (B, 3, H, W) per entry of `channels`, in the same order.
    """
    if not channels:
        raise ValueError("channels must list at least one latent-channel prefix")
    decoder = model if decoder is None else decoder
    widest = max(channels)
    reconstruction, latent = model(images, latent_channels=widest, return_dict=False)  # (B,3,H,W), (B,c'max,h,w)
    if decode_repeats:
        rest = list(channels)
        rest.remove(widest)
        decoded = iter([decoder.decode(latent[:, :c]).sample for c in rest])  # (B, 3, H, W) each
        return [reconstruction if i == channels.index(widest) else next(decoded) for i in range(len(channels))]
    decoded = {widest: reconstruction}
    for c in sorted(set(channels), reverse=True)[1:]:
        decoded[c] = decoder.decode(latent[:, :c]).sample  # (B, 3, H, W)
    return [decoded[c] for c in channels]


def subsample_channels(choices: Sequence[int], max_count: int = 8) -> list[int]:
    """At most `max_count` prefixes spread evenly over `choices`, always with the smallest and the full one."""
    choices = sorted(choices)
    if len(choices) <= max_count:
        return list(choices)
    if max_count < 2:
        return [choices[-1]]
    picks = {round(i * (len(choices) - 1) / (max_count - 1)) for i in range(max_count)}
    return [choices[i] for i in sorted(picks)]


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def check_image_folder(flag: str, folder: str | os.PathLike) -> None:
    """ValueError unless `folder` is an existing directory holding at least one image file (by suffix)."""
    path = Path(folder)
    if not path.is_dir():
        raise invalid(flag, str(folder), "must be an existing imagefolder directory")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*")):
        raise invalid(flag, str(folder), f"contains no images ({sorted(IMAGE_SUFFIXES)})")


def resolve_autoencoder_config(
    model_config: str | os.PathLike | None,
    pretrained_model_name_or_path: str | os.PathLike | None,
    latent_channel_choices: Sequence[int] | None = None,
    resolution: int | None = None,
) -> tuple[nn.Module, str]:
    """The autoencoder to train, built on the meta device (no memory, no weights) from `--model_config` or
    `--pretrained_model_name_or_path` with `--latent_channel_choices` applied, and where it came from; checked
    against `--resolution`."""
    config, source = load_autoencoder_config(model_config, pretrained_model_name_or_path)
    latent_channels = int(config.get("latent_channels", 32))
    if latent_channel_choices is not None:
        check_channel_prefixes("--latent_channel_choices", latent_channel_choices, latent_channels)
        config["latent_channel_choices"] = tuple(latent_channel_choices)
    try:
        with torch.device("meta"):
            vae = AutoencoderDC15.from_config(config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"invalid model configuration from {source} / --latent_channel_choices: {error}") from error
    f = vae.spatial_compression_ratio
    if resolution is not None and resolution % f:
        raise invalid("--resolution", resolution, f"must be divisible by the model's spatial compression ratio {f}")
    return vae, source


def build_autoencoder(
    config: dict,
    trainable_modules: Sequence[str],
    pretrained_model_name_or_path: str | os.PathLike | None = None,
    latent_channel_choices: Sequence[int] | None = None,
    gradient_checkpointing: bool = False,
    compile_backend: str | None = None,
) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """The autoencoder to train, in training mode, with only the parameters of `trainable_modules` (a phase's,
    `phase_trainable_modules`) trainable, returned by name.

    Args:
        config: the resolved model config (`resolve_autoencoder_config`); a fresh model is built from it unless
        pretrained_model_name_or_path: fine-tune this model, with `latent_channel_choices` (when given) written to
            its config (the model gets its new structure, saved with it).
        gradient_checkpointing: trade compute for memory.
        compile_backend: `torch.compile` every block with this backend (`compile_blocks`); None: not compiled.
    """
    if pretrained_model_name_or_path:
        vae = AutoencoderDC15.from_pretrained(pretrained_model_name_or_path)
        if latent_channel_choices:
            vae.register_to_config(latent_channel_choices=tuple(latent_channel_choices))
    else:
        vae = AutoencoderDC15.from_config(config)
    vae.requires_grad_(False)
    trainable = module_parameters(vae, trainable_modules)
    for parameter in trainable.values():
        parameter.requires_grad_(True)
    if gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    if compile_backend is not None:
        compile_blocks(vae, compile_backend)
    vae.train()
    freeze_frozen_norm_statistics(vae)
    return vae, trainable


def discriminator_step(accelerator, disc, optimizer, scheduler, images, reconstructions, max_grad_norm=None):
    """One hinge-loss update of the discriminator on the real `images` and every prefix's (detached)
    reconstruction, in one forward pass; returns the detached loss. Call inside `accelerator.accumulate`."""
    with accelerator.autocast():
        logits = disc(torch.cat([images, *[r.detach() for r in reconstructions]]))  # (B + K*B, 1, h, w)
        real, fake = logits.split([images.shape[0], logits.shape[0] - images.shape[0]])
        loss = hinge_d_loss(real, fake)
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm is not None:
        accelerator.clip_grad_norm_(disc.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()
