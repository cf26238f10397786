"""Official DC-AE checkpoints (DC-Gen / efficientvit, 1.0 and 1.5) -> `AutoencoderDC15` state dicts.

The official key grammar (dc_gen/aecore/models/dc_ae.py, dc_gen/models/nn/ops.py) wraps modules in `main.` (residual blocks) and `op_list.` (sequences)
and keeps each conv inside a `ConvLayer` (`.conv.`). Keys are mapped structurally, one rule per official module
kind, and the result is checked key by key and shape by shape against the target architecture; nothing is loaded
silently. EfficientViT attention (1.0 only): the official qkv is one 1x1 conv whose output channels are laid out per
head as [q k v]; diffusers keeps three Linear layers `to_q/to_k/to_v` and concatenates their outputs again before
splitting heads, so the conv weight is cut into three equal row blocks (this preserves the per-head interleave).

Two config values are not in the weights: the structured latent space (`latent_channel_choices`, DC-AE 1.5) and the
latent `scaling_factor`. `infer_autoencoder_config` takes them from the official preset whose architecture the
weights have (`match_autoencoder_presets`); a 1.5-style model of no official architecture needs
`latent_channel_choices` from the caller (`LatentStructureError` otherwise), and an unknown scaling factor is written
as 1.0 with a `ScalingFactorUnknownWarning`.
"""

from __future__ import annotations

import inspect
import logging
import re
import warnings
from collections.abc import Mapping

import torch

from ..latents import check_scaling_factor
from ..models.autoencoder_dc15 import AutoencoderDC15
from ..presets import AUTOENCODER_PRESETS, resolve_autoencoder_preset
from .checkpoint_io import ConverterInputError, spell_argument

logger = logging.getLogger(__name__)

# Ordered (pattern, replacement) rules applied after `main.` and `op_list.` are dropped. A replacement may be a
# tuple of alternatives; the first one that exists in the target model wins (e.g. a stem conv is a bare Conv2d when
# stage 0 has blocks and a down-sampling block otherwise).
_RULES: list[tuple[str, str | tuple[str, ...]]] = [
    # Latent ends and stems.
    (r"^encoder\.project_in\.conv\.conv\.", "encoder.conv_in.conv."),
    (r"^encoder\.project_in\.conv\.", ("encoder.conv_in.", "encoder.conv_in.conv.")),
    (r"^encoder\.project_out\.0\.conv\.", "encoder.conv_out."),
    (r"^decoder\.project_in\.conv\.", "decoder.conv_in."),
    (r"^decoder\.project_out\.0\.", "decoder.norm_out."),
    (r"^decoder\.project_out\.2\.conv\.conv\.", "decoder.conv_out.conv."),
    (r"^decoder\.project_out\.2\.conv\.", ("decoder.conv_out.", "decoder.conv_out.conv.")),
    (r"^encoder\.stages\.", "encoder.down_blocks."),
    (r"^decoder\.stages\.", "decoder.up_blocks."),
    # ResBlock: conv1 (bias) -> act -> conv2 (no bias) -> norm.
    (r"\.conv1\.conv\.", ".conv1."),
    (r"\.conv2\.conv\.", ".conv2."),
    (r"\.conv2\.norm\.", ".norm."),
    # EfficientViT block: LiteMLA ("context_module") then GLUMBConv ("local_module").
    (r"\.context_module\.", ".attn."),
    (r"\.attn\.aggreg\.(\d+)\.0\.", r".attn.to_qkv_multiscale.\1.proj_in."),
    (r"\.attn\.aggreg\.(\d+)\.1\.", r".attn.to_qkv_multiscale.\1.proj_out."),
    (r"\.attn\.proj\.conv\.", ".attn.to_out."),
    (r"\.attn\.proj\.norm\.", ".attn.norm_out."),
    (r"\.local_module\.", ".conv_out."),
    (r"\.inverted_conv\.conv\.", ".conv_inverted."),
    (r"\.depth_conv\.conv\.", ".conv_depth."),
    (r"\.point_conv\.conv\.", ".conv_point."),
    (r"\.point_conv\.norm\.", ".norm."),
    # Down/up-sampling blocks: ConvPixel(Un)Shuffle / InterpolateConv keep their conv in a ConvLayer.
    (r"\.conv\.conv\.", ".conv."),
]

