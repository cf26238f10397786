"""USiT training and evaluation end to end: training/{cache_latents,train_usit,evaluate_usit,
make_reference_statistics}.py on tiny models (CPU, offline), plus the EMA schedule of `dc_ae_hf.training.ema`."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import sys
import warnings

import pytest
import torch
from conftest import REPO_ROOT, TINY_AE15_CONFIG
from helpers import (
    TINY_USIT,
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

from dc_ae_hf.data.latent_cache import LatentCacheDataset
from dc_ae_hf.data.shapes import SHAPE_CLASSES
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from dc_ae_hf.self_contained import is_self_contained
from dc_ae_hf.testing import write_standin_inception_weights, write_tiny_dinov2
from dc_ae_hf.training.diffusion import spread_class_labels
from dc_ae_hf.training.ema import ExponentialWarmupEMAModel
from dc_ae_hf.training.randomness import LatentChannelSampler

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train_script():
    return load_script("train_usit")


@pytest.fixture(scope="module")
def workspace(usit_workspace):
    return usit_workspace


# ---------------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_process_cache_train_and_the_final_pipeline(workspace, tmp_path):
    """cache_latents.py and train_usit.py over 2 processes; the pipeline folder loads and samples."""
    cache = LatentCacheDataset(workspace / "cache")  # 4 shards, 2 written by each process
    assert len(cache) == 32 and cache.metadata["num_shards"] == 4
    assert sorted(cache.labels.tolist()) == sorted(i % 10 for i in range(32))

    output_dir = tmp_path / "ddp"
    launch_two_processes(
        TRAINING / "train_usit.py",
        usit_argv(
            workspace,
            output_dir,
            *"--max_train_steps 4 --checkpointing_steps 1 --checkpoints_total_limit 2 --validation_steps 4 --validation_channels 4 16 --num_channel_samples 2 --always_include_full --gradient_checkpointing --gradient_accumulation_steps 2".split(),
        ),
    )
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]  # pruned
    checkpoint = output_dir / "checkpoint-4"
    assert {"random_states_0.pkl", "random_states_1.pkl", "transformer", "transformer_ema"} <= {
        p.name for p in checkpoint.iterdir()
    }
    # c' is drawn per rank from (seed, rank, step): no per-process sampler state needs checkpointing
    assert not list(checkpoint.glob("latent_channel_sampler*"))
    assert json.loads((checkpoint / "training_state.json").read_text())["step"] == 4
    config = json.loads((output_dir / "training_config.json").read_text())
    assert config["model"]["config"]["in_channels"] == 16 and config["model"]["config"]["sample_size"] == 4
    assert config["latent_channel_choices"] == [4, 8, 12, 16] and config["augmented"] is True
    assert config["accelerate"]["num_processes"] == 2 and config["accelerate"]["distributed_type"].endswith(
        "MULTI_CPU"
    )
    assert (output_dir / "samples" / "step-0000004.png").is_file()

    pipe = DCAE15Pipeline.from_pretrained(output_dir / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.id2label == {str(i): name for i, name in enumerate(SHAPE_CLASSES)}
    assert_same_weights(output_dir / "pipeline" / "transformer", checkpoint / "transformer_ema")  # EMA weights
    assert not pipe.transformer.training
    images = pipe(
        ["circle", 7], num_inference_steps=2, solver="euler", generator=torch.Generator().manual_seed(0)
    ).images
    assert [image.size for image in images] == [(32, 32), (32, 32)]
    prefix = pipe([3], num_inference_steps=2, latent_channels=8, output_type="pt").images
    assert prefix.shape == (1, 3, 32, 32)
    card = (output_dir / "pipeline" / "README.md").read_text()
    assert "augmented diffusion training (paper Eq. 2)" in card and "4 steps" in card


def test_failed_push_is_one_line_and_loses_nothing(train_script, workspace, tmp_path):
    # HF_HUB_OFFLINE=1 (tests/conftest.py): the upload fails after the run has written everything
    argv = usit_argv(workspace, tmp_path / "run", "--max_train_steps", "1", "--push_to_hub", "--hub_model_id", "me/x")
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(train_script, argv)
    message = str(exit_info.value.code)
    assert message.startswith("error: could not push to the Hub repo 'me/x'") and "\n" not in message
    assert str((tmp_path / "run" / "pipeline").resolve()) in message and "is complete" in message
    assert (tmp_path / "run" / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors").is_file()


def test_resume_gives_identical_weights(train_script, workspace, tmp_path):
    """8 steps straight == 4 steps, then the same command with --max_train_steps 8 (crosses an epoch boundary)."""
    extra = [
        *"--checkpointing_steps 4 --validation_steps 4 --num_channel_samples 2 --gradient_accumulation_steps 2".split(),
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_in_process(train_script, usit_argv(workspace, straight, "--max_train_steps", "8", *extra))
    run_in_process(train_script, usit_argv(workspace, resumed, "--max_train_steps", "4", *extra))
    config = run_in_process(train_script, usit_argv(workspace, resumed, "--max_train_steps", "8", *extra))
    assert config["resume_from"] == str(resumed / "checkpoint-4")
    assert_same_weights(straight / "transformer", resumed / "transformer")
    assert_same_weights(straight / "pipeline" / "transformer", resumed / "pipeline" / "transformer")
    ema = json.loads((resumed / "checkpoint-8" / "transformer_ema" / "config.json").read_text())
    assert ema["optimization_step"] == 8 and ema["warmup_steps"] == 2000
    before = weights(resumed / "checkpoint-4" / "transformer")
    assert any(not torch.equal(before[k], v) for k, v in weights(resumed / "transformer").items())  # it trained


@pytest.mark.slow
def test_per_sample_prefixes_over_two_processes_resume_exactly(workspace, tmp_path):
    """--channel_sampling per_sample (one pass, a c' per sample, the full latent on half the batch) with gradient
    accumulation on 2 DDP processes: 4 steps straight == 2 steps, then the same command to 4."""
    extra = "--channel_sampling per_sample --always_include_full --gradient_accumulation_steps 2".split()
    extra += "--checkpointing_steps 2 --validation_class_labels".split()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    launch_two_processes(TRAINING / "train_usit.py", usit_argv(workspace, straight, "--max_train_steps", "4", *extra))
    launch_two_processes(TRAINING / "train_usit.py", usit_argv(workspace, resumed, "--max_train_steps", "2", *extra))
    launch_two_processes(TRAINING / "train_usit.py", usit_argv(workspace, resumed, "--max_train_steps", "4", *extra))
    assert_same_weights(straight / "transformer", resumed / "transformer")
    assert_same_weights(straight / "pipeline" / "transformer", resumed / "pipeline" / "transformer")
    card = (straight / "pipeline" / "README.md").read_text()
    assert "one c' per sample in [4, 8, 12, 16], one pass, the full latent on half of each batch" in card


def test_several_ema_decays_are_kept_saved_and_exportable(train_script, workspace, tmp_path):
    """--ema_decay 0.9 0.99: both EMAs in every checkpoint and as model folders; --pipeline_ema_decay picks the
    pipeline's; changing the decays on resume is refused."""
    base = usit_argv(workspace, tmp_path / "run", "--validation_class_labels", "--ema_warmup_steps", "0")
    argv = [*base, *"--max_train_steps 3 --ema_decay 0.9 0.99 --pipeline_ema_decay 0.99 --self_contained".split()]
    config = run_in_process(train_script, argv)
    assert (config["args"]["ema_decay"], config["args"]["ema_decays"]) == (0.9, [0.9, 0.99])
    run = tmp_path / "run"
    assert {"transformer_ema", "transformer_ema-0.99"} <= {p.name for p in (run / "checkpoint-3").iterdir()}
    first = json.loads((run / "checkpoint-3" / "transformer_ema" / "config.json").read_text())
    second = json.loads((run / "checkpoint-3" / "transformer_ema-0.99" / "config.json").read_text())
    assert (first["decay"], second["decay"]) == (0.9, 0.99)
    assert_same_weights(run / "pipeline" / "transformer", run / "transformer_ema-0.99")  # the chosen EMA
    assert_same_weights(run / "transformer_ema", run / "checkpoint-3" / "transformer_ema")  # the first is kept too
    assert weights(run / "transformer_ema-0.99").keys() == weights(run / "checkpoint-3" / "transformer_ema").keys()
    assert any(
        not torch.equal(a, b)
        for a, b in zip(
            weights(run / "transformer_ema-0.99").values(), weights(run / "checkpoint-3" / "transformer_ema").values()
        )
    )
    assert "EMA 0.99 (warmup 0)" in (run / "pipeline" / "README.md").read_text()
    assert is_self_contained(run / "pipeline") and not is_self_contained(run / "transformer_ema-0.99")  # the export
    assert "trust_remote_code=True" in (run / "pipeline" / "README.md").read_text()
    with pytest.raises(ValueError, match=r"ema: checkpoint \[\[0.9, 0.99\], 0\], now \[\[0.9\], 0\]"):
        run_in_process(train_script, [*base, *"--max_train_steps 4 --ema_decay 0.9".split()])
    with pytest.raises(ValueError, match=r"--pipeline_ema_decay=0.5 is not allowed: must be one of --ema_decay"):
        run_in_process(train_script, [*argv, "--pipeline_ema_decay", "0.5", "--dry_run"])


def test_per_sample_draws_fill_half_the_batch_with_the_full_latent():
    sampler = LatentChannelSampler([4, 8, 12, 16], always_include_full=True, seed=3, process_index=1)
    drawn = sampler.per_sample(step=5, batch_size=7, micro_batch=1)
    assert drawn.dtype == torch.int64 and drawn.shape == (7,) and drawn[:4].tolist() == [16] * 4
    assert set(drawn.tolist()) <= {4, 8, 12, 16}
    assert torch.equal(drawn, sampler.per_sample(step=5, batch_size=7, micro_batch=1))  # stateless
    assert not torch.equal(sampler.per_sample(5, 64, 0), sampler.per_sample(5, 64, 1))  # per micro-batch
    plain = LatentChannelSampler([4, 8, 12, 16], seed=3).per_sample(1, 4000)
    counts = torch.bincount(plain)[[4, 8, 12, 16]].float() / 4000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03)  # uniform over the choices


