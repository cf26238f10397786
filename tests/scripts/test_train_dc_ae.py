"""Tests for autoencoder training: training/train_dc_ae.py, training/evaluate_dc_ae.py and the library pieces they use
(dc_ae_hf/data/images.py, losses.py, models/discriminator.py, autoencoder_training.py, visualization.py, the
accelerate configs in training/configs/)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from conftest import REPO_ROOT, TINY_AE10_CONFIG, TINY_AE15_CONFIG
from helpers import run_in_process, sigkill_when_checkpoint_appears, two_process_launch
from PIL import Image
from safetensors.torch import load_file

from dc_ae_hf.data.images import (
    TransformedImageDataset,
    TransformedIterableImageDataset,
    center_crop_arr,
    collate_images,
    holdout_split,
    image_transform,
    load_image_dataset,
    load_train_and_validation_datasets,
)
from dc_ae_hf.data.shapes import export_imagefolder
from dc_ae_hf.metrics.image import to_uint8
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.discriminator import PatchDiscriminator
from dc_ae_hf.self_contained import is_self_contained
from dc_ae_hf.testing import write_standin_inception_weights, write_standin_lpips_backbone
from dc_ae_hf.training import run as run_module
from dc_ae_hf.training.autoencoder import (
    freeze_frozen_norm_statistics,
    phase_trainable_modules,
    phase_trainable_parameters,
    reconstruct_prefixes,
    subsample_channels,
)
from dc_ae_hf.training.losses import generator_adversarial_loss, hinge_d_loss, hinge_g_loss, reconstruction_loss
from dc_ae_hf.training.run import PREEMPTED_STATUS
from dc_ae_hf.visualization import prefix_reconstruction_grid

TRAIN_SCRIPT = REPO_ROOT / "training" / "train_dc_ae.py"
EVAL_SCRIPT = REPO_ROOT / "training" / "evaluate_dc_ae.py"

# Even smaller than TINY_AE15_CONFIG: f4, 8 latent channels, ~20k parameters; a training step takes milliseconds.
MICRO_AE_CONFIG = dict(
    TINY_AE15_CONFIG,
    latent_channels=8,
    encoder_block_out_channels=(8, 16, 16),
    decoder_block_out_channels=(8, 16, 16),
    encoder_layers_per_block=(0, 1, 1),
    decoder_layers_per_block=(0, 1, 1),
    encoder_qkv_multiscales=((), (), ()),
    decoder_qkv_multiscales=((), (), ()),
    latent_channel_choices=(2, 4, 8),
)


def _load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_script():
    return _load_script(TRAIN_SCRIPT, "train_dc_ae")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny imagefolder (16 shapes images at 40 px), the micro model config, stand-in LPIPS weights."""
    root = tmp_path_factory.mktemp("dc_ae_train")
    export_imagefolder(root / "data", num_images=16, seed=0, resolution=40)
    (root / "micro.json").write_text(json.dumps(MICRO_AE_CONFIG))
    write_standin_lpips_backbone("squeeze", root / "torch_home")
    return root


@pytest.fixture
def torch_home(workspace, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(workspace / "torch_home"))


def _base_argv(workspace: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--model_config",
        str(workspace / "micro.json"),
        "--train_data_dir",
        str(workspace / "data"),
        "--cache_dir",
        str(workspace / "hf_cache"),
        "--output_dir",
        str(output_dir),
        *"--resolution 32 --train_batch_size 2 --lpips_net squeeze --num_validation_images 4 --report_to none --disc_base_channels 8 --disc_num_layers 2".split(),
        *extra,
    ]


def _subprocess_env(workspace: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TORCH_HOME": str(workspace / "torch_home"),
        "PYTHONPATH": str(REPO_ROOT),
        "OMP_NUM_THREADS": "1",
    }