_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict")
_DROPPED_PREFIXES = ("diffusion_model.",)


def _unwrap(original: Mapping) -> dict[str, torch.Tensor]:
    """Strip training-checkpoint nesting (`{"state_dict": ...}`) and an `autoencoder.` prefix (efficientvit's
    diffusion checkpoints store the AE under it)."""
    state = original
    for _ in range(3):
        wrapper = next((k for k in _WRAPPER_KEYS if k in state and isinstance(state[k], Mapping)), None)
        if wrapper is None:
            break
        state = state[wrapper]
    if any(k.startswith("autoencoder.") for k in state):
        state = {k[len("autoencoder.") :]: v for k, v in state.items() if k.startswith("autoencoder.")}
    state = {k: v for k, v in state.items() if not k.startswith(_DROPPED_PREFIXES)}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"original state dict has non-tensor entries: {bad[:5]}")
    return dict(state)


def _candidates(key: str) -> list[str]:
    key = key.replace("main.", "").replace("op_list.", "")
    keys = [key]
    for pattern, replacement in _RULES:
        alternatives = replacement if isinstance(replacement, tuple) else (replacement,)
        new_keys = []
        for k in keys:
            if re.search(pattern, k):
                new_keys.extend(re.sub(pattern, alt, k, count=1) for alt in alternatives)
            else:
                new_keys.append(k)
        keys = new_keys
    return keys


def _squeeze_1x1(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(tensor.shape[0], tensor.shape[1]) if tensor.ndim == 4 else tensor


def convert_autoencoder_state_dict(
    original: Mapping[str, torch.Tensor], config: Mapping | None = None
) -> dict[str, torch.Tensor]:
    """Map an official DC-AE state dict (either generation) to `AutoencoderDC15`/`AutoencoderDC` keys.

    Args:
        original: the official `state_dict()` (keys `encoder.*`, `decoder.*`; a `{"state_dict": ...}` training
            checkpoint and `autoencoder.`-prefixed diffusion checkpoints are unwrapped).
        config: the target `AutoencoderDC15` config (e.g. `AUTOENCODER_PRESETS[name]`). Default: the architecture
            inferred from the weights (as in `infer_autoencoder_config`; the key mapping needs no scaling factor or
            latent structure).

    Returns a state dict that loads with `load_state_dict(strict=True)` into `AutoencoderDC15(**config)`. Raises
    ValueError naming every unmatched key and every shape mismatch.
    """
    state = _unwrap(original)
    config = dict(config) if config is not None else _infer_architecture(state)
    with torch.device("meta"):
        target = AutoencoderDC15(**config).state_dict()

    converted: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, tensor in state.items():
        if key.endswith(".qkv.conv.weight"):
            # One official conv -> three diffusers linears (rows [0:C], [C:2C], [2C:3C]).
            base = next((c for c in _candidates(key) if c.replace(".qkv.conv.weight", ".to_q.weight") in target), None)
            if base is None:
                unmatched.append(key)
                continue
            for name, chunk in zip(("to_q", "to_k", "to_v"), _squeeze_1x1(tensor).chunk(3, dim=0)):
                converted[base.replace("qkv.conv.weight", f"{name}.weight")] = chunk.contiguous()
            continue
        new_key = next((c for c in _candidates(key) if c in target), None)
        if new_key is None:
            unmatched.append(key)
            continue
        if target[new_key].ndim == 2:
            tensor = _squeeze_1x1(tensor)  # 1x1 conv -> Linear (attention output projection)
        converted[new_key] = tensor

    missing = sorted(set(target) - set(converted))
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in converted.items()
        if tuple(v.shape) != tuple(target[k].shape)
    ]
    if unmatched or missing or mismatched:
        raise ValueError(
            "the checkpoint does not match the target autoencoder architecture:\n"
            + (f"  checkpoint keys with no counterpart ({len(unmatched)}): {unmatched[:20]}\n" if unmatched else "")
            + (f"  model keys missing from the checkpoint ({len(missing)}): {missing[:20]}\n" if missing else "")
            + (f"  shape mismatches ({len(mismatched)}): {mismatched[:20]}\n" if mismatched else "")
            + "Check the preset/config (e.g. f32 vs f64, 1.0 vs 1.5) or let infer_autoencoder_config derive it."
        )
    return converted


