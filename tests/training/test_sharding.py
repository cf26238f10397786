"""`dc_ae_hf.training.sharding` on a process group of one (in a subprocess, so this pytest process stays
undistributed): bf16 FSDP2 keeps fp32 master weights and gradients, matches bf16 autocast without FSDP, and gathers
the full weights. The 2-process trainer tests are tests/scripts/test_train_usit_fsdp.py and test_train_dc_ae.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT
from helpers import subprocess_env

from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.training.sharding import block_modules

_GROUP_OF_ONE = r"""
import json, socket
import torch, torch.distributed as dist
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.training.flow_matching import flow_matching_loss
from dc_ae_hf.training.sharding import gather_model, shard_model

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
config = dict(sample_size=4, in_channels=16, num_layers=2, num_attention_heads=2, attention_head_dim=16, num_classes=10)
torch.manual_seed(0)
plain = USiTTransformer2DModel(**config).train()
sharded = USiTTransformer2DModel(**config).train()
sharded.load_state_dict(plain.state_dict())
sharded.enable_gradient_checkpointing()
units = shard_model(sharded, torch.device("cpu"), "bf16")
latents, labels = torch.randn(4, 16, 4, 4), torch.tensor([0, 1, 2, 3])
losses = []
for model in (plain, sharded):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = flow_matching_loss(model, latents, labels, [16, 8], generator=torch.Generator().manual_seed(1))
    loss.backward()
    losses.append(loss.item())
grads = [torch.cat([p.grad.flatten() for p in plain.parameters()])]
grads.append(torch.cat([p.grad.full_tensor().flatten() for p in sharded.parameters()]))
copy = gather_model(sharded)
print(json.dumps({
    "units": units,
    "parameter": [type(p).__name__ for p in sharded.parameters()][0],
    "dtypes": sorted({str(p.dtype) for p in sharded.parameters()} | {str(p.grad.dtype) for p in sharded.parameters()}),
    "losses": losses,
    "gradient_difference": ((grads[0] - grads[1]).norm() / grads[0].norm()).item(),
    "gathered_equal": all(torch.equal(copy.state_dict()[k], v) for k, v in plain.state_dict().items()),
    "gathered_class": type(copy).__name__,
}))
"""


def test_bf16_fsdp2_on_a_group_of_one_keeps_fp32_masters_and_matches_autocast():
    result = subprocess.run(
        [sys.executable, "-c", _GROUP_OF_ONE],
        env=subprocess_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["units"] == ["in_blocks.0", "mid_block", "out_blocks.0", "(root)"]
    assert report["parameter"] == "DTensor" and report["dtypes"] == ["torch.float32"]
    plain, sharded = report["losses"]
    # the blocks compute with bf16 parameters (gathered in bf16) instead of autocast's bf16 casts of fp32 ones
    assert abs(plain - sharded) < 1e-2 * abs(plain)
    assert report["gradient_difference"] < 0.05
    assert report["gathered_equal"] and report["gathered_class"] == "USiTTransformer2DModel"


def test_block_modules_are_the_outermost_blocks():
    model = USiTTransformer2DModel(
        sample_size=4, in_channels=8, num_layers=4, num_attention_heads=2, attention_head_dim=8, num_classes=10
    )
    names = [name for name, _ in block_modules(model)]
    assert names == ["in_blocks.0", "in_blocks.1", "mid_block", "out_blocks.0", "out_blocks.1"]
    with pytest.raises(ValueError, match="Linear declares no _no_split_modules"):
        block_modules(torch.nn.Linear(2, 2))
