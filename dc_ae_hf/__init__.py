"""dc_ae_hf: DC-AE 1.5 (structured latent space) and USiT as Hugging Face diffusers models and pipelines.

The top-level names are imported at their first use (`dc_ae_hf.lazy_names`), so that a script's ``--help`` needs
neither torch nor diffusers. diffusers >= 0.42 resolves the third-party components named in a `model_index.json`
only from modules already in `sys.modules`: ``import dc_ae_hf`` puts the model modules there (they run, importing
torch, when diffusers first looks a class up in them), so it is all a user needs before
``DiffusionPipeline.from_pretrained(...)`` or ``DCAE15Pipeline.from_pretrained(...)``.
"""

from .lazy_names import defer_modules, lazy_names

__version__ = "0.1.0"

_HOMES = {
    "AUTOENCODER_PRESETS": ".presets",
    "AutoencoderDC15": ".models.autoencoder_dc15",
    "AutoencoderDC15Output": ".models.autoencoder_dc15",
    "USIT_PRESETS": ".presets",
    "USiTTransformer2DModel": ".models.transformer_usit",
    "DCAE15Pipeline": ".pipelines.pipeline_dcae15",
    "GuidanceCutoffCallback": ".pipelines.callbacks",
    "convert_autoencoder_state_dict": ".convert.autoencoder",
    "infer_autoencoder_config": ".convert.autoencoder",
    "convert_usit_state_dict": ".convert.usit",
    "infer_usit_config": ".convert.usit",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
defer_modules(["dc_ae_hf.models.autoencoder_dc15", "dc_ae_hf.models.transformer_usit"])