# ---------------------------------------------------------------------------------------------------------------
# Architecture inference from official weights
# ---------------------------------------------------------------------------------------------------------------


def _stage_ops(state: Mapping[str, torch.Tensor], side: str) -> dict[int, dict[int, str]]:
    """{stage: {op index: sub-key}} for `<side>.stages.<s>.op_list.<j>.<rest>` keys."""
    stages: dict[int, dict[int, str]] = {}
    for key in state:
        m = re.match(rf"^{side}\.stages\.(\d+)\.op_list\.(\d+)\.(.*)$", key)
        if m:
            stages.setdefault(int(m.group(1)), {}).setdefault(int(m.group(2)), "")
            stages[int(m.group(1))][int(m.group(2))] += m.group(3) + "|"
    return stages


def _is_block(sub_keys: str) -> str | None:
    if "context_module." in sub_keys:
        return "EfficientViTBlock"
    if "conv1." in sub_keys:
        return "ResBlock"
    return None


def _infer_architecture(state: Mapping[str, torch.Tensor]) -> dict:
    """The network read from an (unwrapped) official state dict; `scaling_factor` 1.0, `latent_channel_choices`
    None (neither is in the weights)."""
    for required in ("encoder.", "decoder."):
        if not any(k.startswith(required) for k in state):
            raise ValueError(
                f"not a DC-AE state dict: no keys start with {required!r} (first keys: {list(state)[:5]})"
            )

    def get(pattern: str) -> torch.Tensor:
        hits = [v for k, v in state.items() if re.fullmatch(pattern, k)]
        if not hits:
            raise ValueError(f"not a DC-AE state dict: no key matches {pattern!r}")
        return hits[0]

    decoder_in = get(r"decoder\.project_in\.(main\.)?conv\.weight")
    latent_channels, deepest_width = decoder_in.shape[1], decoder_in.shape[0]
    in_channels = get(r"encoder\.project_in\.conv\.(conv\.)?weight").shape[1]

    enc_ops, dec_ops = _stage_ops(state, "encoder"), _stage_ops(state, "decoder")
    num_stages = max(max(enc_ops, default=0), max(dec_ops, default=0)) + 1
    sides = {}
    dec_norms = ["rms_norm"] * num_stages
    for side, ops in (("encoder", enc_ops), ("decoder", dec_ops)):
        depth, types, widths = [0] * num_stages, ["ResBlock"] * num_stages, [0] * num_stages
        scales: list[tuple[int, ...]] = [()] * num_stages
        for s, stage in ops.items():
            blocks = [j for j, sub in sorted(stage.items()) if _is_block(sub)]
            depth[s] = len(blocks)
            if not blocks:
                continue
            types[s] = _is_block(stage[blocks[0]])
            prefix = f"{side}.stages.{s}.op_list.{blocks[0]}."
            if types[s] == "ResBlock":
                widths[s] = state[prefix + "main.conv1.conv.weight"].shape[0]
            else:
                widths[s] = state[prefix + "context_module.main.qkv.conv.weight"].shape[1]
                aggreg = re.escape(prefix) + r"context_module\.main\.aggreg\.(\d+)\.0\.weight"
                kernels = sorted(
                    (int(m.group(1)), v.shape[-1]) for k, v in state.items() if (m := re.match(aggreg, k))
                )
                scales[s] = tuple(size for _, size in kernels)
            if side == "decoder" and any(k.startswith(prefix) and k.endswith("running_mean") for k in state):
                dec_norms[s] = "batch_norm"
        # A stage without blocks only sets a resolution; its width reaches no weight (official stage 0: 128).
        for s in range(num_stages - 1, -1, -1):
            if widths[s] == 0:
                widths[s] = widths[s + 1] // 2 if s + 1 < num_stages else deepest_width
        sides[side] = (tuple(depth), tuple(types), tuple(widths), tuple(scales))
    for s in range(num_stages - 2, -1, -1):  # a stage without blocks has no norm weights: take its neighbour's
        if not sides["decoder"][0][s]:
            dec_norms[s] = dec_norms[s + 1]
    enc_depth, enc_types, enc_widths, enc_scales = sides["encoder"]
    dec_depth, dec_types, dec_widths, dec_scales = sides["decoder"]

    # Down-sampling: conv to C_out/4 then pixel-unshuffle, or a strided conv to C_out.
    downsample = "pixel_unshuffle"
    for s, stage in enc_ops.items():
        for j, sub in stage.items():
            if not _is_block(sub):
                out = get(rf"encoder\.stages\.{s}\.op_list\.{j}\.main\.conv\.(conv\.)?weight").shape[0]
                downsample = "pixel_unshuffle" if out * 4 == enc_widths[s + 1] else "conv"
    upsample = "pixel_shuffle"
    for s, stage in dec_ops.items():
        if 0 in stage and not _is_block(stage[0]):
            out = state[f"decoder.stages.{s}.op_list.0.main.conv.conv.weight"].shape[0]
            upsample = "pixel_shuffle" if out == 4 * dec_widths[s] else "interpolate"

    encoder_out_shortcut = any(k.startswith("encoder.project_out.main.") for k in state)
    decoder_in_shortcut = any(k.startswith("decoder.project_in.main.") for k in state)
    config = dict(
        in_channels=in_channels,
        latent_channels=latent_channels,
        attention_head_dim=32,  # official LiteMLA head dim (dc_ae.py build_block)
        encoder_block_types=enc_types,
        decoder_block_types=dec_types,
        encoder_block_out_channels=enc_widths,
        decoder_block_out_channels=dec_widths,
        encoder_layers_per_block=enc_depth,
        decoder_layers_per_block=dec_depth,
        encoder_qkv_multiscales=enc_scales,
        decoder_qkv_multiscales=dec_scales,
        upsample_block_type=upsample,
        downsample_block_type=downsample,
        decoder_norm_types=tuple(dec_norms),
        decoder_act_fns=tuple("relu" if n == "batch_norm" else "silu" for n in dec_norms),
        encoder_out_shortcut=encoder_out_shortcut,
        decoder_in_shortcut=decoder_in_shortcut,
        decoder_conv_act_fn="relu" if (encoder_out_shortcut or decoder_in_shortcut) else "silu",
        scaling_factor=1.0,
        latent_channel_choices=None,
    )
    return config


