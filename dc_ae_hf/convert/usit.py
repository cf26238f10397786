"""Official USiT / UViT checkpoints -> ``USiTTransformer2DModel`` state dicts.

Accepted inputs (dc_gen/c2i_model_zoo.py, dc_gen/apps/trainer/dc_trainer.py ``get_train_states``):

- a plain official state dict (``UViT.state_dict()``: ``patch_embed.proj.*``, ``pos_embed``, ...);
- the Hub format (``DCAE_Diffusion_HF`` ``model.safetensors``): keys under ``diffusion_model.``, possibly next to
  ``autoencoder.*`` keys, which are dropped;
- the DDP training form (``ModuleList[ModuleDict]``): keys under ``0.``;
- training checkpoints ``{"ema": {decay: state_dict}, ...}`` (FSDP, the DC-AE 1.5 USiT form; the official loader
  ``UViT.load_model`` with ``pretrained_source="dc-ae-fsdp"``, dc_gen/c2icore/diffusioncore/models/uvit.py, takes
  ``next(iter(ckpt["ema"].values()))``: with one decay that is the one taken here too, with several ``ema_decay``
  must name one) or ``{"model_state_dict": ...}``.

Only key names change (table below); tensors are copied unchanged. Everything is strict: an unknown key, a missing
key or a shape that does not match the target raises a ValueError naming the keys.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Mapping

import torch

from ..models.transformer_usit import USiTTransformer2DModel
from .checkpoint_io import ConverterInputError, load_original_checkpoint, spell_argument

# (official regex, diffusers-side replacement); a key must match exactly one pattern.
_BLOCK = r"(in_blocks\.\d+|mid_block|out_blocks\.\d+)"
_RENAMES: list[tuple[str, str]] = [
    (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"pos_embed", r"pos_embed"),
    (r"label_emb\.embedding_table\.weight", r"label_embed.weight"),
    (_BLOCK + r"\.(norm1|norm2)\.(weight|bias)", r"\1.\2.\3"),
    (_BLOCK + r"\.attn\.qkv\.weight", r"\1.attn.to_qkv.weight"),
    (_BLOCK + r"\.attn\.proj\.(weight|bias)", r"\1.attn.to_out.\2"),
    (_BLOCK + r"\.mlp\.(fc1|fc2)\.(weight|bias)", r"\1.mlp.\2.\3"),
    (r"(out_blocks\.\d+)\.skip_linear\.(weight|bias)", r"\1.skip_linear.\2"),
    (r"norm\.(weight|bias)", r"norm_out.\1"),
    (r"decoder_pred\.(weight|bias)", r"proj_out.\1"),
]
_RENAMES_COMPILED = [(re.compile(pattern), replacement) for pattern, replacement in _RENAMES]
# hidden size -> heads of the official models (dc_gen/c2icore/diffusioncore/models/uvit.py: UViT-S 512/8,
# UViT/USiT-H 1152/16, USiT-2B/-3B 2048/32)
_OFFICIAL_HEADS = {512: 8, 1152: 16, 2048: 32}


class AttentionHeadsError(ConverterInputError):
    """The USiT head count is missing (hidden size of no official model) or does not divide the hidden size.

    Attributes: ``hidden_size``; ``num_attention_heads`` (``None`` when it was not given); ``official_heads``
    ({hidden size: heads} of the official models). The count is never guessed: with another count the converted
    model computes a different velocity than the official one (the weights fit any divisor of the hidden size).
    """

    def __init__(self, hidden_size: int, num_attention_heads: int | None, official_heads: Mapping[int, int]):
        self.hidden_size, self.num_attention_heads = hidden_size, num_attention_heads
        self.official_heads = dict(official_heads)
        super().__init__()

    def describe(self, cli: bool = False) -> str:
        if self.num_attention_heads is not None:
            return (
                f"hidden size {self.hidden_size} is not divisible by "
                f"{spell_argument('num_attention_heads', cli, str(self.num_attention_heads))}; the head count must "
                f"divide the hidden size (hidden size = heads x head dim)."
            )
        official = ", ".join(f"{h} -> {n}" for h, n in sorted(self.official_heads.items()))
        return (
            f"{spell_argument('num_attention_heads', cli)} is required: the attention head count is not stored in "
            f"the weights, and hidden size {self.hidden_size} is no official USiT width (official hidden size -> "
            f"heads: {official}). Pass {spell_argument('num_attention_heads', cli, 'N')} with the count the model "
            "was trained with" + (" (or --preset NAME for an official model)" if cli else "") + "; no count is "
            "guessed because a wrong one gives a different velocity than the official model."
        )


class EmaDecayError(ConverterInputError):
    """``ema_decay`` is needed (several EMAs in the checkpoint), absent from the checkpoint, or given for a
    checkpoint without EMAs. Attributes: ``ema_decay`` (as given, or ``None``), ``available`` (the decays)."""

    def __init__(self, ema_decay: float | None, available: list):
        self.ema_decay, self.available = ema_decay, list(available)
        super().__init__()

    def describe(self, cli: bool = False) -> str:
        decays = ", ".join(str(d) for d in self.available)
        if not self.available:
            return (
                f"{spell_argument('ema_decay', cli, str(self.ema_decay))} was given but the checkpoint has no "
                "'ema' entry; drop it."
            )
        if self.ema_decay is None:
            return (
                f"the checkpoint holds {len(self.available)} EMAs (decays {decays}); choose one with "
                f"{spell_argument('ema_decay', cli, 'DECAY')}."
            )
        return (
            f"{spell_argument('ema_decay', cli, str(self.ema_decay))} is not in the checkpoint; "
            f"its EMA decays are {decays}."
        )


def check_num_attention_heads(num_attention_heads) -> int | None:
    """``num_attention_heads`` as given if it is ``None`` or a positive int; ValueError otherwise."""
    if num_attention_heads is None:
        return None
    if isinstance(num_attention_heads, bool) or not isinstance(num_attention_heads, int) or num_attention_heads <= 0:
        raise ValueError(
            f"num_attention_heads={num_attention_heads!r} is not allowed: it must be a positive int (the head count "
            "the model was trained with) or None for the official widths."
        )
    return num_attention_heads


def _unwrap_checkpoint(original: Mapping, ema_decay: float | None) -> Mapping:
    """Return the state dict inside a training checkpoint (or ``original`` itself)."""
    if ema_decay is not None and (
        isinstance(ema_decay, bool) or not isinstance(ema_decay, numbers.Real) or not math.isfinite(ema_decay)
    ):
        raise ValueError(f"ema_decay={ema_decay!r} is not allowed: it must be a finite number (a decay) or None.")
    if "ema" in original and isinstance(original["ema"], Mapping):
        emas = original["ema"]
        if len(emas) == 0:
            raise ValueError("The checkpoint's 'ema' entry is empty.")
        if ema_decay is None:
            if len(emas) > 1:
                raise EmaDecayError(None, list(emas))
            return next(iter(emas.values()))  # official: next(iter(ckpt["ema"].values()))
        for decay, state_dict in emas.items():
            if math.isclose(float(decay), float(ema_decay)):
                return state_dict
        raise EmaDecayError(ema_decay, list(emas))
    if ema_decay is not None:
        raise EmaDecayError(ema_decay, [])
    if "model_state_dict" in original and isinstance(original["model_state_dict"], Mapping):
        return original["model_state_dict"]
    return original


def _strip_prefixes(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """Drop the Hub (``diffusion_model.``, with ``autoencoder.*`` removed) or DDP (``0.``) prefixes."""
    keys = list(state_dict)
    if any(k.startswith("diffusion_model.") for k in keys):
        foreign = [k for k in keys if not k.startswith(("diffusion_model.", "autoencoder."))]
        if foreign:
            raise ValueError(f"Hub-format checkpoint has keys outside diffusion_model./autoencoder.: {foreign[:10]}")
        return {k[len("diffusion_model.") :]: v for k, v in state_dict.items() if k.startswith("diffusion_model.")}
    if keys and all(k.startswith("0.") for k in keys):
        return {k[2:]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _rename(key: str) -> str | None:
    for pattern, replacement in _RENAMES_COMPILED:
        if pattern.fullmatch(key):
            return pattern.sub(replacement, key)
    return None


def convert_usit_state_dict(
    original: Mapping,
    model: USiTTransformer2DModel | None = None,
    config: Mapping | None = None,
    ema_decay: float | None = None,
) -> dict[str, torch.Tensor]:
    """Convert an official USiT checkpoint (any form listed in the module docstring) to this package's keys.

    Args:
        original: the loaded checkpoint (``load_original_checkpoint``).
        model: optional target model; the key set and every tensor shape are checked against its state dict.
        config: optional ``USiTTransformer2DModel`` config (dict); used like ``model`` (built on the meta device).
        ema_decay: for ``{"ema": {decay: state_dict}}`` checkpoints, which decay to take (default: the only one;
            an ``EmaDecayError`` listing the decays when there are several).

    Returns:
        a state dict for ``USiTTransformer2DModel.load_state_dict(..., strict=True)``.
    """
    if not isinstance(original, Mapping):
        raise TypeError(f"`original` must be a mapping (a state dict or checkpoint), got {type(original).__name__}.")
    if model is not None and config is not None:
        raise ValueError("Pass at most one of `model` and `config`.")
    state_dict = _strip_prefixes(_unwrap_checkpoint(original, ema_decay))

    converted, unmatched = {}, []
    for key, value in state_dict.items():
        new_key = _rename(key)
        if new_key is None:
            unmatched.append(key)
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"Checkpoint entry {key!r} is a {type(value).__name__}, not a tensor.")
        converted[new_key] = value
    if unmatched:
        raise ValueError(
            f"{len(unmatched)} checkpoint keys do not belong to an official USiT/UViT model (unsupported "
            f"variants such as mlp_time_embed or qkv_bias are rejected): {sorted(unmatched)[:20]}"
        )

    if config is not None:
        with torch.device("meta"):
            model = USiTTransformer2DModel(**dict(config))
    if model is not None:
        expected = model.state_dict()
        missing = sorted(set(expected) - set(converted))
        unexpected = sorted(set(converted) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"Converted keys do not match the target model. Missing: {missing[:20]}; unexpected: {unexpected[:20]}."
            )
        wrong = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
            for k, v in converted.items()
            if v.shape != expected[k].shape
        ]
        if wrong:
            raise ValueError("Tensor shapes do not match the target model:\n  " + "\n  ".join(wrong[:20]))
    return converted


def infer_usit_config(
    original_state_dict: Mapping,
    num_attention_heads: int | None = None,
    class_dropout_prob: float = 0.1,
    ema_decay: float | None = None,
) -> dict:
    """Derive the ``USiTTransformer2DModel`` config from checkpoint shapes.

    The head count cannot be read from shapes: pass ``num_attention_heads`` (a positive int); when omitted it is
    taken from the official models for their hidden sizes (512 -> 8, 1152 -> 16, 2048 -> 32) and is an
    ``AttentionHeadsError`` (a ValueError) otherwise, as is a count that does not divide the hidden size. The label
    table has ``num_classes + 1`` rows when ``class_dropout_prob > 0`` (all official models: 0.1), else
    ``num_classes`` rows.
    """
    check_num_attention_heads(num_attention_heads)
    sd = convert_usit_state_dict(original_state_dict, ema_decay=ema_decay)
    for key in (
        "pos_embed",
        "patch_embed.proj.weight",
        "label_embed.weight",
        "proj_out.weight",
        "mid_block.mlp.fc1.weight",
    ):
        if key not in sd:
            raise ValueError(f"Cannot infer the USiT config: the checkpoint has no tensor for {key!r}.")
    _, num_tokens, hidden = sd["pos_embed"].shape
    _, in_channels, patch_size, _ = sd["patch_embed.proj.weight"].shape
    num_in = len({k.split(".")[1] for k in sd if k.startswith("in_blocks.")})
    num_out = len({k.split(".")[1] for k in sd if k.startswith("out_blocks.")})
    if num_in != num_out:
        raise ValueError(f"Checkpoint has {num_in} in_blocks but {num_out} out_blocks; expected equal counts.")
    grid = math.isqrt(num_tokens - 2)
    if grid * grid != num_tokens - 2:
        raise ValueError(f"pos_embed has {num_tokens} tokens; expected 2 + a square number of patch tokens.")
    if num_attention_heads is None:
        if hidden not in _OFFICIAL_HEADS:
            raise AttentionHeadsError(hidden, None, _OFFICIAL_HEADS)
        num_attention_heads = _OFFICIAL_HEADS[hidden]
    if hidden % num_attention_heads != 0:
        raise AttentionHeadsError(hidden, num_attention_heads, _OFFICIAL_HEADS)
    label_rows = sd["label_embed.weight"].shape[0]
    return dict(
        sample_size=grid * patch_size,
        patch_size=patch_size,
        in_channels=in_channels,
        num_layers=2 * num_in,
        num_attention_heads=num_attention_heads,
        attention_head_dim=hidden // num_attention_heads,
        mlp_ratio=sd["mid_block.mlp.fc1.weight"].shape[0] / hidden,
        num_classes=label_rows - int(class_dropout_prob > 0),
        class_dropout_prob=class_dropout_prob,
    )


def load_usit_from_original(
    path_or_hub_id: str | os.PathLike,
    num_attention_heads: int | None = None,
    ema_decay: float | None = None,
    **config_overrides,
) -> USiTTransformer2DModel:
    """Build a ``USiTTransformer2DModel`` from an official checkpoint: load, infer the config, convert, strict load."""
    original = load_original_checkpoint(path_or_hub_id)
    config = infer_usit_config(original, num_attention_heads=num_attention_heads, ema_decay=ema_decay)
    config.update(config_overrides)
    model = USiTTransformer2DModel(**config)
    model.load_state_dict(convert_usit_state_dict(original, model=model, ema_decay=ema_decay), strict=True)
    return model.eval()
