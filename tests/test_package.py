"""`dc_ae_hf/__init__.py` and the package layout: inference never imports training code; old module paths work."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT

_INFERENCE_ONLY = """
import sys
import dc_ae_hf, dc_ae_hf.convert, dc_ae_hf.convert.cli, dc_ae_hf.latents, dc_ae_hf.sampling, dc_ae_hf.checks
import dc_ae_hf.loading, dc_ae_hf.hub, dc_ae_hf.pipelines.callbacks, dc_ae_hf.models.discriminator
loaded = sorted(m for m in sys.modules if m.startswith("dc_ae_hf.training") or m in ("datasets", "lpips"))
print(loaded)
"""


def test_inference_modules_do_not_import_training_code():
    result = subprocess.run(
        [sys.executable, "-c", _INFERENCE_ONLY], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


def test_old_module_paths_re_export_the_moved_names():
    from dc_ae_hf import autoencoder_training, diffusion_training, flow_matching, losses, training_utils
    from dc_ae_hf.training import autoencoder, cards, checkpoints, diffusion, ema, randomness
    from dc_ae_hf.training import flow_matching as new_flow_matching
    from dc_ae_hf.training import losses as new_losses

    assert flow_matching.flow_matching_loss is new_flow_matching.flow_matching_loss
    assert training_utils.LatentChannelSampler is randomness.LatentChannelSampler
    assert training_utils.save_checkpoint is checkpoints.save_checkpoint
    assert losses.reconstruction_loss is new_losses.reconstruction_loss
    assert autoencoder_training.phase_trainable_parameters is autoencoder.phase_trainable_parameters
    assert autoencoder_training.write_trained_autoencoder_card is cards.write_trained_autoencoder_card
    assert diffusion_training.ExponentialWarmupEMAModel is ema.ExponentialWarmupEMAModel
    assert diffusion_training.ema_sample_grid is diffusion.ema_sample_grid
