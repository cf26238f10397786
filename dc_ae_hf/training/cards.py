"""Moved: the model cards and the pipeline folder of a finished run are written by `dc_ae_hf.training.export`; the
card templates are filled by `dc_ae_hf.hub`. This module only keeps those names importable from here for
`examples/toy/report/card.py` (`write_pipeline_card`, whose home is `dc_ae_hf.hub`); delete it once that imports
from `dc_ae_hf.hub`.
"""

from dc_ae_hf.hub import transformer_summary, write_pipeline_card
from dc_ae_hf.training.export import save_pipeline, write_trained_autoencoder_card

__all__ = ["save_pipeline", "transformer_summary", "write_pipeline_card", "write_trained_autoencoder_card"]
