"""dc_ae_hf: DC-AE 1.5 (structured latent space) and USiT as Hugging Face diffusers models and pipelines.

Model and pipeline modules are imported eagerly on purpose: diffusers >= 0.42 resolves the third-party components
named in a `model_index.json` only from modules already in `sys.modules`, so `import dc_ae_hf` is all a user needs
before `DCAE15Pipeline.from_pretrained(...)`.
"""

from .convert import (
    convert_autoencoder_state_dict,
    convert_usit_state_dict,
    infer_autoencoder_config,
    infer_usit_config,
)
from .models import AUTOENCODER_PRESETS, USIT_PRESETS, AutoencoderDC15, AutoencoderDC15Output, USiTTransformer2DModel
from .pipelines import DCAE15Pipeline, GuidanceCutoffCallback

__version__ = "0.1.0"

__all__ = [
    "AUTOENCODER_PRESETS",
    "USIT_PRESETS",
    "AutoencoderDC15",
    "AutoencoderDC15Output",
    "DCAE15Pipeline",
    "GuidanceCutoffCallback",
    "USiTTransformer2DModel",
    "convert_autoencoder_state_dict",
    "convert_usit_state_dict",
    "infer_autoencoder_config",
    "infer_usit_config",
]
