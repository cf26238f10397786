from .autoencoder_dc15 import AUTOENCODER_PRESETS, AutoencoderDC15, AutoencoderDC15Output
from .transformer_usit import USIT_PRESETS, USiTTransformer2DModel

__all__ = ["AUTOENCODER_PRESETS", "USIT_PRESETS", "AutoencoderDC15", "AutoencoderDC15Output", "USiTTransformer2DModel"]