@pytest.mark.slow
def test_killed_run_resumes_by_rerunning_the_same_command(train_script, workspace, tmp_path, capsys):
    """SIGKILL mid-run, then the same command again: it resumes and ends with the weights of an unbroken run."""
    argv = [
        *"--max_train_steps 100 --checkpointing_steps 10 --checkpoints_total_limit 2 --validation_class_labels".split(),
    ]
    killed = tmp_path / "killed"
    command = [sys.executable, str(TRAINING / "train_usit.py"), *usit_argv(workspace, killed, *argv)]
    returncode = sigkill_when_checkpoint_appears(command, subprocess_env(), REPO_ROOT, killed / "checkpoint-20")
    assert returncode == -signal.SIGKILL and not (killed / "pipeline").exists()
    finished = sorted(int(p.name.split("-")[1]) for p in killed.glob("checkpoint-*") if p.suffix != ".tmp")
    assert 20 <= finished[-1] < 100
    capsys.readouterr()
    run_in_process(train_script, usit_argv(workspace, killed, *argv))  # the same command line (1 thread, as there)
    assert f"Resumed from checkpoint-{finished[-1]}" in capsys.readouterr().out
    straight = tmp_path / "straight"
    run_in_process(train_script, usit_argv(workspace, straight, *argv))
    assert_same_weights(straight / "pipeline" / "transformer", killed / "pipeline" / "transformer")
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-100", "checkpoint-90"]


