"""benchmarks/gpu_check.sh: every step runs (at tiny sizes on the CPU) and lands in one results file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.slow
def test_gpu_check_runs_every_step_at_tiny_sizes(tmp_path):
    out = tmp_path / "gpu_check.md"
    env = {**os.environ, "GPU_CHECK_OUT": str(out), "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh"), "--tiny"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for title in (
        "USiT-2B training, f64c128 vs f32c32",
        "USiT-2B training, blocks compiled",
        "f64c128 autoencoder vs diffusers AutoencoderDC",
        "50-step sampling, 512 px latents",
        "USiT-2B training, FSDP2 on one GPU vs plain",
    ):
        assert f"{title}: ok in" in text, text[-3000:]
    assert "| latent shape | f64c128-shaped 8x8x128" in text and "blocks compiled (eager)" in text
    assert (
        "| FSDP2 (fully_shard per block, one process) |" in text
        and "tiny mode on the CPU: the steps run, the numbers mean nothing" in text
    )
