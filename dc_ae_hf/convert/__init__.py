"""Converters from the official DC-Gen / efficientvit checkpoints (`python -m dc_ae_hf.convert --help`)."""

from .autoencoder import convert_autoencoder_state_dict, infer_autoencoder_config, load_official_autoencoder
from .checkpoint_io import load_original_checkpoint
from .usit import convert_usit_state_dict, infer_usit_config, load_usit_from_original

__all__ = [
    "convert_autoencoder_state_dict",
    "convert_usit_state_dict",
    "infer_autoencoder_config",
    "infer_usit_config",
    "load_official_autoencoder",
    "load_original_checkpoint",
    "load_usit_from_original",
]