# ---------------------------------------------------------------------------------------------------------------
# What the weights do not say: the structured latent space and the scaling factor
# ---------------------------------------------------------------------------------------------------------------

# Fields that are not part of the network: two checkpoints of one architecture may differ in them.
_NOT_ARCHITECTURE = ("scaling_factor", "latent_channel_choices")
_PER_STAGE = ("block_types", "norm_types", "act_fns")
# Presets whose scaling factor is a placeholder: DC-Gen publishes none for dc-ae-1.5-f32c128
# (dc_ae_hf/presets.py, AUTOENCODER_PRESETS).
_UNPUBLISHED_SCALING_FACTORS = frozenset({"dc-ae-1.5-f32c128"})


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _architecture(config: Mapping) -> dict:
    """`config`'s network in one canonical form: the model's defaults filled in, per-stage strings expanded to one
    entry per stage, lists as tuples, `scaling_factor` and `latent_channel_choices` dropped."""
    params = inspect.signature(AutoencoderDC15.__init__).parameters
    arch = {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}
    arch.update((k, v) for k, v in config.items() if k in arch)
    for side in ("encoder", "decoder"):
        num_stages = len(arch[f"{side}_block_out_channels"])
        for field in _PER_STAGE:
            key = f"{side}_{field}"
            if isinstance(arch.get(key), str):
                arch[key] = (arch[key],) * num_stages
    return {k: _as_tuples(v) for k, v in arch.items() if k not in _NOT_ARCHITECTURE}


def match_autoencoder_presets(config: Mapping) -> list[str]:
    """Names of the `AUTOENCODER_PRESETS` with exactly the network of `config` (an `AutoencoderDC15` config, e.g.
    from `infer_autoencoder_config` or `vae.config`): every field except `scaling_factor` and
    `latent_channel_choices` is compared. Several names come back for the DC-AE 1.0 `in` / `mix` pairs, which share
    an architecture and differ only in the scaling factor."""
    arch = _architecture(config)
    return [name for name, preset in AUTOENCODER_PRESETS.items() if _architecture(preset) == arch]


