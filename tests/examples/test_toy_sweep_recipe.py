"""The toy recipe's channel sweep (examples/toy/run_recipe.py --mode sweep-smoke) end to end with the real trainers:
every artefact, every evaluation row, the objectives the trainers really ran, and a resumed second run."""

from __future__ import annotations

import json
import math

import pytest

from examples.toy import run_recipe
from examples.toy.report.sweep import SWEEP_PLOTS
from examples.toy.toy_evaluation import sweep_reconstruction_prefixes
from examples.toy.toy_settings import (
    EVAL_GUIDANCE_SCALES,
    SWEEP_MODES,
    sweep_autoencoders,
    sweep_cache_dir,
    sweep_runs,
)

pytestmark = pytest.mark.slow  # 13 trainer subprocesses: about 3 minutes on 2 CPU cores


def test_sweep_smoke_produces_every_artefact_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    out = tmp_path / "sweep"
    results = run_recipe.main(["--mode", "sweep-smoke", "--output_dir", str(out), "--max_parallel", "2"])
    settings = SWEEP_MODES["sweep-smoke"]

    folder = out / "results"
    for name in ("results.json", "results.md", *SWEEP_PLOTS):
        assert (folder / name).stat().st_size > 0, name
    saved = json.loads((folder / "results.json").read_text())
    assert set(saved) == {
        "mode",
        "settings",
        "autoencoder_config",
        "usit_config",
        "prefix_step",
        "augmented_passes_per_step",
        "autoencoders",
        "runs",
        "reconstruction",
        "classifier",
        "diffusion",
        "stage_seconds",
        "job_seconds",
        "max_parallel",
    }
    assert saved["mode"] == "sweep-smoke" and saved["diffusion"] == results["diffusion"]
    markdown = (folder / "results.md").read_text()
    for heading in (
        "## Reconstruction vs c",
        "## Classifier",
        "## Generation vs c",
        "equal steps: step 4",
        "equal passes (compute): passes 4",
        "## Every checkpoint",
        "## Wall time per stage",
    ):
        assert heading in markdown, heading
    assert "are not results" in markdown

    # reconstruction of every autoencoder at its prefixes, all finite
    for ae in sweep_autoencoders(settings):
        table = results["reconstruction"][ae.name]
        assert sorted(map(int, table)) == sweep_reconstruction_prefixes(ae, settings)
        assert all(math.isfinite(v["psnr"]) and 0 <= v["ssim"] <= 1 for v in table.values())
        # the scaling factor was measured on every training image, and the diffusion runs decode with it
        metadata = json.loads((sweep_cache_dir(out, ae) / "metadata.json").read_text())
        assert metadata["scaling_factor_measurement"]["num_images"] == settings.num_train_images
    assert set(results["classifier"]["fd_floor"]) == {ae.name for ae in sweep_autoencoders(settings)}

    # every run evaluated at every checkpoint and guidance scale; passes = steps x passes per step
    every = settings.usit_steps // settings.usit_checkpoints
    expected = sorted(
        (run.name, run.seed, every * k, g)
        for run in sweep_runs(settings)
        for k in range(1, settings.usit_checkpoints + 1)
        for g in EVAL_GUIDANCE_SCALES
    )
    rows = results["diffusion"]
    assert sorted((r["run"], r["seed"], r["step"], r["guidance_scale"]) for r in rows) == expected
    for row in rows:
        assert row["passes"] == row["step"] * results["runs"][row["run"]]["passes_per_step"]
        assert 0 <= row["class_accuracy"] <= 1 and math.isfinite(row["classifier_fd"])
    assert set(results["stage_seconds"]) >= {"autoencoders", "latent caches", "diffusion"}

    # the trainers ran the objectives the job list asked for
    for run in sweep_runs(settings):
        config = json.loads((run.folder(out) / "training_config.json").read_text())
        assert config["augmented"] is (run.objective != "plain"), run.name
        assert config["args"]["channel_sampling"] == ("per_sample" if run.objective == "per_sample" else "per_pass")
        assert config["args"]["num_channel_samples"] == (2 if run.objective == "per_pass" else 1)

    # the same command again skips every job and every evaluated checkpoint, and gives the same numbers
    again = run_recipe.main(["--mode", "sweep-smoke", "--output_dir", str(out), "--max_parallel", "2"])
    assert again["reconstruction"] == results["reconstruction"]
    assert again["diffusion"] == results["diffusion"]
