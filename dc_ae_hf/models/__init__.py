"""The models; each name is imported from its module at its first use (`dc_ae_hf.lazy_names`)."""

from ..lazy_names import lazy_names

_HOMES = {
    "AUTOENCODER_PRESETS": "..presets",
    "AutoencoderDC15": ".autoencoder_dc15",
    "AutoencoderDC15Output": ".autoencoder_dc15",
    "USIT_PRESETS": "..presets",
    "USiTTransformer2DModel": ".transformer_usit",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