def recognised_preset(config: Mapping) -> str | None:
    """The one official preset with `config`'s network (`match_autoencoder_presets`), or None (none or several)."""
    matches = match_autoencoder_presets(config)
    return matches[0] if len(matches) == 1 else None


def scaling_factor_is_published(preset: str | None) -> bool:
    """Whether the official preset `preset` (None: not identified) comes with a published scaling factor."""
    return preset is not None and resolve_autoencoder_preset(preset) not in _UNPUBLISHED_SCALING_FACTORS


def describe_latent_config(config: Mapping) -> str:
    """`latent_channel_choices ..., scaling_factor ...` of an autoencoder config, for logs."""
    choices = config.get("latent_channel_choices")
    if choices:
        shown = (
            ", ".join(map(str, choices)) if len(choices) <= 6 else f"{choices[0]}, {choices[1]}, ..., {choices[-1]}"
        )
    else:
        shown = "None"
    return f"latent_channel_choices {shown}, scaling_factor {config.get('scaling_factor')}"


def _has_shortcuts(config: Mapping) -> bool:
    return bool(config.get("encoder_out_shortcut", True) or config.get("decoder_in_shortcut", True))


class LatentStructureError(ConverterInputError):
    """A DC-AE 1.5-style checkpoint (no latent shortcuts) of no official architecture: which channel prefixes it was
    trained to decode (`latent_channel_choices`) is not in the weights and must be given. Attribute:
    `latent_channels`."""

    def __init__(self, latent_channels: int):
        self.latent_channels = latent_channels
        super().__init__()

    def describe(self, cli: bool = False) -> str:
        official = ", ".join(name for name, p in AUTOENCODER_PRESETS.items() if not _has_shortcuts(p))
        choices = "C1 C2 ..." if cli else "(c1, c2, ...)"
        return (
            f"{spell_argument('latent_channel_choices', cli)} is required: this DC-AE 1.5-style checkpoint "
            f"(latent_channels={self.latent_channels}, no latent shortcuts) matches no official architecture "
            f"({official}), and its structured latent space (the channel prefixes it was trained to decode) is not "
            f"stored in the weights. Pass {spell_argument('latent_channel_choices', cli, choices)} with the prefixes "
            f"of its training (increasing, the last one {self.latent_channels}), or "
            f"{spell_argument('latent_channel_choices', cli, 'none' if cli else 'None')} for a deliberately "
            "unstructured model."
        )


class LatentChoicesError(ConverterInputError):
    """`latent_channel_choices` that leave out the full latent: the last prefix must be `latent_channels` (the
    model is trained and sampled with the full latent too; without it the saved structure would claim the decoder
    was never trained on all its channels). Attributes: `choices`, `latent_channels`."""

    def __init__(self, choices, latent_channels: int):
        self.choices, self.latent_channels = list(choices), latent_channels
        super().__init__()

    def describe(self, cli: bool = False) -> str:
        fixed = [c for c in self.choices if c < self.latent_channels] + [self.latent_channels]

        def spell(values: list[int]) -> str:
            return " ".join(map(str, values)) if cli else str(tuple(values))

        return (
            f"{spell_argument('latent_channel_choices', cli, spell(self.choices))} is not allowed: the last prefix "
            f"must be the full latent, {self.latent_channels} channels (the autoencoder's latent_channels), which "
            f"DC-AE 1.5 is always trained on; e.g. {spell_argument('latent_channel_choices', cli, spell(fixed))}"
        )


def _check_full_latent(config: Mapping) -> None:
    choices = config.get("latent_channel_choices")
    if choices is not None and len(choices) and int(choices[-1]) != config["latent_channels"]:
        raise LatentChoicesError(choices, config["latent_channels"])


