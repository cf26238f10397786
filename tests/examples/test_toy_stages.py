"""The toy recipe's settings and stages (examples/toy/toy_settings.py, toy_stages.py) without running a trainer:
mode checks, the trainer command lines, the configs, the data and the measured scaling factor."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch
from conftest import REPO_ROOT

from dc_ae_hf.latents import compute_scaling_factor
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from examples.toy import toy_stages
from examples.toy.toy_scheduler import check_jobs
from examples.toy.toy_settings import (
    CHANNEL_CHOICES,
    MODES,
    RUNS,
    TRAINING,
    ModeSettings,
    passes_per_step,
    run_autoencoder,
    usit_run_dir,
)


def _values(command: list[str], flag: str) -> list[str] | None:
    """The words after `flag` up to the next flag ([] for a bare flag), None when the flag is absent."""
    if flag not in command:
        return None
    start = command.index(flag) + 1
    end = next((i for i in range(start, len(command)) if command[i].startswith("--")), len(command))
    return command[start:end]


def test_modes_are_valid_and_bad_settings_are_refused():
    assert sorted(MODES) == ["full", "quick", "smoke"]
    assert MODES["full"].seeds == (0, 1) and MODES["smoke"].finetune_channels == (8,)
    smoke = MODES["smoke"]
    bad = [  # the messages name the field and its value (wording: dc_ae_hf/checks.py)
        ({"usit_checkpoints": 5}, ValueError, r"usit_checkpoints=5 .*1\.\.4"),
        ({"finetune_channels": (8, 40)}, ValueError, r"finetune_channels=.*40.*1\.\.32"),
        ({"seeds": ()}, ValueError, r"seeds=\(\) .*non-empty"),
        ({"seeds": (0, -1)}, ValueError, r"seeds=-1 .*>= 0"),
        ({"ae_steps": 1.5}, TypeError, r"ae_steps=1\.5 .*int"),
        ({"num_heldout_images": 5}, ValueError, r"num_heldout_images=5 .*>= 10"),
        ({"usit_learning_rate": 0.0}, ValueError, r"usit_learning_rate=0\.0 .*> 0"),
    ]
    for change, kind, message in bad:
        with pytest.raises(kind, match=message):
            dataclasses.replace(smoke, **change)
    assert isinstance(dataclasses.replace(smoke, usit_checkpoints=4), ModeSettings)


def test_runs_their_autoencoders_and_folders(tmp_path):
    assert [run_autoencoder(run) for run in RUNS] == ["ae_struct", "ae_struct", "ae_plain"]
    assert [passes_per_step(run) for run in RUNS] == [2, 1, 1]
    assert usit_run_dir(tmp_path, "struct_aug", 1) == tmp_path / "usit" / "struct_aug_seed1"
    with pytest.raises(ValueError, match=r"run='plain_aug' is not allowed: choose one of \['struct_aug'"):
        run_autoencoder("plain_aug")


def test_trainer_command_turns_options_into_flags(tmp_path):
    command = toy_stages.trainer_command(
        "train_dc_ae.py",
        {"--output_dir": tmp_path, "--use_ema": True, "--latent_channel_choices": [4, 8], "--lr": 1e-3},
    )
    assert command == [
        sys.executable,
        str(TRAINING / "train_dc_ae.py"),
        "--output_dir",
        str(tmp_path),
        "--use_ema",
        "--latent_channel_choices",
        "4",
        "8",
        "--lr",
        "0.001",
    ]
    with pytest.raises(ValueError, match="starting with '--', got 'seed'"):
        toy_stages.trainer_command("train_dc_ae.py", {"seed": 0})
    with pytest.raises(TypeError, match="--use_ema=False: give True for a bare flag"):
        toy_stages.trainer_command("train_dc_ae.py", {"--use_ema": False})


def test_autoencoder_and_finetune_jobs(tmp_path):
    smoke = MODES["smoke"]
    struct, plain = toy_stages.autoencoder_jobs(tmp_path, smoke)
    assert (struct.name, plain.name, struct.stage) == ("ae_struct", "ae_plain", "autoencoders")
    assert struct.done_marker == tmp_path / "ae_struct" / "vae_ema" / "config.json"
    assert struct.command[1] == str(TRAINING / "train_dc_ae.py")
    assert _values(struct.command, "--latent_channel_choices") == [str(c) for c in CHANNEL_CHOICES]
    assert _values(plain.command, "--latent_channel_choices") == ["32"]
    for job in (struct, plain):  # same data, steps, seed and loss for both
        assert _values(job.command, "--model_config") == [str(tmp_path / "configs" / f"{job.name}.json")]
        assert _values(job.command, "--train_data_dir") == [str(tmp_path / "data" / "train")]
        assert _values(job.command, "--max_train_steps") == ["3"]
        assert _values(job.command, "--lpips_weight") == ["0"] and _values(job.command, "--l1_weight") == ["1"]
        assert _values(job.command, "--use_ema") == [] and _values(job.command, "--seed") == ["0"]
        assert _values(job.command, "--checkpointing_steps") == ["1"]  # 3 steps // 3

    (finetune,) = toy_stages.finetune_jobs(tmp_path, smoke)
    assert finetune.name == "ae_plain_ft_c8" and finetune.stage == "plain fine-tunes (Fig. 3 protocol)"
    assert _values(finetune.command, "--pretrained_model_name_or_path") == [str(tmp_path / "ae_plain" / "vae_ema")]
    assert _values(finetune.command, "--latent_channel_choices") == ["8"]
    assert _values(finetune.command, "--freeze_encoder") == []  # the decoder alone adapts
    assert _values(finetune.command, "--learning_rate") == ["0.0005"]
    assert _values(finetune.command, "--max_train_steps") == ["2"]
    assert [job.name for job in toy_stages.finetune_jobs(tmp_path, MODES["full"])] == [
        f"ae_plain_ft_c{c}" for c in (4, 8, 16, 24)
    ]


def test_cache_and_diffusion_jobs(tmp_path):
    full = MODES["full"]
    caches = toy_stages.cache_jobs(tmp_path)
    assert [job.name for job in caches] == ["cache_ae_struct", "cache_ae_plain"]
    assert _values(caches[0].command, "--vae") == [str(tmp_path / "ae_struct" / "vae_diffusion")]
    assert caches[1].done_marker == tmp_path / "latents_ae_plain" / "metadata.json"

    runs = toy_stages.usit_jobs(tmp_path, full)
    assert [job.name for job in runs] == [  # the expensive runs first, seeds in order
        "usit_struct_aug_seed0",
        "usit_struct_aug_seed1",
        "usit_struct_plain_seed0",
        "usit_plain_plain_seed0",
        "usit_struct_plain_seed1",
        "usit_plain_plain_seed1",
    ]
    for job in runs:
        run, seed = job.name[len("usit_") :].rsplit("_seed", 1)
        folder = usit_run_dir(tmp_path, run, int(seed))
        assert job.after == (f"cache_{run_autoencoder(run)}",) and job.stage == "diffusion"
        assert job.done_marker == folder / "pipeline" / "model_index.json"
        assert _values(job.command, "--output_dir") == [str(folder)] and _values(job.command, "--seed") == [seed]
        assert _values(job.command, "--latent_cache_dir") == [str(tmp_path / f"latents_{run_autoencoder(run)}")]
        assert _values(job.command, "--checkpointing_steps") == ["1000"]  # 6000 steps, 6 checkpoints
        assert _values(job.command, "--lr_warmup_steps") == ["300"] == _values(job.command, "--ema_warmup_steps")
        if run == "struct_aug":  # paper Eq. 2: the full latent plus one random prefix per step
            assert _values(job.command, "--num_channel_samples") == ["2"]
            assert _values(job.command, "--always_include_full") == []
            assert _values(job.command, "--no_augmented") is None
        else:
            assert _values(job.command, "--no_augmented") == []
            assert _values(job.command, "--num_channel_samples") is None
    check_jobs(caches + runs + toy_stages.finetune_jobs(tmp_path, full))  # one valid pool


def test_configs_build_the_models(tmp_path):
    toy_stages.write_configs(tmp_path)
    struct = json.loads((tmp_path / "configs" / "ae_struct.json").read_text())
    plain = json.loads((tmp_path / "configs" / "ae_plain.json").read_text())
    assert struct["latent_channel_choices"] == CHANNEL_CHOICES and plain["latent_channel_choices"] == [32]
    vae = AutoencoderDC15.from_config(struct)
    assert vae.spatial_compression_ratio == 8 and vae.config.latent_channels == 32
    usit = json.loads((tmp_path / "configs" / "usit.json").read_text())
    assert usit["num_layers"] == 4 and usit["patch_size"] == 1


def test_data_is_written_once(tmp_path):
    settings = dataclasses.replace(MODES["smoke"], num_train_images=20, num_heldout_images=10)
    assert not toy_stages.data_exists(tmp_path)
    toy_stages.write_data(tmp_path, settings)
    assert toy_stages.data_exists(tmp_path)
    train = sorted((tmp_path / "data" / "train" / "train").rglob("*.png"))
    heldout = sorted((tmp_path / "data" / "heldout" / "train").rglob("*.png"))
    assert len(train) == 20 and len(heldout) == 10
    assert train[0].read_bytes() != heldout[0].read_bytes()  # different seeds
    stamps = [path.stat().st_mtime_ns for path in train]
    toy_stages.write_data(tmp_path, settings)  # a resumed run keeps the images
    assert [path.stat().st_mtime_ns for path in train] == stamps


def test_diffusion_vae_gets_the_measured_scaling_factor(tmp_path):
    toy_stages.write_configs(tmp_path)
    config = json.loads((tmp_path / "configs" / "ae_struct.json").read_text())
    torch.manual_seed(0)
    AutoencoderDC15.from_config(config).save_pretrained(tmp_path / "ae_struct" / "vae_ema")
    images = torch.rand(12, 3, 32, 32) * 2 - 1
    toy_stages.write_diffusion_vae(tmp_path, "ae_struct", images)
    vae = AutoencoderDC15.from_pretrained(tmp_path / "ae_struct" / "vae_ema").eval()
    expected = compute_scaling_factor(vae, [images])
    saved = AutoencoderDC15.load_config(tmp_path / "ae_struct" / "vae_diffusion")
    assert saved["scaling_factor"] == pytest.approx(expected, rel=1e-5) and expected != 1.0
    toy_stages.write_diffusion_vae(tmp_path, "ae_struct", images * 0.1)  # done: a resumed run keeps it
    assert AutoencoderDC15.load_config(tmp_path / "ae_struct" / "vae_diffusion") == saved


def test_trainer_environment_is_offline_with_this_checkout_first(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    environment = toy_stages.trainer_environment()
    assert environment["HF_HUB_OFFLINE"] == "1"
    assert environment["PYTHONPATH"].split(":") == [str(REPO_ROOT), "/elsewhere"]