def test_encoding_on_the_fly_feeds_the_same_latents_as_the_cache(train_script, workspace, tmp_path):
    """Images + --vae (ADM center crop, encoded each step) train like the cache made from the same images."""
    common = [
        "--model_config",
        str(workspace / "usit.json"),
        *"--train_batch_size 4 --lr_warmup_steps 2 --learning_rate 1e-3 --report_to none --max_train_steps 3 --validation_class_labels --checkpointing_steps 3 --seed 3".split(),
    ]
    run_in_process(
        train_script,
        ["--latent_cache_dir", str(workspace / "cache"), "--output_dir", str(tmp_path / "cached"), *common],
    )
    config = run_in_process(
        train_script,
        [
            "--train_data_dir",
            str(workspace / "data"),
            "--vae",
            str(workspace / "vae"),
            "--resolution",
            "32",
            "--cache_dir",
            str(workspace / "hf_cache"),
            "--output_dir",
            str(tmp_path / "fly"),
            *common,
        ],
    )
    assert config["data"]["source"] == "images" and config["data"]["latent_shape"] == [16, 4, 4]
    cached, fly = weights(tmp_path / "cached" / "transformer"), weights(tmp_path / "fly" / "transformer")
    for key in cached:  # equal up to the encoder's batch-size-dependent float rounding
        torch.testing.assert_close(fly[key], cached[key], atol=1e-4, rtol=1e-4)


