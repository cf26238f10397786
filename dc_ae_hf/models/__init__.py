from .autoencoder_dc15 import AUTOENCODER_PRESETS, AutoencoderDC15, AutoencoderDC15Output

__all__ = ["AUTOENCODER_PRESETS", "AutoencoderDC15", "AutoencoderDC15Output"]