def _run(command: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=env, timeout=timeout, capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def test_center_crop_of_an_exact_size_square_is_the_identity():
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    assert np.array_equal(center_crop_arr(image, 32), pixels)
    tensor = image_transform(32)(image)  # default: ADM center crop
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    assert torch.equal(to_uint8(tensor[None])[0], torch.from_numpy(pixels).permute(2, 0, 1))


def test_center_crop_arr_follows_adm():
    # 300x200 -> halved (box) while the short side >= 64: 150x100 -> 75x50; bicubic to 48x32; central 32x32.
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    expected = image.resize((150, 100), Image.BOX).resize((75, 50), Image.BOX).resize((48, 32), Image.BICUBIC)
    assert np.array_equal(center_crop_arr(image, 32), np.asarray(expected)[:, 8:40])


def test_random_crop_and_flip_are_reproducible_per_generator():
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    transform = image_transform(32, random_crop=True, random_flip=True)
    crops = [transform(image, torch.Generator().manual_seed(seed)) for seed in range(8)]
    assert all(crop.shape == (3, 32, 32) for crop in crops)
    assert torch.equal(crops[3], transform(image, torch.Generator().manual_seed(3)))
    assert len({crop.sum().item() for crop in crops}) > 1  # different offsets / flips
    flipped = image_transform(40, center_crop=False, random_flip=True)
    square = image.crop((0, 0, 40, 40))
    outputs = [flipped(square, torch.Generator().manual_seed(seed)) for seed in range(8)]
    plain = image_transform(40, center_crop=False)(square)
    assert any(torch.equal(out, plain) for out in outputs)
    assert any(torch.equal(out, plain.flip(-1)) for out in outputs)
    with pytest.raises(ValueError, match="mutually exclusive"):
        image_transform(32, random_crop=True, center_crop=True)
    with pytest.raises(ValueError, match="--resolution"):
        image_transform(0)


def test_load_image_dataset_imagefolder_streaming_and_errors(workspace):
    kwargs = dict(train_data_dir=workspace / "data", cache_dir=workspace / "hf_cache")
    dataset = load_image_dataset(**kwargs)
    assert len(dataset) == 16 and set(dataset.column_names) == {"image", "label"}
    streamed = load_image_dataset(**kwargs, streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    assert np.array_equal(np.asarray(next(iter(streamed))["image"]), np.asarray(dataset[0]["image"]))

    transform = image_transform(32, random_crop=True, random_flip=True)
    mapped = TransformedImageDataset(dataset, transform, seed=5)
    first = mapped[3]["pixel_values"]
    _ = mapped[7]  # access order does not matter
    assert torch.equal(TransformedImageDataset(dataset, transform, seed=5)[3]["pixel_values"], first)
    mapped.set_epoch(1)
    assert not torch.equal(mapped[3]["pixel_values"], first)  # new crops every epoch
    stream = TransformedIterableImageDataset(streamed, image_transform(32))
    assert torch.equal(
        next(iter(stream))["pixel_values"], TransformedImageDataset(dataset, image_transform(32))[0]["pixel_values"]
    )

    batch = collate_images([mapped[0], mapped[1], mapped[2]])
    assert batch["pixel_values"].shape == (3, 3, 32, 32) and batch["pixel_values"].is_contiguous()
    train, held = holdout_split(dataset, 4, seed=0)
    assert len(train) == 12 and len(held) == 4
    train_pixels = {np.asarray(x["image"]).tobytes() for x in train}
    assert not any(np.asarray(x["image"]).tobytes() in train_pixels for x in held)

    with pytest.raises(ValueError, match="exactly one of --dataset_name"):
        load_image_dataset()
    with pytest.raises(ValueError, match="--train_data_dir"):
        load_image_dataset(train_data_dir=workspace / "missing")
    with pytest.raises(ValueError, match="split='validation'"):
        load_image_dataset(**kwargs, split="validation")
    with pytest.raises(ValueError, match="--num_validation_images"):
        holdout_split(dataset, 16)


def test_train_and_validation_datasets(tmp_path):
    export_imagefolder(tmp_path / "data", num_images=6, seed=0, resolution=32)
    export_imagefolder(tmp_path / "other", num_images=3, seed=1, resolution=32)
    (tmp_path / "other" / "train").rename(tmp_path / "data" / "validation")
    kwargs = dict(train_data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", resolution=32)
    train, validation = load_train_and_validation_datasets(
        **kwargs, validation_split="validation", num_validation_images=2
    )
    assert len(train) == 6 and len(validation) == 2 and train[0]["pixel_values"].shape == (3, 32, 32)
    train, validation = load_train_and_validation_datasets(**kwargs, num_validation_images=2)
    assert len(train) == 4 and len(validation) == 2
    train, validation = load_train_and_validation_datasets(**kwargs, streaming=True, num_validation_images=2)
    assert isinstance(train, TransformedIterableImageDataset) and len(list(train)) == 4 and len(list(validation)) == 2
    assert load_train_and_validation_datasets(**kwargs)[1] is None


# ---------------------------------------------------------------------------------------------------------------
# Losses, discriminator, phases, grid
# ---------------------------------------------------------------------------------------------------------------


def test_hinge_losses_on_hand_made_logits():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - real) = [0, 0.5, 2] -> mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + fake) = [0, 1, 2] -> mean 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1))
    assert hinge_g_loss(fake).item() == pytest.approx(1 / 3)  # -mean(fake)
    assert hinge_d_loss(torch.full((4,), 1.5), torch.full((4,), -1.5)).item() == 0.0  # confident and right


class _MeanSquaredPerceptual(torch.nn.Module):
    """A stand-in perceptual distance: per-image mean squared error, shape (B, 1, 1, 1) like lpips."""

    def forward(self, a, b):
        return (a - b).square().mean(dim=(1, 2, 3), keepdim=True)


def test_reconstruction_loss_averages_prefixes_with_equal_weight():
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    recons = [images + 0.1, images - 0.3, images + torch.linspace(-1, 1, 8)]
    losses = reconstruction_loss(recons, images, _MeanSquaredPerceptual(), l1_weight=2.0, lpips_weight=0.5)
    l1 = torch.stack([(r - images).abs().mean() for r in recons]).mean()
    perceptual = torch.stack([(r - images).square().mean() for r in recons]).mean()
    torch.testing.assert_close(losses["l1"], l1)
    torch.testing.assert_close(losses["lpips"], perceptual)
    torch.testing.assert_close(losses["loss"], 2.0 * l1 + 0.5 * perceptual)
    assert "lpips" not in reconstruction_loss(recons, images, None, lpips_weight=0.0)
    with pytest.raises(ValueError, match="lpips_model"):
        reconstruction_loss(recons, images, None, lpips_weight=1.0)
    with pytest.raises(ValueError, match="shape"):
        reconstruction_loss([images[:1]], images, lpips_weight=0.0)


