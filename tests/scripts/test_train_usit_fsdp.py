"""train_usit.py --fsdp (FSDP2, `dc_ae_hf.training.sharding`) on 2 CPU processes over gloo, with really sharded
parameters: the same weights as DDP, sharded EMAs equal to replicated ones, exact resume after a SIGKILL from the
sharded (DCP) checkpoint, resume on another number of processes, and the gathered export."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import REPO_ROOT
from helpers import (
    TRAINING,
    assert_same_weights,
    launch_two_processes,
    load_script,
    run_command,
    run_in_process,
    sigkill_when_checkpoint_appears,
    subprocess_env,
    two_process_launch,
    usit_argv,
    weights,
)

from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

# clipping, accumulation and two EMA decays (no warm-up, so the EMAs differ from the weights after 4 steps)
FLAGS = "--checkpointing_steps 2 --gradient_accumulation_steps 2 --max_grad_norm 1 --validation_steps 4".split()
FLAGS += "--ema_decay 0.9 0.99 --ema_warmup_steps 0".split()
# FSDP reduce-scatters where DDP all-reduces: the sums run in another order, so weights agree to float rounding
# (measured: 1.5e-8 largest absolute difference after 4 steps), not bit for bit.
DDP_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def workspace(usit_workspace):
    return usit_workspace


def _max_difference(a, b) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


@pytest.mark.slow
def test_fsdp_matches_ddp_resumes_exactly_after_sigkill_and_exports(workspace, tmp_path):
    ddp, straight, killed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "killed"
    launch_two_processes(TRAINING / "train_usit.py", usit_argv(workspace, ddp, "--max_train_steps", "4", *FLAGS))
    fsdp_argv = usit_argv(workspace, straight, "--max_train_steps", "4", "--fsdp", *FLAGS)
    launch_two_processes(TRAINING / "train_usit.py", fsdp_argv)

    # the checkpoint holds DCP shards (one file per process), the EMAs' counters, no gathered model
    checkpoint = straight / "checkpoint-4"
    assert sorted(p.name for p in (checkpoint / "sharded").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not (checkpoint / "transformer").exists()
    counters = json.loads((checkpoint / "transformer_ema-0.99" / "ema_state.json").read_text())
    assert (counters["decay"], counters["optimization_step"]) == (0.99, 4)
    config = json.loads((straight / "training_config.json").read_text())
    assert config["args"]["fsdp"] is True and config["accelerate"]["num_processes"] == 2

    # the same training as DDP, the sharded EMAs equal the replicated ones, to float rounding
    for folder in ("transformer", "pipeline/transformer", "transformer_ema-0.99"):
        assert _max_difference(straight / folder, ddp / folder) < DDP_TOLERANCE, folder
    assert _max_difference(straight / "transformer", straight / "pipeline" / "transformer") > 1e-4  # EMA != weights

    # SIGKILL the launcher once checkpoint-2 exists; re-running the same command ends bit-identical
    env = {**subprocess_env(), "ACCELERATE_USE_CPU": "1"}
    command = two_process_launch(
        TRAINING / "train_usit.py", *usit_argv(workspace, killed, "--max_train_steps", "4", "--fsdp", *FLAGS)
    )
    assert sigkill_when_checkpoint_appears(command, env, REPO_ROOT, killed / "checkpoint-2") == -9
    assert not (killed / "pipeline").exists()
    run_command(command, env)
    for folder in ("transformer", "pipeline/transformer", "transformer_ema-0.99"):
        assert_same_weights(straight / folder, killed / folder)

    # the gathered pipeline loads and samples like a DDP one
    pipe = DCAE15Pipeline.from_pretrained(straight / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    images = pipe([1, 7], num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_on_three_processes(workspace, tmp_path):
    """DCP reshards on load: a 2-process checkpoint resumed on 3 processes (with --resume_mismatch_ok, since the data
    order changes) holds exactly the weights and EMAs a 2-process run exports at that step."""
    two, three = tmp_path / "two", tmp_path / "three"
    launch_two_processes(
        TRAINING / "train_usit.py", usit_argv(workspace, two, "--max_train_steps", "2", "--fsdp", *FLAGS)
    )
    three.mkdir()
    for name in ("training_config.json", "checkpoint-2"):
        (shutil.copytree if name.startswith("checkpoint") else shutil.copy)(two / name, three / name)
    command = two_process_launch(
        TRAINING / "train_usit.py",
        *usit_argv(workspace, three, "--max_train_steps", "2", "--fsdp", "--resume_mismatch_ok", *FLAGS),
    )
    command[command.index("--num_processes") + 1] = "3"
    run_command(command, {**subprocess_env(), "ACCELERATE_USE_CPU": "1"})
    assert json.loads((three / "training_config-resumed-2.json").read_text())["accelerate"]["num_processes"] == 3
    for folder in ("transformer", "pipeline/transformer", "transformer_ema-0.99"):
        assert_same_weights(two / folder, three / folder)


def test_fsdp_needs_a_multi_process_launch_and_no_fp16(workspace, tmp_path):
    script = load_script("train_usit")
    with pytest.raises(ValueError, match="--fsdp shards the model itself over the processes"):
        run_in_process(script, usit_argv(workspace, tmp_path / "one", "--max_train_steps", "1", "--fsdp"))
    argv = usit_argv(workspace, tmp_path / "fp16", "--fsdp", "--mixed_precision", "fp16", "--dry_run")
    with pytest.raises(ValueError, match=r"--mixed_precision='fp16' is not allowed: --fsdp trains in bf16 or fp32"):
        script.resolve_config(script.parse_args(argv))
