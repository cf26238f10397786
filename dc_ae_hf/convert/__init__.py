"""Converters from the official DC-Gen / efficientvit checkpoints (`python -m dc_ae_hf.convert --help`)."""

from .autoencoder import (
    LatentStructureError,
    ScalingFactorUnknownWarning,
    convert_autoencoder_state_dict,
    infer_autoencoder_config,
    load_official_autoencoder,
    match_autoencoder_presets,
)
from .checkpoint_io import ConverterInputError, load_original_checkpoint
from .usit import (
    AttentionHeadsError,
    EmaDecayError,
    convert_usit_state_dict,
    infer_usit_config,
    load_usit_from_original,
)

__all__ = [
    "AttentionHeadsError",
    "ConverterInputError",
    "EmaDecayError",
    "LatentStructureError",
    "ScalingFactorUnknownWarning",
    "convert_autoencoder_state_dict",
    "convert_usit_state_dict",
    "infer_autoencoder_config",
    "infer_usit_config",
    "load_official_autoencoder",
    "load_original_checkpoint",
    "load_usit_from_original",
    "match_autoencoder_presets",
]