def test_generator_adversarial_loss_leaves_discriminator_gradients_alone():
    disc = PatchDiscriminator(base_channels=8, num_layers=2)
    recon = torch.randn(2, 3, 32, 32, requires_grad=True)
    loss = generator_adversarial_loss([recon, recon * 0.5], disc)
    loss.backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.parameters())
    expected = hinge_g_loss(disc(torch.cat([recon, recon * 0.5])))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("norm_type", ["group_norm", "batch_norm", "none"])
def test_patch_discriminator_save_load_and_output_size(tmp_path, norm_type):
    disc = PatchDiscriminator(base_channels=8, num_layers=3, norm_type=norm_type).eval()
    x = torch.randn(2, 3, 48, 40)
    out = disc(x)
    assert out.shape == (2, 1, disc.output_size(48), disc.output_size(40)) == (2, 1, 4, 3)
    disc.save_pretrained(tmp_path / "disc")
    loaded = PatchDiscriminator.from_pretrained(tmp_path / "disc").eval()
    assert loaded.config.norm_type == norm_type and loaded.config.base_channels == 8
    torch.testing.assert_close(loaded(x), out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="too small"):
        disc(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="norm_type"):
        PatchDiscriminator(norm_type="layer_norm")


def test_phase_trainable_parameters_match_the_documented_sets():
    vae = AutoencoderDC15(**TINY_AE15_CONFIG)  # non-empty stages: encoder 1, 2, 3; decoder 1, 2, 3
    names = list(dict(vae.named_parameters()))
    assert list(phase_trainable_parameters(vae, 1)) == names

    phase2 = set(phase_trainable_parameters(vae, 2))
    expected2 = {
        n
        for n in names
        if n.startswith(("encoder.down_blocks.3.", "encoder.conv_out.", "decoder.conv_in.", "decoder.up_blocks.3."))
    }
    assert (
        phase2 == expected2 and "encoder.conv_out.weight" in phase2 and "decoder.up_blocks.3.0.conv1.weight" in phase2
    )
    phase2_two = set(phase_trainable_parameters(vae, 2, latent_adaptation_stages=2))
    assert phase2_two - phase2 == {
        n for n in names if n.startswith(("encoder.down_blocks.2.", "decoder.up_blocks.2."))
    }

    phase3 = set(phase_trainable_parameters(vae, 3))
    expected3 = {n for n in names if n.startswith(("decoder.up_blocks.1.", "decoder.norm_out.", "decoder.conv_out."))}
    assert phase3 == expected3 and not any(n.startswith("encoder.") for n in phase3)
    assert phase_trainable_modules(vae, 3) == ["decoder.up_blocks.1", "decoder.norm_out", "decoder.conv_out"]

    # --freeze_encoder: the decoder's share of each phase (Fig. 3 fair protocol in phase 1)
    assert set(phase_trainable_parameters(vae, 1, freeze_encoder=True)) == {
        n for n in names if n.startswith("decoder.")
    }
    assert set(phase_trainable_parameters(vae, 2, freeze_encoder=True)) == {
        n for n in phase2 if n.startswith("decoder.")
    }
    assert set(phase_trainable_parameters(vae, 3, freeze_encoder=True)) == phase3
    with pytest.raises(TypeError, match="freeze_encoder"):
        phase_trainable_parameters(vae, 1, freeze_encoder="yes")

    with pytest.raises(ValueError, match="latent_adaptation_stages=4"):
        phase_trainable_parameters(vae, 2, latent_adaptation_stages=4)
    with pytest.raises(ValueError, match="refinement_stages=0"):
        phase_trainable_parameters(vae, 3, refinement_stages=0)
    with pytest.raises(ValueError, match="phase=4"):
        phase_trainable_parameters(vae, 4)


def test_frozen_batch_norms_keep_their_statistics():
    vae = AutoencoderDC15(**TINY_AE10_CONFIG).train()  # DC-AE 1.0 decoder: batch norms in the outer stages
    vae.requires_grad_(False)
    for parameter in phase_trainable_parameters(vae, 3).values():
        parameter.requires_grad_(True)
    freeze_frozen_norm_statistics(vae)
    norms = [m for m in vae.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.training == any(p.requires_grad for p in m.parameters()) for m in norms)


def test_reconstruct_prefixes_encodes_once_and_matches_forward():
    vae = AutoencoderDC15(**MICRO_AE_CONFIG).eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    calls = []
    vae.encoder.register_forward_hook(lambda *_: calls.append(1))
    recons = reconstruct_prefixes(vae, images, [8, 2, 2])
    assert len(calls) == 1 and len(recons) == 3
    torch.testing.assert_close(recons[0], vae(images).sample)
    torch.testing.assert_close(recons[1], vae(images, latent_channels=2).sample)
    assert torch.equal(recons[1], recons[2])
    assert subsample_channels(list(range(16, 129, 4)), 8) == [16, 32, 48, 64, 80, 96, 112, 128]
    assert subsample_channels([4, 8], 8) == [4, 8]


