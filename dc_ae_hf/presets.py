"""The official model sizes by name: the autoencoder, USiT and pipeline presets.

Plain data, torch-free: the scripts list the names in their ``--help`` before importing torch. The models build
from them (``AutoencoderDC15.from_preset``, ``USiTTransformer2DModel.from_preset``), and so does the converter
(``python -m dc_ae_hf.convert pipeline --preset``).
"""

from __future__ import annotations

__all__ = [
    "AUTOENCODER_PRESETS",
    "PIPELINE_PRESETS",
    "PRESET_ALIASES",
    "USIT_PRESETS",
    "resolve_autoencoder_preset",
    "resolve_pipeline_preset",
]

# ---------------------------------------------------------------------------------------------------------------
# Named presets for the official models (dc_gen/aecore/models/dc_ae.py, dc_gen/ae_model_zoo.py;
# diffusers scripts/convert_dcae_to_diffusers.py).
# ---------------------------------------------------------------------------------------------------------------


def _dc_ae_15(num_stages: int, scaling_factor: float) -> dict:
    # dc_gen/aecore/models/dc_ae.py: dc_ae_f32_1_5 / dc_ae_f64_1_5. Pure ResBlock CNN, RMSNorm + SiLU everywhere,
    # no latent-level shortcuts, SiLU before the decoder's output conv, adaptive in/out convs at the latent.
    widths = (128, 256, 512, 512, 1024, 1024, 1024)[:num_stages]
    depths = (0, 5, 10, 4, 4, 4, 4)[:num_stages]
    return dict(
        latent_channels=128,
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_block_out_channels=widths,
        decoder_block_out_channels=widths,
        encoder_layers_per_block=depths,
        decoder_layers_per_block=depths,
        encoder_qkv_multiscales=((),) * num_stages,
        decoder_qkv_multiscales=((),) * num_stages,
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        encoder_out_shortcut=False,
        decoder_in_shortcut=False,
        decoder_conv_act_fn="silu",
        scaling_factor=scaling_factor,
        # Paper Sec. 3.2: c' ranges over 16, 20, ..., c (min 16, step 4).
        latent_channel_choices=tuple(range(16, 129, 4)),
    )


def _dc_ae_10(latent_channels: int, num_stages: int, scaling_factor: float) -> dict:
    # dc_gen/aecore/models/dc_ae.py: dc_ae_f32c32 / dc_ae_f64c128 / dc_ae_f128c512 (in and mix share the network).
    widths = (128, 256, 512, 512, 1024, 1024, 2048, 2048)[:num_stages]
    blocks = ("ResBlock",) * 3 + ("EfficientViTBlock",) * (num_stages - 3)
    return dict(
        latent_channels=latent_channels,
        encoder_block_types=blocks,
        decoder_block_types=blocks,
        encoder_block_out_channels=widths,
        decoder_block_out_channels=widths,
        encoder_layers_per_block=(0, 4, 8) + (2,) * (num_stages - 3),
        decoder_layers_per_block=(0, 5, 10) + (2,) * (num_stages - 3),
        encoder_qkv_multiscales=((),) * num_stages,
        decoder_qkv_multiscales=((),) * num_stages,
        decoder_norm_types=("batch_norm",) * 3 + ("rms_norm",) * (num_stages - 3),
        decoder_act_fns=("relu",) * 3 + ("silu",) * (num_stages - 3),
        encoder_out_shortcut=True,
        decoder_in_shortcut=True,
        decoder_conv_act_fn="relu",
        scaling_factor=scaling_factor,
        latent_channel_choices=None,
    )


_SANA_F32C32 = dict(
    latent_channels=32,
    encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    encoder_layers_per_block=(2, 2, 2, 3, 3, 3),
    decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
    encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
    decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
    downsample_block_type="conv",
    upsample_block_type="interpolate",
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    encoder_out_shortcut=True,
    decoder_in_shortcut=True,
    decoder_conv_act_fn="relu",
    scaling_factor=0.41407,
    latent_channel_choices=None,
)