def test_continue_from_a_pretrained_transformer_with_the_plain_baseline(train_script, workspace, tmp_path):
    """--pretrained_model_name_or_path starts from a saved transformer; --no_augmented trains the full latent only."""
    torch.manual_seed(2)
    USiTTransformer2DModel(sample_size=4, in_channels=16, num_classes=10, **TINY_USIT).save_pretrained(
        tmp_path / "start"
    )
    argv = usit_argv(
        workspace,
        tmp_path / "run",
        *"--max_train_steps 2 --validation_class_labels --no_augmented --class_dropout_prob 0.2".split(),
    )
    argv[argv.index("--model_config") : argv.index("--model_config") + 2] = [
        "--pretrained_model_name_or_path",
        str(tmp_path / "start"),
    ]
    config = run_in_process(train_script, argv)
    assert config["augmented"] is False and config["latent_channel_choices"] == [16]
    trained = USiTTransformer2DModel.from_pretrained(tmp_path / "run" / "transformer")
    assert trained.config.class_dropout_prob == 0.2
    start = weights(tmp_path / "start")
    assert any(not torch.equal(start[k], v) for k, v in weights(tmp_path / "run" / "transformer").items())
    assert "--no_augmented baseline" in (tmp_path / "run" / "pipeline" / "README.md").read_text()
    with pytest.raises(ValueError, match="--sample_size=8 is not allowed: the pretrained model has sample_size=4"):
        run_in_process(train_script, [*argv, "--sample_size", "8", "--dry_run"])
    with pytest.raises(ValueError, match=r"--class_dropout_prob=0.0 is not allowed: must stay > 0"):
        run_in_process(train_script, [*argv, "--class_dropout_prob", "0", "--dry_run"])


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------


