"""Moved to `dc_ae_hf.training.flow_matching`; this alias keeps existing imports working."""

from dc_ae_hf.training.flow_matching import (  # noqa: F401
    draw_time_and_noise,
    flow_matching_loss,
    flow_matching_pass,
    linear_interpolant,
)

__all__ = ["draw_time_and_noise", "flow_matching_loss", "flow_matching_pass", "linear_interpolant"]
