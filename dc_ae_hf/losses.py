"""Moved to `dc_ae_hf.training.losses`; this alias keeps existing imports working."""

from dc_ae_hf.training.losses import (  # noqa: F401
    generator_adversarial_loss,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
)

__all__ = ["generator_adversarial_loss", "hinge_d_loss", "hinge_g_loss", "reconstruction_loss"]
