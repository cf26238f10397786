"""Converters from the official DC-Gen / efficientvit checkpoints (`python -m dc_ae_hf.convert --help`).

Each name is imported from its module at its first use (`dc_ae_hf.lazy_names`): the command line's ``--help``
answers before torch is imported.
"""

from ..lazy_names import lazy_names

# Who wrote an output folder (`dc_ae_hf.output_folders`): each command replaces only its own earlier output.
AUTOENCODER_WRITER = "python -m dc_ae_hf.convert autoencoder"
PIPELINE_WRITER = "python -m dc_ae_hf.convert pipeline"

_HOMES = {
    "LatentStructureError": ".autoencoder",
    "ScalingFactorUnknownWarning": ".autoencoder",
    "convert_autoencoder_state_dict": ".autoencoder",
    "infer_autoencoder_config": ".autoencoder",
    "load_official_autoencoder": ".autoencoder",
    "match_autoencoder_presets": ".autoencoder",
    "ConverterInputError": ".checkpoint_io",
    "load_original_checkpoint": ".checkpoint_io",
    "AttentionHeadsError": ".usit",
    "EmaDecayError": ".usit",
    "convert_usit_state_dict": ".usit",
    "infer_usit_config": ".usit",
    "load_usit_from_original": ".usit",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
