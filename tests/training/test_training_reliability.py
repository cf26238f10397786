"""The trainers' reliability guarantees (dc_ae_hf/training/run.py), each found by a new-user trial: the weights that
made a latent cache, the run folder's owner and lock, workers dying with their launcher, refused or deliberate
resume mismatches, a broken latest checkpoint, one error message, logging cadence, stateless c' draws."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_AE15_CONFIG
from helpers import (
    TRAINING,
    assert_same_weights,
    load_script,
    run_in_process,
    subprocess_env,
    two_process_launch,
    usit_argv,
)

from dc_ae_hf.loading import model_subfolder_hint
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.training.randomness import LatentChannelSampler, step_seed
from dc_ae_hf.training.run import RunSettings, TrainingRun, check_output_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train_script():
    return load_script("train_usit")


@pytest.fixture(scope="module")
def workspace(usit_workspace):
    return usit_workspace


def _run_settings(output_dir: Path) -> RunSettings:
    return RunSettings(output_dir=str(output_dir), mixed_precision="no", checkpointing_steps=1, logging_steps=1)


# ---------------------------------------------------------------------------------------------------------------
# The latent cache's autoencoder: weights, not only the config
# ---------------------------------------------------------------------------------------------------------------


def test_a_cache_refuses_an_autoencoder_with_the_same_config_but_other_weights(train_script, workspace, tmp_path):
    torch.manual_seed(123)  # same architecture and scaling factor, other weights (e.g. vae/ instead of vae_ema/)
    AutoencoderDC15(**TINY_AE15_CONFIG).save_pretrained(tmp_path / "retrained")
    argv = usit_argv(workspace, tmp_path / "out", "--dry_run", "--vae", str(tmp_path / "retrained"))
    with pytest.raises(
        ValueError, match=r"--vae=.* is not allowed: it has the cache's architecture but other weights"
    ):
        run_in_process(train_script, argv)
    # the autoencoder that made the cache passes, and its weights hash is part of the resume settings
    config = run_in_process(train_script, usit_argv(workspace, tmp_path / "out", "--dry_run"))
    metadata = json.loads((workspace / "cache" / "metadata.json").read_text())
    assert config["data"]["vae_weights_hash"] == metadata["autoencoder_weights_hash"]


def test_a_cache_without_a_weights_hash_says_it_cannot_be_checked(train_script, workspace, tmp_path):
    old = tmp_path / "old_cache"
    old.mkdir()
    for item in (workspace / "cache").iterdir():
        if item.is_file():
            (old / item.name).write_bytes(item.read_bytes())
    metadata = json.loads((old / "metadata.json").read_text())
    del metadata["autoencoder_weights_hash"]  # as an older dc_ae_hf wrote it
    (old / "metadata.json").write_text(json.dumps(metadata))
    argv = usit_argv(workspace, tmp_path / "out", "--dry_run")
    argv[argv.index("--latent_cache_dir") + 1] = str(old)
    with pytest.warns(UserWarning, match="records no weights hash .* only its config was compared"):
        run_in_process(train_script, argv)


# ---------------------------------------------------------------------------------------------------------------
# The output folder: owned by one trainer, held by one live run
# ---------------------------------------------------------------------------------------------------------------


def test_output_dir_must_be_new_empty_or_a_run_of_this_trainer(tmp_path):
    check_output_dir(tmp_path / "missing", "train_usit", "transformer")
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", "train_usit", "transformer")
    pipeline = tmp_path / "pipeline"
    (pipeline / "vae").mkdir(parents=True)
    (pipeline / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match=r"--output_dir=.* is not allowed: it holds a pipeline \(model_index.json\)"):
        check_output_dir(pipeline, "train_dc_ae", "vae")
    ae_run = tmp_path / "ae_run"
    ae_run.mkdir()
    (ae_run / "training_config.json").write_text(json.dumps({"script": "train_dc_ae"}))
    check_output_dir(ae_run, "train_dc_ae", "vae")
    with pytest.raises(ValueError, match="it holds a training run of train_dc_ae.py"):
        check_output_dir(ae_run, "train_usit", "transformer")
    legacy = tmp_path / "legacy"  # a run of an earlier version: no script name, but its checkpoints hold the model
    (legacy / "checkpoint-5" / "transformer").mkdir(parents=True)
    (legacy / "training_config.json").write_text("{}")
    check_output_dir(legacy, "train_usit", "transformer")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"it holds other files \(notes.txt\)"):
        check_output_dir(tmp_path / "stuff", "train_usit", "transformer")


def test_trainer_refuses_a_pipeline_folder_and_another_trainers_run_before_writing(train_script, workspace, tmp_path):
    pipeline = tmp_path / "pipeline"
    AutoencoderDC15(**TINY_AE15_CONFIG).save_pretrained(pipeline / "vae")
    (pipeline / "model_index.json").write_text("{}")
    before = {p: p.stat().st_mtime_ns for p in pipeline.rglob("*")}
    with pytest.raises(ValueError, match=r"it holds a pipeline \(model_index.json\)"):
        run_in_process(train_script, usit_argv(workspace, pipeline, "--max_train_steps", "1"))
    assert {p: p.stat().st_mtime_ns for p in pipeline.rglob("*")} == before  # nothing written
    ae_run = tmp_path / "ae_run"
    ae_run.mkdir()
    (ae_run / "training_config.json").write_text(json.dumps({"script": "train_dc_ae", "phase": 1}))
    with pytest.raises(ValueError, match="it holds a training run of train_dc_ae.py"):
        run_in_process(train_script, usit_argv(workspace, ae_run, "--max_train_steps", "1"))
    assert json.loads((ae_run / "training_config.json").read_text()) == {"script": "train_dc_ae", "phase": 1}


_HOLD_LOCK = """
import sys, time
from dc_ae_hf.training.run import RunSettings, TrainingRun
run = TrainingRun(RunSettings(output_dir=sys.argv[1], mixed_precision="no"), {}, "train_usit", {})
print("locked", flush=True)
time.sleep(600)
"""


def test_a_live_run_holds_its_folder_and_a_killed_one_leaves_no_stale_lock(tmp_path):
    output_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(output_dir)], env=subprocess_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"another live run \(pid {holder.pid}\) is training in it"):
            TrainingRun(_run_settings(output_dir), {}, "train_usit", {})
    finally:
        holder.kill()
        holder.wait(timeout=60)
    run = TrainingRun(_run_settings(output_dir), {}, "train_usit", {})  # the OS released the killed run's lock
    run.finish()
    assert json.loads((output_dir / "training_config.json").read_text())["script"] == "train_usit"


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_workers_stop_when_the_launcher_is_killed(workspace, tmp_path):
    """kill -9 of `accelerate launch`: both workers stop within seconds instead of training on in the folder."""
    output_dir = tmp_path / "run"
    command = two_process_launch(
        TRAINING / "train_usit.py",
        *usit_argv(
            workspace,
            output_dir,
            *"--max_train_steps 100000 --checkpointing_steps 1 --validation_class_labels".split(),
        ),
    )
    launcher = subprocess.Popen(
        command,
        env={**subprocess_env(), "ACCELERATE_USE_CPU": "1"},
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while not (output_dir / "checkpoint-1").is_dir():
            assert launcher.poll() is None, "the run ended early"
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.1)
        workers = _children(launcher.pid)
        assert len(workers) == 2
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers), "workers outlived their launcher"
    finally:
        for pid in _children(launcher.pid) if launcher.poll() is None else []:
            os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()


# ---------------------------------------------------------------------------------------------------------------
# Resuming: refused when the run would silently change, fallback over a broken latest checkpoint
# ---------------------------------------------------------------------------------------------------------------


def test_resume_with_changed_objective_or_model_is_refused_unless_asked(train_script, workspace, tmp_path):
    output_dir = tmp_path / "run"
    argv = usit_argv(workspace, output_dir, "--max_train_steps", "2", "--validation_class_labels")
    run_in_process(train_script, argv)
    first = (output_dir / "training_config.json").read_text()
    longer = [*argv, "--max_train_steps", "3"]
    with pytest.raises(ValueError, match=r"other settings than it was trained with \(objective: checkpoint \[True"):
        run_in_process(train_script, [*longer, "--no_augmented"])
    config = {"num_layers": 4, "num_attention_heads": 2, "attention_head_dim": 16, "class_dropout_prob": 0.1}
    (tmp_path / "other.json").write_text(json.dumps(config))
    changed_model = [*longer, "--model_config", str(tmp_path / "other.json")]
    with pytest.raises(ValueError, match=r"model.num_layers: checkpoint 2, now 4.*--resume_mismatch_ok"):
        run_in_process(train_script, changed_model)
    run_in_process(train_script, [*longer, "--no_augmented", "--resume_mismatch_ok"])
    assert json.loads((output_dir / "checkpoint-3" / "training_state.json").read_text())["step"] == 3
    assert (output_dir / "training_config.json").read_text() == first  # the first configuration is kept
    resumed = json.loads((output_dir / "training_config-resumed-2.json").read_text())
    assert resumed["augmented"] is False


def test_a_broken_latest_checkpoint_falls_back_to_the_previous_one(train_script, workspace, tmp_path, caplog):
    extra = ["--checkpointing_steps", "2", "--validation_class_labels"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    run_in_process(train_script, usit_argv(workspace, straight, "--max_train_steps", "6", *extra))
    run_in_process(train_script, usit_argv(workspace, broken, "--max_train_steps", "4", *extra))
    (broken / "checkpoint-4" / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"truncated")
    explicit = [*usit_argv(workspace, broken, "--max_train_steps", "6", *extra)]
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint-4 cannot be loaded"):
        run_in_process(train_script, [*explicit, "--resume_from_checkpoint", str(broken / "checkpoint-4")])
    with caplog.at_level("WARNING"):
        config = run_in_process(train_script, explicit)
    assert "checkpoint-4 cannot be loaded" in caplog.text and "resuming from checkpoint-2 instead" in caplog.text
    assert config["resume_from"] == str(broken / "checkpoint-2")
    assert_same_weights(straight / "transformer", broken / "transformer")


# ---------------------------------------------------------------------------------------------------------------
# One clear message; logging every --logging_steps; stateless c'
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_user_error_under_accelerate_launch_prints_one_line(workspace, tmp_path):
    command = two_process_launch(
        TRAINING / "train_usit.py", *usit_argv(workspace, tmp_path / "run", "--num_classes", "5"), quiet=True
    )
    result = subprocess.run(
        command,
        env={**subprocess_env(), "ACCELERATE_USE_CPU": "1"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    # our message once (rank 0), and no traceback of the training script from either process; what remains is
    # torch elastic's failure summary of the two exit codes, which the launcher prints for any multi-process failure
    message = "error: --num_classes=5 is not allowed: the data has 10 classes"
    assert result.stderr.count(message) == 1, result.stderr[-3000:]
    assert 'train_usit.py", line' not in result.stderr and "ValueError" not in result.stderr
    plain = subprocess.run(
        [sys.executable, str(TRAINING / "train_usit.py"), "--model_config", "usit-x"],
        env=subprocess_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 2 and plain.stderr.strip().startswith("error: give exactly one data source")
    assert len(plain.stderr.strip().splitlines()) == 1


def test_losses_are_logged_every_logging_steps(train_script, workspace, tmp_path, monkeypatch):
    from accelerate import Accelerator

    logged = []
    monkeypatch.setattr(
        Accelerator, "log", lambda self, values, step=None, log_kwargs=None: logged.append((step, values))
    )
    argv = usit_argv(
        workspace,
        tmp_path / "run",
        *"--max_train_steps 7 --logging_steps 3 --validation_class_labels --num_channel_samples 2".split(),
    )
    run_in_process(train_script, argv)
    assert [step for step, _ in logged] == [3, 6, 7]
    assert all({"loss", "lr", "ema_decay", "c"} <= set(values) for _, values in logged)


def test_channel_draws_depend_only_on_seed_rank_and_step():
    rank0 = LatentChannelSampler([4, 8, 12, 16], num_samples=3, seed=5, process_index=0)
    forward = [rank0(step) for step in range(1, 41)]
    assert [rank0(step) for step in reversed(range(1, 41))] == forward[::-1]  # order of calls does not matter
    rank1 = LatentChannelSampler([4, 8, 12, 16], num_samples=3, seed=5, process_index=1)
    assert [rank1(step) for step in range(1, 41)] != forward  # ranks draw different c'
    assert LatentChannelSampler([4, 16], 2, always_include_full=True)(7)[0] == 16
    assert len({step_seed(0, r, s) for r in range(4) for s in range(100)}) == 400


def test_a_pipeline_or_run_folder_given_for_a_model_names_its_model_folders(train_script, workspace, tmp_path):
    pipeline = REPO_ROOT / "dc_ae_hf" / "assets" / "toy-dcae15-shapes"
    argv = usit_argv(workspace, tmp_path / "out", "--dry_run", "--vae", str(pipeline))
    with pytest.raises(ValueError, match=rf"holds the model folder {pipeline / 'vae'}: pass it"):
        run_in_process(train_script, argv)
    run = tmp_path / "ae_run"
    for name in ("vae", "vae_ema"):
        AutoencoderDC15(**TINY_AE15_CONFIG).save_pretrained(run / name)
    assert (
        model_subfolder_hint(run) == f"; it holds the model folders {run / 'vae_ema'}, {run / 'vae'}: pass one of them"
    )
    assert model_subfolder_hint(run / "vae") == ""


def test_compile_blocks_compiles_the_outermost_units_in_place():
    from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
    from dc_ae_hf.training.optimization import compile_blocks

    model = USiTTransformer2DModel(
        sample_size=4, in_channels=8, num_layers=2, num_attention_heads=2, attention_head_dim=8
    )
    keys = list(model.state_dict())
    assert compile_blocks(model, backend="eager") == ["in_blocks.0", "mid_block", "out_blocks.0"]
    assert list(model.state_dict()) == keys
    vae = AutoencoderDC15(**TINY_AE15_CONFIG)
    names = compile_blocks(vae, backend="eager")
    assert names and not any(a != b and b.startswith(a + ".") for a in names for b in names)  # outermost only