def test_prefix_reconstruction_grid_layout():
    vae = AutoencoderDC15(**MICRO_AE_CONFIG).train()
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    grid = prefix_reconstruction_grid(vae, images, [8, 2, 4], padding=2)
    assert vae.training  # mode restored
    assert isinstance(grid, Image.Image) and grid.mode == "RGB"
    assert grid.size == (4 * (16 + 2) + 2, 3 * (16 + 2) + 2)  # 1 + 3 columns, 3 rows
    cells = np.asarray(grid)
    vae.eval()
    for row in range(3):
        top = 2 + row * 18
        original = to_uint8(images[row : row + 1])[0].permute(1, 2, 0).numpy()
        assert np.array_equal(cells[top : top + 16, 2:18], original)
        for column, c in enumerate([2, 4, 8], start=1):
            left = 2 + column * 18
            with torch.no_grad():
                expected = to_uint8(vae(images[row : row + 1], latent_channels=c).sample)[0].permute(1, 2, 0)
            assert np.array_equal(cells[top : top + 16, left : left + 16], expected.numpy())


# ---------------------------------------------------------------------------------------------------------------
# The training script: configuration
# ---------------------------------------------------------------------------------------------------------------


def test_dry_run_prints_the_resolved_configuration(train_script, workspace, tmp_path, capsys, torch_home):
    AutoencoderDC15(**MICRO_AE_CONFIG).save_pretrained(tmp_path / "phase1_vae")  # phase 3 needs trained weights
    argv = _base_argv(workspace, tmp_path / "out", "--phase", "3", "--dry_run")
    i = argv.index("--model_config")
    argv[i : i + 2] = ["--pretrained_model_name_or_path", str(tmp_path / "phase1_vae")]
    config = train_script.main(train_script.parse_args(argv))
    printed = json.loads(capsys.readouterr().out)
    assert printed["latent_channel_choices"] == [2, 4, 8] == config["latent_channel_choices"]
    assert printed["loss_weights"] == {"l1": 1.0, "lpips": 1.0, "gan": train_script.DEFAULT_PHASE3_GAN_WEIGHT}
    assert printed["trainable_modules"] == ["decoder.up_blocks.1", "decoder.norm_out", "decoder.conv_out"]
    assert printed["validation_channels"] == [2, 4, 8]
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--latent_channel_choices", "4", "16"],
            r"--latent_channel_choices=\[4, 16\] has values \[16\] outside 1..8",
        ),
        (["--model_config", "dc-ae-9.9-f1c1"], r"--model_config='dc-ae-9.9-f1c1' .*preset"),
        (["--resolution", "30"], r"--resolution=30 .*divisible by the model's spatial compression ratio 4"),
        (["--train_data_dir", "/nonexistent/images"], r"--train_data_dir='/nonexistent/images' .*existing"),
        (["--validation_channels", "9"], r"--validation_channels=\[9\]"),
        (["--phase", "2", "--latent_adaptation_stages", "3"], r"--latent_adaptation_stages=3 .*1..2"),
        (["--checkpoints_total_limit", "0"], r"--checkpoints_total_limit=0"),
        (["--gan_weight", "0.1", "--disc_num_layers", "4"], r"--disc_num_layers=4 .*too deep"),
    ],
)
def test_bad_configuration_fails_before_training(train_script, workspace, tmp_path, extra, message):
    args = train_script.parse_args(_base_argv(workspace, tmp_path / "out") + extra)
    with pytest.raises(ValueError, match=message):
        train_script.main(args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("phase", ["2", "3"])
def test_a_partial_phase_refuses_random_weights(train_script, workspace, tmp_path, capsys, phase):
    """--phase 2/3 train a few stages and freeze the rest: from --model_config (random weights) one line, exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        train_script.run_script(
            train_script.main, train_script.parse_args, _base_argv(workspace, tmp_path / "out", "--phase", phase)
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --phase={phase} is not allowed: phase {phase} ("), err
    assert "needs trained weights: give --pretrained_model_name_or_path" in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_tracker_package_fails_early(train_script, workspace, tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    args = train_script.parse_args(_base_argv(workspace, tmp_path / "out") + ["--report_to", "wandb"])
    with pytest.raises(ValueError, match="--report_to='wandb' .*not installed"):
        train_script.main(args)


def test_missing_data_and_bad_phase_fail_early(train_script, workspace, tmp_path, capsys):
    argv = _base_argv(workspace, tmp_path / "out")
    i = argv.index("--train_data_dir")
    without_data = argv[:i] + argv[i + 2 :]
    with pytest.raises(ValueError, match="missing or ambiguous data: give exactly one of --dataset_name"):
        train_script.main(train_script.parse_args(without_data))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="contains no images"):
        train_script.main(train_script.parse_args(argv + ["--train_data_dir", str(empty)]))
    with pytest.raises(SystemExit):
        train_script.parse_args(argv + ["--phase", "4"])
    assert "argument --phase: invalid choice: 4" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# The training script: runs
# ---------------------------------------------------------------------------------------------------------------

_SYNC_CHECK = """
import importlib.util, json, sys
from accelerate import Accelerator
from accelerate.utils import gather_object

spec = importlib.util.spec_from_file_location("train_dc_ae", sys.argv[1])
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
end_training = Accelerator.end_training


def checked_end_training(self):  # every process reports a checksum of each model's weights
    sums = [float(sum(p.double().sum() for p in self.unwrap_model(m).parameters())) for m in self._models]
    sums = gather_object([sums])
    if self.is_main_process:
        print("WEIGHT_SUMS " + json.dumps(sums))
    end_training(self)


Accelerator.end_training = checked_end_training
script.main(script.parse_args(sys.argv[2:]))
"""


@pytest.mark.slow
def test_ddp_two_processes_with_lpips_and_gan(workspace, tmp_path):
    """accelerate launch, 2 CPU processes (gloo): LPIPS + GAN + EMA, checkpoints pruned, outputs load."""
    wrapper = tmp_path / "sync_check.py"
    wrapper.write_text(_SYNC_CHECK)
    output_dir = tmp_path / "ddp"
    argv = _base_argv(
        workspace,
        output_dir,
        *"--max_train_steps 4 --checkpointing_steps 1 --checkpoints_total_limit 2 --validation_steps 2 --gan_weight 0.5 --use_ema --num_channel_samples 2 --random_crop --random_flip --report_to tensorboard".split(),
    )
    env = {**_subprocess_env(workspace), "ACCELERATE_USE_CPU": "1"}
    result = _run(two_process_launch(wrapper, TRAIN_SCRIPT, *argv), env)

    # Both processes end with the same weights: the gradients were all-reduced (each rank drew its own c').
    sums = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("WEIGHT_SUMS"))[12:])
    assert len(sums) == 2 and sums[0] == sums[1]
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    checkpoint = output_dir / "checkpoint-4"
    for name in ("vae", "vae_ema", "discriminator"):
        assert (checkpoint / name / "config.json").is_file()
    assert not list(checkpoint.glob("latent_channel_sampler*"))  # c' is drawn from (seed, rank, step): no state
    vae = AutoencoderDC15.from_pretrained(output_dir / "vae")
    assert vae.latent_channel_choices == (2, 4, 8)
    AutoencoderDC15.from_pretrained(output_dir / "vae_ema")
    PatchDiscriminator.from_pretrained(output_dir / "discriminator")
    assert "## Evaluation" in (output_dir / "vae_ema" / "README.md").read_text()
    assert set(json.loads((output_dir / "validation_results.json").read_text())) == {"2", "4", "8"}
    assert (output_dir / "validation" / "prefix_grid-4.png").is_file()
    assert list((output_dir / "logs").rglob("events.out.tfevents.*"))
    config = json.loads((output_dir / "training_config.json").read_text())
    assert config["args"]["max_train_steps"] == 4 and config["trainable_modules"] == [""]


def test_resume_gives_identical_weights(train_script, workspace, tmp_path, torch_home):
    """4 steps straight == 2 steps, stop, re-run to 4 (GAN from step 1, EMA, accumulation, random crops/flips)."""
    extra = [
        *"--checkpointing_steps 2 --validation_steps 1 --gan_weight 0.5 --disc_start_step 1 --use_ema --num_channel_samples 2 --gradient_accumulation_steps 2 --random_crop --random_flip --lr_scheduler constant_with_warmup --lr_warmup_steps 2".split(),
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_in_process(train_script, _base_argv(workspace, straight, "--max_train_steps", "4", *extra))
    run_in_process(train_script, _base_argv(workspace, resumed, "--max_train_steps", "2", *extra))
    assert (resumed / "checkpoint-2").is_dir() and not (resumed / "checkpoint-4").exists()
    halfway = _weights(resumed / "vae")
    config = run_in_process(train_script, _base_argv(workspace, resumed, "--max_train_steps", "4", *extra))
    assert config["resume_from"] == str(resumed / "checkpoint-2")
    for folder in ("vae", "vae_ema", "discriminator"):
        a, b = _weights(straight / folder), _weights(resumed / folder)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{folder}/{key}")
    assert any(not torch.equal(halfway[k], _weights(resumed / "vae")[k]) for k in halfway)  # it did train on


def test_images_smaller_than_the_resolution_are_counted_once(train_script, workspace, tmp_path, torch_home, caplog):
    """The 40 px images at --resolution 48 are all upsampled by the ADM crop: said once, over the first pass (12
    training images, 6 batches of 2: the 7th step starts the second pass); at 32 px none is."""
    caplog.set_level(logging.INFO, logger="dc_ae_hf.training.run")
    argv = _base_argv(workspace, tmp_path / "big", "--max_train_steps", "7", "--checkpointing_steps", "100")
    argv[argv.index("--resolution") + 1] = "48"
    run_in_process(train_script, argv)
    said = [r.getMessage() for r in caplog.records if "upsampled by the ADM center crop" in r.getMessage()]
    assert said == [
        "12 of 12 training images (100.0%) in the first pass over the training data were smaller than the "
        "resolution and were upsampled by the ADM center crop"
    ]
    caplog.clear()
    run_in_process(train_script, _base_argv(workspace, tmp_path / "short", "--max_train_steps", "2"))
    said = [r.getMessage() for r in caplog.records if "upsampled by the ADM center crop" in r.getMessage()]
    assert said == [  # a run shorter than one pass says what it saw
        "0 of 4 training images (0.0%) in the part of the first pass over the training data that the run saw were "
        "smaller than the resolution and were upsampled by the ADM center crop"
    ]


def test_phase3_step_changes_only_the_decoder_head(train_script, workspace, tmp_path, torch_home):
    pretrained = tmp_path / "pretrained"
    torch.manual_seed(1)
    AutoencoderDC15(**{**MICRO_AE_CONFIG, "latent_channel_choices": None}).save_pretrained(pretrained)  # unstructured
    argv = _base_argv(
        workspace,
        tmp_path / "phase3",
        *"--phase 3 --max_train_steps 1 --num_validation_images 0 --learning_rate 1e-2 --mixed_precision bf16 --latent_channel_choices 4 8".split(),
    )
    i = argv.index("--model_config")
    argv = argv[:i] + ["--pretrained_model_name_or_path", str(pretrained)] + argv[i + 2 :]
    config = run_in_process(train_script, argv)
    assert config["loss_weights"]["gan"] > 0 and (tmp_path / "phase3" / "discriminator").is_dir()
    # fine-tuning with --latent_channel_choices gives the model its structure
    assert AutoencoderDC15.from_pretrained(tmp_path / "phase3" / "vae").latent_channel_choices == (4, 8)
    before, after = _weights(pretrained), _weights(tmp_path / "phase3" / "vae")
    head = set(phase_trainable_parameters(AutoencoderDC15(**MICRO_AE_CONFIG), 3))
    assert head == {
        k for k in before if k.startswith(("decoder.up_blocks.1.", "decoder.norm_out.", "decoder.conv_out."))
    }
    for key in before:
        if key in head:
            assert not torch.equal(before[key], after[key]), key
        else:
            assert torch.equal(before[key], after[key]), key


def test_freeze_encoder_fine_tunes_only_the_decoder_at_one_prefix(train_script, workspace, tmp_path, torch_home):
    """Paper Fig. 3 fair protocol: a plain AE's decoder fine-tuned for c' channels, its latent space unchanged."""
    pretrained = tmp_path / "pretrained"
    torch.manual_seed(2)
    AutoencoderDC15(**{**MICRO_AE_CONFIG, "latent_channel_choices": None}).save_pretrained(pretrained)
    argv = _base_argv(
        workspace,
        tmp_path / "decoder_only",
        *"--freeze_encoder --max_train_steps 1 --num_validation_images 0 --learning_rate 1e-2 --latent_channel_choices 4".split(),
    )
    i = argv.index("--model_config")
    argv = argv[:i] + ["--pretrained_model_name_or_path", str(pretrained)] + argv[i + 2 :]
    config = run_in_process(train_script, argv)
    assert config["trainable_modules"] == ["decoder"]
    before, after = _weights(pretrained), _weights(tmp_path / "decoder_only" / "vae")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))


def test_streaming_dataset_trains_and_pushes(train_script, workspace, tmp_path, torch_home, monkeypatch):
    pushed = []
    monkeypatch.setattr(run_module, "push_folder_to_hub", lambda folder, repo_id: pushed.append((folder, repo_id)))
    argv = _base_argv(
        workspace,
        tmp_path / "stream",
        *"--streaming --max_train_steps 3 --random_crop --num_validation_images 2 --checkpointing_steps 2 --gradient_checkpointing --push_to_hub --hub_model_id someone/tiny-dc-ae".split(),
    )
    run_in_process(train_script, argv)
    assert pushed == [(tmp_path / "stream" / "vae", "someone/tiny-dc-ae")]
    assert (
        'AutoencoderDC15.from_pretrained("someone/tiny-dc-ae")'
        in (tmp_path / "stream" / "vae" / "README.md").read_text()
    )
    meta = json.loads((tmp_path / "stream" / "checkpoint-3" / "training_state.json").read_text())
    assert meta == {"step": 3, "epoch": 0, "batch_in_epoch": 3}
    assert set(json.loads((tmp_path / "stream" / "validation_results.json").read_text())) == {"2", "4", "8"}


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_finished_checkpoint(workspace, tmp_path):
    output_dir = tmp_path / "killed"
    argv = _base_argv(
        workspace,
        output_dir,
        *"--max_train_steps 30 --checkpointing_steps 1 --checkpoints_total_limit 3 --num_validation_images 0 --lpips_weight 0".split(),
    )
    command = [sys.executable, str(TRAIN_SCRIPT)] + argv
    env = _subprocess_env(workspace)
    assert sigkill_when_checkpoint_appears(command, env, REPO_ROOT, output_dir / "checkpoint-2") == -signal.SIGKILL
    assert not (output_dir / "vae").exists()  # it did not finish
    # A save interrupted mid-write leaves a .tmp folder; it must never be picked.
    partial = output_dir / "checkpoint-999.tmp"
    partial.mkdir()
    (partial / "training_state.json").write_text(json.dumps({"step": 999}))
    finished = sorted(int(p.name.split("-")[1]) for p in output_dir.glob("checkpoint-*") if p.suffix != ".tmp")
    result = _run(command, env)
    assert f"Resumed from checkpoint-{finished[-1]}" in result.stdout
    assert AutoencoderDC15.from_pretrained(output_dir / "vae").latent_channel_choices == (2, 4, 8)
    assert json.loads((output_dir / "checkpoint-30" / "training_state.json").read_text())["step"] == 30
    assert len(list(output_dir.glob("checkpoint-[0-9]*[0-9]"))) == 3


@pytest.mark.slow
def test_fsdp_matches_ddp_resumes_exactly_after_sigkill_and_fine_tunes_phase_2(workspace, tmp_path):
    """--fsdp (FSDP2, units: the blocks, encoder and decoder) on 2 gloo processes with really sharded parameters:
    phase 1 with two sharded EMAs, accumulation and clipping gives DDP's weights and EMAs to float rounding
    (measured 2.6e-8; the reduce-scatter sums in another order); a SIGKILL after checkpoint-2 and the same command
    again end bit-identical to the straight run; phase 2 (frozen and trainable parameters in the same units)
    trains only its parameters."""
    flags = "--max_train_steps 4 --checkpointing_steps 2 --validation_steps 2 --use_ema --ema_decay 0.9 0.99"
    flags = (flags + " --num_channel_samples 2 --gradient_accumulation_steps 2 --max_grad_norm 1").split()
    env = {**_subprocess_env(workspace), "ACCELERATE_USE_CPU": "1"}
    ddp, fsdp, killed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "killed"
    _run(two_process_launch(TRAIN_SCRIPT, *_base_argv(workspace, ddp, *flags)), env)
    _run(two_process_launch(TRAIN_SCRIPT, *_base_argv(workspace, fsdp, "--fsdp", *flags)), env)
    assert sorted(p.name for p in (fsdp / "checkpoint-4" / "sharded").iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    for folder in ("vae", "vae_ema", "vae_ema-0.99"):
        a, b = _weights(fsdp / folder), _weights(ddp / folder)
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6, folder
    assert set(json.loads((fsdp / "validation_results.json").read_text())) == {"2", "4", "8"}

    command = two_process_launch(TRAIN_SCRIPT, *_base_argv(workspace, killed, "--fsdp", *flags))
    assert sigkill_when_checkpoint_appears(command, env, REPO_ROOT, killed / "checkpoint-2") == -signal.SIGKILL
    _run(command, env)
    for folder in ("vae", "vae_ema", "vae_ema-0.99"):
        a, b = _weights(fsdp / folder), _weights(killed / folder)
        assert all(torch.equal(a[k], b[k]) for k in a), folder

    phase2 = _base_argv(workspace, tmp_path / "phase2", "--fsdp", "--phase", "2", "--max_train_steps", "2")
    i = phase2.index("--model_config")
    phase2[i : i + 2] = ["--pretrained_model_name_or_path", str(fsdp / "vae")]
    _run(two_process_launch(TRAIN_SCRIPT, *phase2), env)
    before, after = _weights(fsdp / "vae"), _weights(tmp_path / "phase2" / "vae")
    trainable = phase_trainable_parameters(AutoencoderDC15.from_pretrained(fsdp / "vae"), 2)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in trainable)
    assert any(not torch.equal(before[k], after[k]) for k in trainable)


def test_fsdp_refuses_the_gan(train_script, workspace, tmp_path, torch_home):
    argv = _base_argv(workspace, tmp_path / "gan", "--fsdp", "--gan_weight", "0.5", "--max_train_steps", "1")
    with pytest.raises(ValueError, match=r"--gan_weight=0.5 is not allowed: the GAN loss \(phase 3\) needs DDP"):
        train_script.resolve_config(train_script.parse_args(argv))
    argv = _base_argv(workspace, tmp_path / "phase3", "--fsdp", "--phase", "3", "--max_train_steps", "1")
    with pytest.raises(ValueError, match=r"--gan_weight=0.1 is not allowed"):  # phase 3's default GAN weight
        train_script.resolve_config(train_script.parse_args(argv))


def test_reconstruct_prefixes_decode_repeats_gives_the_same_reconstructions():
    torch.manual_seed(0)
    vae = AutoencoderDC15(**MICRO_AE_CONFIG).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        once = reconstruct_prefixes(vae, images, [4, 8, 4, 2])
        repeated = reconstruct_prefixes(vae, images, [4, 8, 4, 2], decode_repeats=True)
    assert len(repeated) == 4 and all(torch.equal(a, b) for a, b in zip(once, repeated, strict=True))


# ---------------------------------------------------------------------------------------------------------------
# Evaluation script and accelerate configs
# ---------------------------------------------------------------------------------------------------------------


def test_evaluate_script_writes_json_and_markdown(workspace, tmp_path, torch_home, capsys):
    evaluate = _load_script(EVAL_SCRIPT, "evaluate_dc_ae")
    model_dir = tmp_path / "model"
    AutoencoderDC15(**MICRO_AE_CONFIG).save_pretrained(model_dir / "vae")
    argv = [
        "--pretrained_model_name_or_path",
        str(model_dir),
        "--subfolder",
        "vae",
        "--data_dir",
        str(workspace / "data"),
        "--split",
        "train",
        "--cache_dir",
        str(workspace / "hf_cache"),
        *"--resolution 32 --num_images 6 --batch_size 4 --lpips_net squeeze --output_json".split(),
        str(tmp_path / "eval.json"),
        "--output_markdown",
        str(tmp_path / "eval.md"),
    ]
    report = evaluate.main(evaluate.parse_args(argv))
    assert report["num_images"] == 6 and set(report["results"]) == {"2", "4", "8"}
    assert json.loads((tmp_path / "eval.json").read_text())["results"] == report["results"]
    assert set(report["results"]["8"]) == {"psnr", "ssim", "lpips"}
    table = (tmp_path / "eval.md").read_text()
    assert table.startswith("| c' | PSNR | SSIM | LPIPS |") and table.strip() in capsys.readouterr().out
    # rFID (torch-fidelity, stand-in Inception weights) for one prefix
    inception = write_standin_inception_weights(tmp_path / "inception.pth")
    rfid = evaluate.main(evaluate.parse_args(argv + ["--latent_channels", "8", "--inception_weights_path", inception]))
    assert set(rfid["results"]) == {"8"} and rfid["results"]["8"]["rfid"] > 0 and rfid["rfid"]
    with pytest.raises(ValueError, match="--latent_channels"):
        evaluate.main(evaluate.parse_args(argv + ["--latent_channels", "9"]))
    with pytest.raises(ValueError, match="--resolution=30"):
        evaluate.main(evaluate.parse_args(argv + ["--resolution", "30"]))


@pytest.mark.parametrize(
    ("name", "distributed_type", "num_machines"),
    [("ddp", "MULTI_GPU", 1), ("fsdp", "FSDP", 1), ("deepspeed_zero2", "DEEPSPEED", 1), ("multinode_fsdp", "FSDP", 2)],
)
def test_accelerate_configs_are_valid(name, distributed_type, num_machines):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    path = REPO_ROOT / "training" / "configs" / f"{name}.yaml"
    config = load_config_from_file(str(path))  # raises on unknown keys
    assert config.distributed_type.value == distributed_type and config.num_machines == num_machines
    assert config.mixed_precision == "bf16"
    # The documented multi-node command line; rank 1 does not probe the rendezvous port (which may be taken here).
    node = (
        ["--machine_rank", "1", "--main_process_ip", "10.0.0.7"] if num_machines > 1 else ["--main_process_port", "0"]
    )
    args = launch_command_parser().parse_args(["--config_file", str(path), *node, str(TRAIN_SCRIPT)])
    args, _, _ = _validate_launch_command(args)
    if distributed_type == "FSDP":
        env = prepare_multi_gpu_env(args)
        assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "Encoder,Decoder" and env["FSDP_USE_ORIG_PARAMS"] == "true"
        assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
        vae = AutoencoderDC15(**MICRO_AE_CONFIG)  # the wrapped classes exist in the model
        assert {type(vae.encoder).__name__, type(vae.decoder).__name__} == {"Encoder", "Decoder"}
    if distributed_type == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 2
    if num_machines > 1:
        assert config.main_process_port == 29500 and args.num_processes == 16
        assert args.machine_rank == 1 and args.main_process_ip == "10.0.0.7"


def test_several_ema_decays_are_saved_and_the_first_is_pushed(train_script, workspace, tmp_path, torch_home):
    argv = _base_argv(workspace, tmp_path / "run", "--max_train_steps", "2", "--num_validation_images", "0")
    config = run_in_process(train_script, [*argv, "--use_ema", "--ema_decay", "0.1", "0.15", "--self_contained"])
    assert config["args"]["ema_decays"] == [0.1, 0.15]
    run = tmp_path / "run"
    for folder in (run, run / "checkpoint-2"):
        assert {"vae_ema", "vae_ema-0.15"} <= {p.name for p in folder.iterdir()}
    first, second = _weights(run / "vae_ema"), _weights(run / "vae_ema-0.15")
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert AutoencoderDC15.from_pretrained(run / "vae_ema-0.15").latent_channel_choices == (2, 4, 8)
    assert "(0.15 EMA weights)" in (run / "vae_ema-0.15" / "README.md").read_text()
    # --self_contained: the exported autoencoders carry their code (the checkpoints do not)
    assert all(is_self_contained(run / name) for name in ("vae", "vae_ema", "vae_ema-0.15"))
    assert not is_self_contained(run / "checkpoint-2" / "vae_ema")


def test_ctrl_c_checkpoints_the_step_and_the_same_command_resumes_exactly(
    train_script, workspace, tmp_path, torch_home
):
    """SIGINT mid-run (GAN, EMA): the step in progress is finished and checkpointed, exit status 75; the same command
    then ends with the weights of an uninterrupted run (the preemption guarantee of the shared run skeleton)."""
    extra = "--max_train_steps 10 --checkpointing_steps 3 --validation_steps 100 --gan_weight 0.5 --disc_start_step 1 --use_ema --random_crop".split()
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    pid = os.getpid()

    def interrupt():
        while not (stopped / "checkpoint-3").is_dir():
            time.sleep(0.002)
        os.kill(pid, signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(train_script, _base_argv(workspace, stopped, *extra))
    thread.join()
    assert exit_info.value.code == PREEMPTED_STATUS
    step = max(int(p.name.split("-")[1]) for p in stopped.glob("checkpoint-*"))
    assert 3 < step < 10 and step % 3 != 0 and not (stopped / "vae").exists()
    assert run_in_process(train_script, _base_argv(workspace, stopped, *extra))["resume_from"].endswith(f"-{step}")
    run_in_process(train_script, _base_argv(workspace, straight, *extra))
    for folder in ("vae", "vae_ema", "discriminator"):
        a, b = _weights(straight / folder), _weights(stopped / folder)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