def test_dry_run_prints_the_resolved_configuration(train_script, workspace, tmp_path, capsys):
    config = run_in_process(
        train_script,
        [
            "--latent_cache_dir",
            str(workspace / "cache"),
            "--model_config",
            "usit-h",
            "--output_dir",
            str(tmp_path / "dry"),
            "--dry_run",
        ],
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["config"] == config["model"]["config"]
    model = printed["model"]["config"]
    assert (model["in_channels"], model["sample_size"], model["num_classes"]) == (16, 4, 10)  # from the cache
    assert (model["num_layers"], model["num_attention_heads"], model["attention_head_dim"]) == (28, 16, 72)  # USiT-H
    args = printed["args"]
    assert (args["learning_rate"], args["adam_beta1"], args["adam_beta2"], args["adam_weight_decay"]) == (
        1e-4,
        0.99,
        0.99,
        0.0,
    )
    assert (args["lr_scheduler"], args["lr_warmup_steps"], args["max_grad_norm"]) == (
        "constant_with_warmup",
        5000,
        None,
    )
    assert (args["ema_decay"], args["ema_warmup_steps"]) == (0.9999, 2000)
    assert printed["latent_channel_choices"] == [4, 8, 12, 16]  # the autoencoder's, from the cache metadata
    assert printed["data"]["vae"] == str((workspace / "vae").resolve())
    assert printed["validation"]["class_labels"] == spread_class_labels(10)
    assert not (tmp_path / "dry").exists()  # nothing written


@pytest.fixture(scope="module")
def other_cache(workspace, tmp_path_factory):
    """A cache of the same images made by another autoencoder, and an empty folder."""
    root = tmp_path_factory.mktemp("other")
    AutoencoderDC15(**{**TINY_AE15_CONFIG, "scaling_factor": 0.3}).save_pretrained(root / "other_vae")
    run_in_process(
        load_script("cache_latents"),
        [
            "--vae",
            str(root / "other_vae"),
            "--train_data_dir",
            str(workspace / "data"),
            "--cache_dir",
            str(workspace / "hf_cache"),
            "--output_dir",
            str(root / "cache"),
            *"--resolution 32 --max_images 8".split(),
        ],
    )
    (root / "empty_dir").mkdir()
    (root / "no_images" / "train" / "circle").mkdir(parents=True)
    return root


def test_warm_up_longer_than_the_run_warns(train_script, workspace, tmp_path):
    argv = usit_argv(workspace, tmp_path / "out", "--dry_run", "--max_train_steps", "100")
    argv[argv.index("--lr_warmup_steps") + 1] = "5000"  # the official default
    with pytest.warns(
        UserWarning, match=r"--lr_warmup_steps=5000 is longer than --max_train_steps=100: .* peaks at 2e-05, 2% of"
    ):
        run_in_process(train_script, argv)
    argv[argv.index("--lr_warmup_steps") + 1] = "100"  # the LR reaches --learning_rate at the end: nothing to say
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="--lr_warmup_steps")
        run_in_process(train_script, argv)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--vae": "{other}/other_vae"}, r"made by the autoencoder .* but --vae=.* has config hash"),
        ({"--latent_channel_choices": ["4", "32"]}, r"--latent_channel_choices=\[4, 32\] has values \[32\] outside"),
        ({"--model_config": "usit-giant"}, r"--model_config='usit-giant' is not allowed: neither a config.json"),
        ({"--latent_cache_dir": "{other}/empty_dir"}, "has no metadata.json"),
        ({"--latent_cache_dir": "{other}/cache", "--vae": "{workspace}/vae"}, "cannot be decoded by it"),
        ({"--in_channels": "8"}, r"--in_channels=8 is not allowed: must equal the data's latent channels 16"),
        ({"--num_classes": "5"}, r"--num_classes=5 is not allowed: the data has 10 classes"),
        ({"--num_classes": "12"}, r"--num_classes=12 is not allowed: the data has 10 classes \(class ids 0\.\.9\)"),
        ({"--latent_channel_choices": ["4", "8"], "--always_include_full": None}, "needs the full latent 16"),
        ({"--no_augmented": None, "--num_channel_samples": "2"}, "--no_augmented trains on the full latent only"),
        ({"--validation_class_labels": ["3", "12"]}, r"--validation_class_labels=\[12\] is not allowed"),
        (
            {"--latent_channel_choices": ["8", "16"], "--validation_channels": ["4", "16"]},
            r"--validation_channels=\[4, 16\] is not allowed: \[4\] are not among the prefixes c' this run trains",
        ),
        ({"--max_grad_norm": "0"}, "--max_grad_norm=0.0 is not allowed"),
        ({"--train_data_dir": "{workspace}/data"}, "give exactly one data source"),
        ({"--resume_from_checkpoint": "{other}/empty_dir"}, "is not a checkpoint-<step> folder"),
        ({"--channel_sampling": "per_sample", "--num_channel_samples": "2"}, "per_sample draws one c' per sample"),
        ({"--logging_steps": "0"}, r"--logging_steps=0 is not allowed: must be an int >= 1"),
        ({"--ema_decay": ["0.9", "0.9"]}, r"--ema_decay=\[0.9, 0.9\] is not allowed: each decay must be in \(0, 1\)"),
        ({"--ema_decay": ["0.99", "1.5"]}, r"--ema_decay=\[0.99, 1.5\] is not allowed"),
        (
            {"--compile": None, "--compile_backend": "inductr"},
            r"--compile_backend='inductr' is not allowed: choose one",
        ),
        (
            {"--channel_sampling": "per_sample", "--no_augmented": None},
            "--channel_sampling='per_sample' is not allowed",
        ),
    ],
)
def test_bad_configuration_fails_early(train_script, workspace, other_cache, tmp_path, change, message):
    argv = usit_argv(workspace, tmp_path / "out", "--dry_run")
    for flag, value in change.items():
        values = [] if value is None else [value] if isinstance(value, str) else value
        values = [v.format(other=other_cache, workspace=workspace) for v in values]
        if flag in argv:
            position = argv.index(flag)
            argv[position + 1 : position + 2] = values
        else:
            argv += [flag, *values]
    with pytest.raises(ValueError, match=message):
        run_in_process(train_script, argv)


