"""`dc_ae_hf.visualization.prefix_reconstruction_grid` with any AutoencoderDC (the layout is tested with the
autoencoder trainer, tests/scripts/test_train_dc_ae.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_AE10_CONFIG, TINY_AE15_CONFIG
from diffusers import AutoencoderDC

from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.visualization import prefix_reconstruction_grid

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_plain_autoencoder_dc_draws_the_same_grid():
    vae = AutoencoderDC15(**TINY_AE15_CONFIG).eval()
    plain = AutoencoderDC(**{k: v for k, v in TINY_AE15_CONFIG.items() if k != "latent_channel_choices"}).eval()
    plain.load_state_dict(vae.state_dict())
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    grid = np.asarray(prefix_reconstruction_grid(vae, images, [16, 4, 8]))
    assert grid.shape == (2 * 34 + 2, 4 * 34 + 2, 3)
    # the decoders differ in fp32 rounding only: a uint8 step at most
    plain_grid = np.asarray(prefix_reconstruction_grid(plain, images, [16, 4, 8]))
    assert np.abs(grid.astype(int) - plain_grid.astype(int)).max() <= 1


def test_channels_are_checked_before_encoding():
    images = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"^channels=\[4, 17\] has values \[17\] outside 1..16"):
        prefix_reconstruction_grid(AutoencoderDC15(**TINY_AE15_CONFIG), images, [4, 17])
    with pytest.raises(TypeError, match=r"channels=4.0 .*must be a list of ints"):
        prefix_reconstruction_grid(AutoencoderDC15(**TINY_AE15_CONFIG), images, 4.0)
    with pytest.raises(ValueError, match=r"^channels\[1\]=8 < latent_channels=16, but this model has latent-level"):
        prefix_reconstruction_grid(AutoencoderDC15(**TINY_AE10_CONFIG), images, [16, 8])
    with pytest.raises(ValueError, match=r"^channels\[0\]=8 < latent_channels=16, but this AutoencoderDC has latent"):
        prefix_reconstruction_grid(AutoencoderDC(**TINY_AE10_CONFIG), images, [8])
