"""Moved to `dc_ae_hf.training.autoencoder` (and the model card to `dc_ae_hf.training.cards`); this alias keeps
existing imports working."""

from dc_ae_hf.training.autoencoder import (  # noqa: F401
    PHASES,
    freeze_frozen_norm_statistics,
    load_autoencoder_config,
    phase_trainable_modules,
    phase_trainable_parameters,
    reconstruct_prefixes,
    stage_indices,
    subsample_channels,
)
from dc_ae_hf.training.cards import write_trained_autoencoder_card  # noqa: F401