def test_a_latent_cache_whose_id2label_has_a_gap_is_refused(train_script, workspace, tmp_path, capsys):
    """The cache's class names go through the one id2label check: ids 0-8 and 10 would make 10 the null class."""
    cache = tmp_path / "cache"
    shutil.copytree(workspace / "cache", cache)
    meta = json.loads((cache / "metadata.json").read_text())
    names = list(meta["id2label"].values())
    meta["id2label"] = {str(i): name for i, name in zip([*range(9), 10], names, strict=True)}
    (cache / "metadata.json").write_text(json.dumps(meta))
    argv = usit_argv(workspace, tmp_path / "out", "--dry_run")
    argv[argv.index("--latent_cache_dir") + 1] = str(cache)
    with pytest.raises(SystemExit) as exit_info:
        train_script.run_script(train_script.main, train_script.parse_args, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: id2label of --latent_cache_dir={str(cache / 'metadata.json')!r} is not allowed: the class ids must "
        "be exactly 0..9, one per class; missing 9; unexpected 10 (10 would be the cache's null class, sampled "
        "unconditionally)"
    ]


def test_augmented_training_refuses_an_unstructured_autoencoder(train_script, workspace, tmp_path):
    """No latent_channel_choices anywhere: the prefixes fall back to [16], so "augmented" would silently train the
    full latent only; the default run refuses, --no_augmented or explicit --latent_channel_choices run."""
    torch.manual_seed(0)
    AutoencoderDC15(**{**TINY_AE15_CONFIG, "latent_channel_choices": None}).save_pretrained(tmp_path / "plain_vae")
    data = ["--train_data_dir", str(workspace / "data"), "--cache_dir", str(workspace / "hf_cache")]
    cache = ["--vae", str(tmp_path / "plain_vae"), *data, "--output_dir", str(tmp_path / "cache")]
    run_in_process(load_script("cache_latents"), [*cache, "--resolution", "32", "--max_images", "8"])
    argv = usit_argv(workspace, tmp_path / "out", "--dry_run")
    argv[argv.index("--latent_cache_dir") + 1] = str(tmp_path / "cache")
    message = (
        r"augmented training \(the default\) needs channel prefixes c' < 16, but the autoencoder .*plain_vae' has no "
        r"structured latent space \(no latent_channel_choices in its config or the cache metadata; the choices fall "
        r"back to \[16\], the full latent only\)\. Pass --latent_channel_choices C1 C2 \.\.\. if it is structured "
        r"but was saved without the list, or --no_augmented"
    )
    with pytest.raises(ValueError, match=message):
        run_in_process(train_script, argv)
    assert run_in_process(train_script, [*argv, "--no_augmented"])["latent_channel_choices"] == [16]
    config = run_in_process(train_script, [*argv, "--latent_channel_choices", "4", "8", "16"])
    assert config["augmented"] is True and config["latent_channel_choices"] == [4, 8, 16]
    fly = [*data, "--vae", str(tmp_path / "plain_vae"), "--resolution", "32", "--model_config", "usit-h"]
    fly += ["--output_dir", str(tmp_path / "out"), "--report_to", "none", "--dry_run"]
    with pytest.raises(ValueError, match=r"has no structured latent space \(no latent_channel_choices in its config;"):
        run_in_process(train_script, fly)


def test_on_the_fly_configuration_errors(train_script, workspace, other_cache, tmp_path):
    fly = ["--model_config", "usit-h", "--output_dir", str(tmp_path / "out"), "--dry_run", "--report_to", "none"]
    with pytest.raises(ValueError, match="no_images. holds no image files"):
        run_in_process(
            train_script, ["--train_data_dir", str(other_cache / "no_images"), "--vae", str(workspace / "vae"), *fly]
        )
    with pytest.raises(ValueError, match="needs --vae"):
        run_in_process(train_script, ["--train_data_dir", str(workspace / "data"), *fly])
    with pytest.raises(ValueError, match="divisible by the autoencoder's compression ratio 8"):
        run_in_process(
            train_script,
            ["--train_data_dir", str(workspace / "data"), "--vae", str(workspace / "vae"), "--resolution", "36", *fly],
        )


# ---------------------------------------------------------------------------------------------------------------
# EMA schedule
# ---------------------------------------------------------------------------------------------------------------


