"""Moved to `dc_ae_hf.training` (`ema`, `diffusion`, `cards`) and `dc_ae_hf.data.images` (the labelled image
datasets); this alias keeps existing imports working."""

from dc_ae_hf.data.images import LabeledImageDataset, load_labeled_image_dataset  # noqa: F401
from dc_ae_hf.training.cards import save_pipeline, transformer_summary, write_pipeline_card  # noqa: F401
from dc_ae_hf.training.diffusion import ema_sample_grid, spread_class_labels  # noqa: F401
from dc_ae_hf.training.ema import ExponentialWarmupEMAModel  # noqa: F401