class ScalingFactorUnknownWarning(UserWarning):
    """The latent scaling factor could not be known from the weights, so 1.0 was written. Attribute: `presets` (the
    official presets of this architecture: several, none, or one whose scaling factor is not published)."""

    def __init__(self, presets: list[str]):
        self.presets = list(presets)
        super().__init__(self.describe(cli=False))

    def describe(self, cli: bool = False) -> str:
        if len(self.presets) > 1:
            values = " and ".join(f"{n} ({AUTOENCODER_PRESETS[n]['scaling_factor']})" for n in self.presets)
            why = f"the architecture is that of {values}, which differ only in it"
            hint = f", or name the model with {spell_argument('preset', cli, 'NAME')}"
        elif self.presets:
            why, hint = f"{self.presets[0]} has no published scaling factor", ""
        else:
            why, hint = "the architecture matches no official preset", ""
        return (
            f"the latent scaling factor is unknown ({why}); 1.0 was written to the config. Set it with "
            f"{spell_argument('scaling_factor', cli, 'S')} (measure it with dc_ae_hf.latents.compute_scaling_factor)"
            f"{hint}."
        )


def infer_autoencoder_config(original: Mapping[str, torch.Tensor], **overrides) -> dict:
    """Derive an `AutoencoderDC15` config from official DC-AE weights (1.0 or 1.5).

    Shapes give widths, depths, block types, multi-scale kernels, down/up-sampling types, decoder norms (batch norm
    carries running statistics) and the latent shortcuts (`main.` wrappers at the latent ends). Two things are not
    in the weights and follow the official configs: decoder stage activations (ReLU with batch norm, SiLU with RMS
    norm) and the decoder's output activation (SiLU without latent shortcuts, i.e. 1.5; ReLU with them, i.e. 1.0).
    Pass `overrides` (e.g. `decoder_conv_act_fn="silu"` for DC-AE-Lite, `scaling_factor=...`) where they differ.

    `scaling_factor` and `latent_channel_choices` are not in the weights either. When the network is exactly that
    of one official preset (`match_autoencoder_presets`), both come from the preset. Otherwise:

    - a 1.5-style network (no latent shortcuts) raises `LatentStructureError` unless `latent_channel_choices` is
      passed (a tuple of prefixes, or `None` for a deliberately unstructured model: passing `None` is not the same
      as leaving it out);
    - when the scaling factor is unknown (several presets, none, or an unpublished one) and `scaling_factor` is not
      passed, 1.0 is written and a `ScalingFactorUnknownWarning` says so.
    """
    state = _unwrap(original)
    config = _infer_architecture(state)
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown config overrides {sorted(unknown)}; allowed: {sorted(config)}")
    if "scaling_factor" in overrides:
        check_scaling_factor(overrides["scaling_factor"])
    _check_full_latent({**config, **overrides})  # before any warning about the scaling factor
    matches = match_autoencoder_presets(config)
    if len(matches) == 1:
        preset = AUTOENCODER_PRESETS[matches[0]]
        config.update(scaling_factor=preset["scaling_factor"], latent_channel_choices=preset["latent_channel_choices"])
        logger.info("recognised the official architecture %s", matches[0])
    elif not _has_shortcuts(config) and "latent_channel_choices" not in overrides:
        raise LatentStructureError(config["latent_channels"])
    if "scaling_factor" not in overrides and (len(matches) != 1 or matches[0] in _UNPUBLISHED_SCALING_FACTORS):
        warnings.warn(ScalingFactorUnknownWarning(matches), stacklevel=2)
    config.update(overrides)
    return config


def load_official_autoencoder(
    original: Mapping[str, torch.Tensor],
    preset: str | None = None,
    **overrides,
) -> AutoencoderDC15:
    """Build an `AutoencoderDC15` from official weights: config from `preset` (or inferred with
    `infer_autoencoder_config`, whose rules for `latent_channel_choices` and `scaling_factor` apply), `overrides` on
    top, weights loaded strictly."""
    name = resolve_autoencoder_preset(preset) if preset is not None else None
    if name is not None:
        if "scaling_factor" in overrides:
            check_scaling_factor(overrides["scaling_factor"])
        config = dict(AUTOENCODER_PRESETS[name])
        config.update(overrides)
    else:
        config = infer_autoencoder_config(original, **overrides)
    _check_full_latent(config)
    state = convert_autoencoder_state_dict(original, config)
    model = AutoencoderDC15(**config)
    model.load_state_dict(state, strict=True)
    if name in _UNPUBLISHED_SCALING_FACTORS and "scaling_factor" not in overrides:
        warnings.warn(ScalingFactorUnknownWarning([name]), stacklevel=2)
    return model.eval()
