"""training/evaluate_usit.py checks every input before it generates a sample, and names the flag and the path.

The pipeline is the toy one bundled with the package (32 px samples, 10 classes, latent prefixes 4, 8, ..., 32);
the Inception weights and the DINOv2 model are the seeded stand-ins of dc_ae_hf.testing. In the error cases the
pipeline's __call__ is replaced by one that fails the test, so an error that only comes after sampling has started
shows up as that failure.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import REPO_ROOT
from helpers import run_in_process
from PIL import Image

from dc_ae_hf.metrics.frechet import save_statistics
from dc_ae_hf.testing import write_standin_inception_weights, write_tiny_dinov2

SCRIPT = REPO_ROOT / "training" / "evaluate_usit.py"
TOY_PIPELINE = REPO_ROOT / "dc_ae_hf" / "assets" / "toy-dcae15-shapes"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("evaluate_usit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Valid metric inputs: stand-in Inception weights, a tiny DINOv2 (32-d), a reference folder of 6 images and a
    statistics file with 192-d FID and 32-d FD-DINOv2 statistics."""
    root = tmp_path_factory.mktemp("evaluate_usit_inputs")
    folder = root / "reference"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    stats = save_statistics(
        root / "reference.npz", np.zeros(192), np.eye(192), mu_dinov2=np.zeros(32), sigma_dinov2=np.eye(32)
    )
    return {
        "inception": write_standin_inception_weights(root / "inception.pth"),
        "dinov2": write_tiny_dinov2(root / "dinov2"),
        "folder": str(folder),
        "stats": stats,
    }


def _argv(tmp_path: Path, inputs: dict[str, str], **flags: str | list[str] | None) -> list[str]:
    """A valid command line (10 samples, one euler step, FID + IS against the statistics file, FD-DINOv2), with
    ``flags`` replacing or adding flags (None drops one)."""
    values: dict[str, str | list[str] | None] = {
        "pipeline": str(TOY_PIPELINE),
        "sample_dir": str(tmp_path / "samples"),
        "num_samples": "10",
        "batch_size": "5",
        "solver": "euler",
        "num_inference_steps": "1",
        "class_sampling": "balanced",
        "reference": inputs["stats"],
        "metrics": ["fid", "is"],
        "inception_weights_path": inputs["inception"],
        "dinov2": inputs["dinov2"],
        "fid_feature_layer": "192",
        "metrics_batch_size": "10",
        "output_json": str(tmp_path / "out" / "eval.json"),
    }
    values.update(flags)
    argv = ["--save_cpu_ram"]
    for flag, value in values.items():
        if value is not None:
            argv += [f"--{flag}", *([value] if isinstance(value, str) else value)]
    return argv


@pytest.fixture
def no_sampling(script, monkeypatch):
    def sampling_started(*args, **kwargs):
        raise AssertionError("a sample was generated before the inputs were checked")

    monkeypatch.setattr(script.DCAE15Pipeline, "__call__", sampling_started)


def test_valid_inputs_run_end_to_end(script, inputs, tmp_path):
    result = run_in_process(script, _argv(tmp_path, inputs))
    assert sorted(p.name for p in (tmp_path / "samples").glob("*.png")) == [f"{i:06d}.png" for i in range(10)]
    assert set(result["metrics"]) == {"fid", "inception_score_mean", "inception_score_std", "fd_dinov2"}
    assert all(np.isfinite(v) for v in result["metrics"].values())
    assert result["class_counts"] == [1] * 10 and (tmp_path / "out" / "eval.json").is_file()
    # the folder is this script's own output: a rerun takes it up again (the samples exist: nothing is generated)
    assert (tmp_path / "samples" / ".dc_ae_hf_output.json").is_file()
    assert run_in_process(script, _argv(tmp_path, inputs))["metrics"] == result["metrics"]


def _broken_pipelines(root: Path) -> dict[str, tuple[Path, str]]:
    """Pipeline folders that do not load, and what the error says about each."""
    no_transformer = root / "no_transformer"
    shutil.copytree(TOY_PIPELINE, no_transformer)
    shutil.rmtree(no_transformer / "transformer")
    truncated = root / "truncated"
    shutil.copytree(TOY_PIPELINE, truncated)
    weights = truncated / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return {
        "missing": (root / "missing", "No such local pipeline folder"),
        "no_transformer": (no_transformer, "missing its component 'transformer'"),
        "truncated": (truncated, "truncated or corrupt"),
    }