def test_ema_follows_the_official_exponential_warmup(tmp_path):
    torch.manual_seed(0)
    model = USiTTransformer2DModel(sample_size=2, in_channels=4, num_classes=3, **TINY_USIT)
    ema = ExponentialWarmupEMAModel(
        model.parameters(),
        decay=0.9999,
        warmup_steps=2000,
        model_cls=USiTTransformer2DModel,
        model_config=model.config,
    )
    assert ema.get_decay(1) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))
    assert ema.get_decay(2000) == pytest.approx(0.9999 * (1 - math.exp(-1)))
    shadow = [p.detach().clone() for p in model.parameters()]
    for step in (1, 2, 3):  # official update_ema: v -= (1 - d) * (v - p), d = decay * (1 - exp(-step / 2000))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.step(model.parameters())
        d = 0.9999 * (1 - math.exp(-step / 2000))
        shadow = [s - (1 - d) * (s - p.detach()) for s, p in zip(shadow, model.parameters())]
    for s, e in zip(shadow, ema.shadow_params):
        torch.testing.assert_close(e, s, atol=1e-6, rtol=1e-6)
    ema.save_pretrained(str(tmp_path / "ema"))
    loaded = ExponentialWarmupEMAModel.from_pretrained(str(tmp_path / "ema"), model_cls=USiTTransformer2DModel)
    assert (loaded.optimization_step, loaded.warmup_steps, loaded.decay) == (3, 2000, 0.9999)
    assert all(torch.equal(a, b) for a, b in zip(loaded.shadow_params, ema.shadow_params))
    assert ExponentialWarmupEMAModel(model.parameters(), warmup_steps=0).get_decay(1) == 0.9999
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 0"):
        ExponentialWarmupEMAModel(model.parameters(), warmup_steps=-1)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metric_weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("metric_weights")
    return write_standin_inception_weights(root / "inception.pth"), write_tiny_dinov2(root / "dinov2")


def test_evaluate_script_end_to_end(workspace, metric_weights, tmp_path, capsys):
    inception, dinov2 = metric_weights
    torch.manual_seed(1)
    pipe = DCAE15Pipeline(
        USiTTransformer2DModel(sample_size=4, in_channels=16, num_classes=10, **TINY_USIT),
        AutoencoderDC15.from_pretrained(workspace / "vae"),
    )
    pipe.save_pretrained(tmp_path / "pipeline")
    evaluate = load_script("evaluate_usit")
    reference = tmp_path / "reference"  # 10 real 32 px images, one folder (torch-fidelity reads it flat)
    reference.mkdir()
    for image in sorted((workspace / "data" / "train").rglob("*.png"))[:10]:
        (reference / image.name).write_bytes(image.read_bytes())
    samples = tmp_path / "samples"
    # --fid_feature_layer 192: a 192-d covariance, whose sqrtm takes milliseconds instead of seconds
    argv = [
        "--pipeline",
        str(tmp_path / "pipeline"),
        "--sample_dir",
        str(samples),
        *"--num_samples 10 --batch_size 4 --solver euler --num_inference_steps 2 --class_sampling balanced --inception_weights_path".split(),
        inception,
        *"--metrics_batch_size 10 --save_cpu_ram --fid_feature_layer 192".split(),
    ]
    out = ["--output_json", str(tmp_path / "eval.json"), "--output_md", str(tmp_path / "eval.md")]
    result = run_in_process(evaluate, [*argv, *out, "--reference", str(reference), "--dinov2", dinov2])
    assert sorted(p.name for p in samples.glob("*.png")) == [f"{i:06d}.png" for i in range(10)]
    assert set(result["metrics"]) == {
        "fid",
        "inception_score_mean",
        "inception_score_std",
        "precision",
        "recall",
        "f_score",
        "fd_dinov2",
    }
    assert result["metrics"]["fid"] > 1.0 and result["metrics"]["fd_dinov2"] > 0
    assert result["class_counts"] == [1] * 10  # balanced
    assert json.loads((tmp_path / "eval.json").read_text())["metrics"] == result["metrics"]
    assert "| fid |" in (tmp_path / "eval.md").read_text()

    # A rerun generates nothing (every PNG exists) and scores the set against itself: FID ~ 0.
    mtimes = {p: p.stat().st_mtime_ns for p in samples.glob("*.png")}
    capsys.readouterr()
    again = run_in_process(evaluate, [*argv, *out, "--reference", str(samples), "--metrics", "fid"])
    assert "generated 0 samples" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in samples.glob("*.png")} == mtimes
    assert abs(again["metrics"]["fid"]) < 1e-3

    # Reference statistics (.npz) from make_reference_statistics.py give the folder's FID.
    stats = tmp_path / "reference.npz"
    run_in_process(
        load_script("make_reference_statistics"),
        [
            "--train_data_dir",
            str(workspace / "data"),
            *"--max_images 10 --resolution 32 --cache_dir".split(),
            str(workspace / "hf_cache"),
            "--inception_weights_path",
            inception,
            "--device",
            "cpu",
            "--output",
            str(stats),
            "--save_cpu_ram",
            "--feature_layer",
            "192",
        ],
    )
    first_ten = sorted((workspace / "data" / "train").rglob("*.png"), key=lambda p: (p.parent.name, p.name))[:10]
    assert sorted(p.name for p in first_ten) == sorted(p.name for p in reference.iterdir())
    from_stats = run_in_process(evaluate, [*argv, *out, "--reference", str(stats)])
    assert set(from_stats["metrics"]) == {"fid", "inception_score_mean", "inception_score_std"}  # no P/R from stats
    assert from_stats["metrics"]["fid"] == pytest.approx(result["metrics"]["fid"], rel=1e-3)

    with pytest.raises(ValueError, match="samples made with other settings"):
        run_in_process(evaluate, [*argv, *out, "--reference", str(reference), "--seed", "1"])
    with pytest.raises(ValueError, match="precision/recall\\) needs reference images"):
        run_in_process(evaluate, [*argv, *out, "--reference", str(stats), "--metrics", "pr"])


