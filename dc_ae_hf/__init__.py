"""dc_ae_hf: DC-AE 1.5 (structured latent space) and USiT as Hugging Face diffusers models and pipelines.

Model modules are imported eagerly on purpose: diffusers >= 0.42 resolves third-party components of a
`model_index.json` only from modules already in `sys.modules` (see docs/design.md).
"""

from .convert import convert_autoencoder_state_dict, infer_autoencoder_config
from .models import AUTOENCODER_PRESETS, AutoencoderDC15, AutoencoderDC15Output

__version__ = "0.1.0"

__all__ = [
    "AUTOENCODER_PRESETS",
    "AutoencoderDC15",
    "AutoencoderDC15Output",
    "convert_autoencoder_state_dict",
    "infer_autoencoder_config",
]