def test_a_pipeline_that_does_not_load_is_named(script, inputs, tmp_path, no_sampling):
    for name, (folder, reason) in _broken_pipelines(tmp_path).items():
        with pytest.raises(ValueError, match=f"^--pipeline='{folder}' cannot be loaded: .*{reason}"):
            run_in_process(script, _argv(tmp_path, inputs, pipeline=str(folder)))
        assert not list((tmp_path / "samples").glob("*.png")), name


def test_sampling_flags_are_checked_against_the_pipeline(script, inputs, tmp_path, no_sampling):
    cases = {
        # The toy autoencoder was trained for the prefixes 4, 8, ..., 32.
        "--latent_channels / --guidance_scale / --solver do not fit --pipeline=.*latent_channels=5": {
            "latent_channels": "5"
        },
        "^--latent_channels=0 ": {"latent_channels": "0"},
        "^--guidance_interval: .*0 <= t_lo <= t_hi <= 1": {"guidance_interval": ["0.8", "0.2"]},
        "^--guidance_scale=nan ": {"guidance_scale": "nan"},
        "^--seed=-1 ": {"seed": "-1"},
        "^--class_seed=-2 ": {"class_seed": "-2"},
        "^--batch_size=0 ": {"batch_size": "0"},
        "^--num_inference_steps=0 ": {"num_inference_steps": "0"},
        "^--metrics_batch_size=0 ": {"metrics_batch_size": "0"},
        "^--num_samples=5 is not allowed: the Inception Score splits the samples into 10 groups": {"num_samples": "5"},
        "^--num_samples=1 is not allowed: FID needs a covariance": {"num_samples": "1", "metrics": ["fid"]},
    }
    for message, flags in cases.items():
        with pytest.raises(ValueError, match=message):
            run_in_process(script, _argv(tmp_path, inputs, **flags))
    assert not list((tmp_path / "samples").glob("*.png"))


