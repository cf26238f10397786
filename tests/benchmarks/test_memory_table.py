"""benchmarks/memory_table.py: the arithmetic of model states and the counting of saved activations."""

from __future__ import annotations

import importlib.util

import torch
from conftest import REPO_ROOT
from torch import nn

spec = importlib.util.spec_from_file_location("memory_table", REPO_ROOT / "benchmarks" / "memory_table.py")
memory_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory_table)


def test_saved_activations_count_each_tensor_once_and_no_parameters():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        x = torch.randn(3, 4)
    # linear 1 saves its input (3x4), ReLU its output (3x8), linear 2 the same ReLU output: 12 + 24 floats
    assert memory_table.saved_activation_bytes(model, lambda m: m(x)) == (12 + 24) * 4


def test_model_states_per_gpu():
    # 20 bytes per parameter (fp32 weights, grads, two AdamW moments, one EMA); FSDP adds two bf16 blocks
    assert memory_table.model_states(1000, 100, ema_decays=1, gpus=None) == 20_000
    assert memory_table.model_states(1000, 100, ema_decays=2, gpus=None) == 24_000
    assert memory_table.model_states(1000, 100, ema_decays=1, gpus=8) == 20_000 / 8 + 2 * 2 * 100
