"""Helpers shared by the tests: the official USiT fixture model (built here only), running a training script
in-process or on 2 CPU processes, killing one mid-run, and the tiny USiT workspace (images, autoencoder, latent cache)
of the USiT trainer tests."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from accelerate.state import AcceleratorState, GradientState
from conftest import REPO_ROOT, TINY_AE15_CONFIG, fixture_path
from safetensors.torch import load_file

from dc_ae_hf.convert import convert_usit_state_dict, infer_usit_config
from dc_ae_hf.data.shapes import export_imagefolder
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel


def run_in_process(script, argv: list[str]):
    """`script.main(script.parse_args(argv))` in this process, with accelerate's singletons reset before and after."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    try:
        return script.main(script.parse_args(argv))
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def sigkill_when_checkpoint_appears(command: list[str], env: dict, cwd: Path, checkpoint: Path, timeout=180) -> int:
    """Start `command`, SIGKILL it as soon as the folder `checkpoint` exists, return its exit code."""
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not checkpoint.is_dir():
            if process.poll() is not None:
                raise AssertionError(f"the run ended before {checkpoint.name} appeared")
            if time.monotonic() > deadline:
                raise AssertionError(f"{checkpoint.name} did not appear within {timeout} s")
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    return process.returncode


def two_process_launch(*script_and_args, quiet: bool = False) -> list[str]:
    """`accelerate launch` of a script with 2 processes (DDP over gloo; run it with ``ACCELERATE_USE_CPU=1``)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", *(["--quiet"] if quiet else []), "--multi_gpu"]
    launch += (
        "--num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no --main_process_port 0".split()
    )
    return launch + [str(item) for item in script_and_args]


def official_usit() -> USiTTransformer2DModel:
    """The official code's tiny USiT `usit_a` (tests/fixtures/reference) with its weights, in eval mode."""
    original = load_file(fixture_path("usit_a.original.safetensors"))
    model = USiTTransformer2DModel(**infer_usit_config(original, num_attention_heads=4)).eval()
    model.load_state_dict(convert_usit_state_dict(original, model=model), strict=True)
    return model


TRAINING = REPO_ROOT / "training"
TINY_USIT = dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, mlp_ratio=4.0, class_dropout_prob=0.1)


def load_script(name: str):
    """Import `training/<name>.py` as a module."""
    spec = importlib.util.spec_from_file_location(name, TRAINING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def run_command(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, env=env or subprocess_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def launch_two_processes(script: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """`accelerate launch` with 2 CPU processes (DDP over gloo)."""
    command = two_process_launch(script, *argv)
    return run_command(command, {**subprocess_env(), "ACCELERATE_USE_CPU": "1"})


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{key} differs between {a} and {b}"


def make_usit_workspace(root: Path) -> Path:
    """32 shapes images (32 px, 10 classes), a tiny AE (4x4x16 latents, prefixes 4/8/12/16), a tiny USiT config and
    the latent cache, made by `cache_latents.py` over 2 processes."""
    export_imagefolder(root / "data", num_images=32, seed=0, resolution=32)
    torch.manual_seed(0)
    AutoencoderDC15(**TINY_AE15_CONFIG).save_pretrained(root / "vae")
    (root / "usit.json").write_text(json.dumps(TINY_USIT))
    launch_two_processes(
        TRAINING / "cache_latents.py",
        [
            "--vae",
            str(root / "vae"),
            "--train_data_dir",
            str(root / "data"),
            "--cache_dir",
            str(root / "hf_cache"),
            "--output_dir",
            str(root / "cache"),
            *"--resolution 32 --shard_size 8 --batch_size 8".split(),
        ],
    )
    return root


def usit_argv(workspace: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--latent_cache_dir",
        str(workspace / "cache"),
        "--model_config",
        str(workspace / "usit.json"),
        "--output_dir",
        str(output_dir),
        *"--train_batch_size 4 --lr_warmup_steps 2 --learning_rate 1e-3 --report_to none --validation_num_inference_steps 2".split(),
        *extra,
    ]