def test_official_class_sampling():
    evaluate = load_script("evaluate_usit")
    expected = torch.randint(0, 1000, (50,), generator=torch.Generator().manual_seed(0)).tolist()
    assert evaluate.class_labels(50, 1000, "random") == expected  # official sample_class.py
    assert evaluate.class_labels(5, 3, "balanced") == [0, 1, 2, 0, 1]
    assert evaluate.sample_seed(0, 1) != evaluate.sample_seed(1, 0)


def test_compiled_blocks_train_like_eager_ones(train_script, workspace, tmp_path):
    """--compile compiles each USiTBlock in place; with the "eager" backend (graph capture without code generation)
    the weights equal an uncompiled run's, and the saved folders keep their keys."""
    argv = "--max_train_steps 2 --validation_class_labels".split()
    run_in_process(train_script, usit_argv(workspace, tmp_path / "plain", *argv))
    run_in_process(
        train_script, usit_argv(workspace, tmp_path / "compiled", *argv, "--compile", "--compile_backend", "eager")
    )
    assert_same_weights(tmp_path / "plain" / "transformer", tmp_path / "compiled" / "transformer")
    assert_same_weights(
        tmp_path / "plain" / "pipeline" / "transformer", tmp_path / "compiled" / "pipeline" / "transformer"
    )


THREADS_AT_EXIT = """import atexit, os, sys
def _threads_at_exit():
    names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
    print(f"threads at exit of rank {os.environ.get('RANK')}: {names}", file=sys.stderr, flush=True)
atexit.register(_threads_at_exit)
"""


@pytest.mark.slow
def test_no_gloo_thread_outlives_a_finished_two_process_run(workspace, tmp_path):
    """Every rank frees its destroyed process group before the interpreter finalises (`run_script`): gloo threads
    left to finalisation once aborted a run that had written every file ("terminate called without an active
    exception", exit status -6). A `sitecustomize` lists each worker's threads at exit (Linux: /proc)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(THREADS_AT_EXIT)
    env = {**subprocess_env(), "ACCELERATE_USE_CPU": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(probe), env["PYTHONPATH"]])
    argv = usit_argv(workspace, tmp_path / "run", "--max_train_steps", "2")
    result = run_command(two_process_launch(TRAINING / "train_usit.py", *argv), env)
    # searched, not matched at line starts: rank 0's line may follow its progress bar on the same line
    threads = dict(re.findall(r"threads at exit of rank (\w+): (\[.*?\])", result.stderr))
    assert sorted(threads) == ["0", "1", "None"], result.stderr[-3000:]
    assert all("gloo" not in names for names in threads.values()), threads
