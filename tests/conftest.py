"""Shared test configuration: offline Hub, the official reference fixtures, tiny model configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests never touch the network; the Hub client checks this variable when it is called.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
# Tensors from the official DC-Gen code (tests/fixtures/reference/README.md); DC_AE_HF_FIXTURES overrides the folder.
FIXTURES = Path(os.environ.get("DC_AE_HF_FIXTURES", REPO_ROOT / "tests" / "fixtures" / "reference"))

# A 1.5-style autoencoder small enough for a CPU test: f8, 16 latent channels, structured prefixes.
TINY_AE15_CONFIG = dict(
    latent_channels=16,
    encoder_block_types="ResBlock",
    decoder_block_types="ResBlock",
    encoder_block_out_channels=(8, 16, 32, 32),
    decoder_block_out_channels=(8, 16, 32, 32),
    encoder_layers_per_block=(0, 1, 1, 1),
    decoder_layers_per_block=(0, 1, 2, 1),
    encoder_qkv_multiscales=((), (), (), ()),
    decoder_qkv_multiscales=((), (), (), ()),
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    encoder_out_shortcut=False,
    decoder_in_shortcut=False,
    decoder_conv_act_fn="silu",
    scaling_factor=0.7,
    latent_channel_choices=(4, 8, 12, 16),
)

# A 1.0-style one: EfficientViT stage (2 heads, multi-scale qkv), batch norm, latent shortcuts.
TINY_AE10_CONFIG = dict(
    latent_channels=16,
    encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
    decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
    encoder_block_out_channels=(16, 32, 64),
    decoder_block_out_channels=(16, 32, 64),
    encoder_layers_per_block=(0, 1, 1),
    decoder_layers_per_block=(0, 1, 1),
    encoder_qkv_multiscales=((), (), (5,)),
    decoder_qkv_multiscales=((), (), (5,)),
    decoder_norm_types=("batch_norm", "batch_norm", "rms_norm"),
    decoder_act_fns=("relu", "relu", "silu"),
    encoder_out_shortcut=True,
    decoder_in_shortcut=True,
    decoder_conv_act_fn="relu",
    scaling_factor=0.3,
)


def fixture_path(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        raise FileNotFoundError(f"reference fixture {path} is missing; set DC_AE_HF_FIXTURES to the fixtures folder")
    return path


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on 2 shared cores: one intra-op thread is faster (no OpenMP barriers) and, like training
    subprocesses started with OMP_NUM_THREADS=1, gives the same float reductions."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def usit_workspace(tmp_path_factory) -> Path:
    """One tiny USiT training workspace (`helpers.make_usit_workspace`: images, AE, config, a latent cache made by
    two processes) shared read-only by every test module that trains a USiT: building it costs a two-process launch."""
    from helpers import make_usit_workspace  # helpers imports this module: imported here, not at the top

    return make_usit_workspace(tmp_path_factory.mktemp("usit_workspace"))