AUTOENCODER_PRESETS: dict[str, dict] = {
    # DC-AE 1.5. The f32c128 scaling factor is not published (no value in DC-Gen): 1.0 until measured, see
    # `dc_ae_hf.latents.compute_scaling_factor`.
    "dc-ae-1.5-f32c128": _dc_ae_15(num_stages=6, scaling_factor=1.0),
    "dc-ae-1.5-f64c128": _dc_ae_15(num_stages=7, scaling_factor=0.5935),
    # DC-AE 1.0.
    "dc-ae-f32c32-in-1.0": _dc_ae_10(32, 6, 0.3189),
    "dc-ae-f32c32-mix-1.0": _dc_ae_10(32, 6, 0.4552),
    "dc-ae-f32c32-sana-1.0": _SANA_F32C32,
    "dc-ae-f64c128-in-1.0": _dc_ae_10(128, 7, 0.2889),
    "dc-ae-f64c128-mix-1.0": _dc_ae_10(128, 7, 0.4538),
    "dc-ae-f128c512-in-1.0": _dc_ae_10(512, 8, 0.4883),
    "dc-ae-f128c512-mix-1.0": _dc_ae_10(512, 8, 0.3620),
}
# The official registry spells the 1.5 names "dc-ae-f64c128-1.5"; accept both.
PRESET_ALIASES: dict[str, str] = {
    "dc-ae-f32c128-1.5": "dc-ae-1.5-f32c128",
    "dc-ae-f64c128-1.5": "dc-ae-1.5-f64c128",
}


def resolve_autoencoder_preset(name: str) -> str:
    """Canonical preset name for `name` (an alias is accepted); ValueError listing the presets otherwise."""
    name = PRESET_ALIASES.get(name, name)
    if name not in AUTOENCODER_PRESETS:
        raise ValueError(
            f"preset={name!r} is not a known autoencoder preset; choose one of {sorted(AUTOENCODER_PRESETS)}"
        )
    return name


# Official sizes (dc_gen/c2i_model_zoo.py, uvit.py bottom). `num_layers` is the official `depth`: 28 -> 14 in-blocks,
# 1 mid-block, 14 out-blocks. All presets use the DC-AE-f64c128-1.5 latent at 512px (128 channels, 8x8); the
# DC-AE 1.0 releases used the f32c32 latent instead: `from_preset("usit-h", in_channels=32, sample_size=16)`.
# The parameter count does not depend on that choice (128x8x8 and 32x16x16 give the same count).
_F64C128_512PX = dict(
    sample_size=8, patch_size=1, in_channels=128, mlp_ratio=4.0, num_classes=1000, class_dropout_prob=0.1
)
USIT_PRESETS: dict[str, dict] = {
    # USiT-H, 500.87M parameters (efficientvit applications/dc_ae/README.md)
    "usit-h": dict(_F64C128_512PX, num_layers=28, num_attention_heads=16, attention_head_dim=72),
    # USiT-2B, 1580.40M parameters; `dc_ae_1_5_usit_2b_in_512px`
    "usit-2b": dict(_F64C128_512PX, num_layers=28, num_attention_heads=32, attention_head_dim=64),
    # USiT-3B (depth 56 -> 57 blocks); `dc_ae_1_5_usit_3b_in_512px`
    "usit-3b": dict(_F64C128_512PX, num_layers=56, num_attention_heads=32, attention_head_dim=64),
}

# Official class-to-image models (dc_gen/c2i_model_zoo.py).
PIPELINE_PRESETS: dict[str, dict] = {
    "dc-ae-1.5-f64c128-usit-2b": {
        "autoencoder": "dc-ae-1.5-f64c128",
        "transformer": "usit-2b",
        "transformer_overrides": {},
    },
    "dc-ae-1.5-f64c128-usit-3b": {
        "autoencoder": "dc-ae-1.5-f64c128",
        "transformer": "usit-3b",
        "transformer_overrides": {},
    },
    "dc-ae-f32c32-in-1.0-usit-h": {
        "autoencoder": "dc-ae-f32c32-in-1.0",
        "transformer": "usit-h",
        "transformer_overrides": {"in_channels": 32, "sample_size": 16},
    },
    "dc-ae-f32c32-in-1.0-usit-2b": {
        "autoencoder": "dc-ae-f32c32-in-1.0",
        "transformer": "usit-2b",
        "transformer_overrides": {"in_channels": 32, "sample_size": 16},
    },
}


def resolve_pipeline_preset(name: str) -> dict:
    """The spec of the pipeline preset `name` (`PIPELINE_PRESETS`); ValueError listing the presets otherwise."""
    if name not in PIPELINE_PRESETS:
        raise ValueError(f"preset={name!r} is not a known pipeline preset; choose one of {sorted(PIPELINE_PRESETS)}")
    return PIPELINE_PRESETS[name]