def test_metric_weights_are_checked_before_sampling(script, inputs, tmp_path, no_sampling):
    missing = tmp_path / "missing.pth"
    with pytest.raises(ValueError, match=f"^--inception_weights_path '{missing}' does not exist"):
        run_in_process(script, _argv(tmp_path, inputs, inception_weights_path=str(missing)))
    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="^--inception_weights_path '.*other.pth' is not a torch-fidelity inception"):
        run_in_process(script, _argv(tmp_path, inputs, inception_weights_path=str(tmp_path / "other.pth")))
    (tmp_path / "pickle.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="^--inception_weights_path '.*pickle.pth' is not a plain tensor state dict"):
        run_in_process(script, _argv(tmp_path, inputs, inception_weights_path=str(tmp_path / "pickle.pth")))
    with pytest.raises(ValueError, match=f"^--dinov2='{tmp_path / 'no-dinov2'}' cannot be loaded"):
        run_in_process(script, _argv(tmp_path, inputs, dinov2=str(tmp_path / "no-dinov2")))
    assert not list((tmp_path / "samples").glob("*.png"))


def test_the_reference_is_checked_before_sampling(script, inputs, tmp_path, no_sampling):
    def stats(name: str, **arrays) -> str:
        np.savez(tmp_path / name, **arrays)
        return str(tmp_path / name)

    wide = save_statistics(
        tmp_path / "wide.npz", np.zeros(64), np.eye(64), mu_dinov2=np.zeros(32), sigma_dinov2=np.eye(32)
    )
    narrow_dino = save_statistics(
        tmp_path / "dino16.npz", np.zeros(192), np.eye(192), mu_dinov2=np.zeros(16), sigma_dinov2=np.eye(16)
    )
    (tmp_path / "text.npz").write_text("not an archive")
    empty, single = tmp_path / "empty", tmp_path / "single"
    empty.mkdir()
    single.mkdir()
    Image.new("RGB", (32, 32)).save(single / "0.png")
    cases = {
        stats("keys.npz", mean=np.zeros(192)): "is not a usable FID statistics file: .* no 'mu'/'sigma' arrays",
        stats(
            "shapes.npz", mu=np.zeros(192), sigma=np.eye(3)
        ): "is not a usable FID statistics file: .*must be \\(D,\\)",
        str(tmp_path / "text.npz"): "is not a usable FID statistics file: .*not a readable .npz file",
        wide: "holds 64-d statistics, but --fid_feature_layer 192 gives 192-d features",
        stats("no_dino.npz", mu=np.zeros(192), sigma=np.eye(192)): "is not usable for FD-DINOv2: .*'mu_dinov2'",
        narrow_dino: "holds 16-d FD-DINOv2 statistics, but --dinov2=.* gives 32-d features",
        str(tmp_path / "nothing.npz"): "is neither an image folder nor an existing .npz file",
        str(single): "holds 1 image; FID and precision/recall need at least 2",
    }
    for reference, message in cases.items():
        with pytest.raises(ValueError, match=f"^--reference='{reference}' {message}"):
            run_in_process(script, _argv(tmp_path, inputs, reference=reference))
    with pytest.raises(ValueError, match=f"^--reference: folder '{empty}' has no png,jpg,jpeg images"):
        run_in_process(script, _argv(tmp_path, inputs, reference=str(empty), metrics=["fid"]))
    # The Inception Score alone does not read the reference: the checks pass and sampling starts.
    with pytest.raises(AssertionError, match="a sample was generated"):
        run_in_process(script, _argv(tmp_path, inputs, reference=str(single), metrics=["is"], dinov2=None))
    for i in range(1, 3):
        Image.new("RGB", (32, 32)).save(single / f"{i}.png")
    with pytest.raises(ValueError, match=f"^--reference='{single}' holds 3 images; precision/recall need > 3"):
        run_in_process(script, _argv(tmp_path, inputs, reference=str(single), metrics=["pr"], dinov2=None))
    assert not list((tmp_path / "samples").glob("*.png"))


def test_the_output_folders_are_checked_before_sampling(script, inputs, tmp_path, no_sampling):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=f"^--sample_dir='{tmp_path / 'a_file'}' is not allowed: it is a file"):
        run_in_process(script, _argv(tmp_path, inputs, sample_dir=str(tmp_path / "a_file")))
    photos = tmp_path / "photos"  # a folder of other images would be scored as samples: refused
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "000000.png")
    with pytest.raises(
        ValueError, match=r"^--sample_dir='.*photos' is not allowed: it holds other files \(000000.png\)"
    ):
        run_in_process(script, _argv(tmp_path, inputs, sample_dir=str(photos)))
    output = tmp_path / "a_file" / "eval.json"
    with pytest.raises(ValueError, match=f"^--output_json='{output}': its folder '{output.parent}' is not a writable"):
        run_in_process(script, _argv(tmp_path, inputs, output_json=str(output)))
    with pytest.raises(ValueError, match=f"^--output_markdown='{tmp_path}' is a folder"):
        run_in_process(script, _argv(tmp_path, inputs, output_markdown=str(tmp_path)))
    (tmp_path / "samples").mkdir(exist_ok=True)
    (tmp_path / "samples" / "generation_settings.json").write_text("{broken")
    with pytest.raises(ValueError, match="^--sample_dir='.*samples': generation_settings.json is unreadable"):
        run_in_process(script, _argv(tmp_path, inputs))
    assert not list((tmp_path / "samples").glob("*.png"))


def test_the_command_line_prints_one_error_line(script, inputs, tmp_path, capsys, no_sampling):
    missing = tmp_path / "missing.npz"
    AcceleratorState._reset_state(True)
    with pytest.raises(SystemExit) as info:
        script.cli(_argv(tmp_path, inputs, reference=str(missing)))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --reference='{missing}' is neither an image folder nor an existing .npz file"
    # The same from a shell, through `if __name__ == "__main__"`.
    process = subprocess.run(
        [sys.executable, str(SCRIPT), *_argv(tmp_path, inputs, inception_weights_path=str(tmp_path / "no.pth"))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 2 and "Traceback" not in process.stderr
    assert (
        process.stderr.strip().splitlines()[-1]
        == f"error: --inception_weights_path '{tmp_path / 'no.pth'}' does not exist."
    )
