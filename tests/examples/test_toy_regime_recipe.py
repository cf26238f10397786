"""The toy recipe's regime mode (examples/toy/run_recipe.py --mode regime-smoke) end to end with the real trainers:
every artefact, every evaluation row with its compute, the objectives and resolution the trainers really ran, the
report rewritten from results.json, and a resumed second run."""

from __future__ import annotations

import json
import math

import pytest

from examples.toy import run_recipe
from examples.toy.report.regime import REGIME_PLOTS
from examples.toy.toy_evaluation import sweep_reconstruction_prefixes
from examples.toy.toy_settings import (
    EVAL_GUIDANCE_SCALES,
    REGIME_ARMS,
    REGIME_MODES,
    REGIME_USIT_CONFIG,
    sweep_cache_dir,
)

pytestmark = pytest.mark.slow  # 11 trainer subprocesses at 64 px: about 2 minutes on 2 CPU cores


def test_regime_smoke_produces_every_artefact_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    out = tmp_path / "regime"
    results = run_recipe.main(["--mode", "regime-smoke", "--output_dir", str(out), "--max_parallel", "2"])
    settings = REGIME_MODES["regime-smoke"]

    folder = out / "results"
    for name in ("results.json", "results.md", *REGIME_PLOTS):
        assert (folder / name).stat().st_size > 0, name
    saved = json.loads((folder / "results.json").read_text())
    assert saved["mode"] == "regime-smoke" and saved["diffusion"] == results["diffusion"]
    assert saved["headline"] == results["headline"] and saved["usit_config"] == REGIME_USIT_CONFIG
    assert set(saved["arms"]) == set(REGIME_ARMS) and saved["resolution"] == 64 and saved["compression"] == 24
    markdown = (folder / "results.md").read_text()
    for heading in (
        "## Reconstruction on held-out images",
        "## Classifier",
        "equal steps: step 4",
        "equal compute (passes x tokens): compute 16",
        "## Speed-ups",
        "## The headline",
        "## Every checkpoint",
        "are not results",
    ):
        assert heading in markdown, heading
    assert results["headline"]["verdict"] == "cannot tell"  # 4 steps: near chance, and said so

    # reconstruction of every autoencoder at its prefixes, all finite; 64 px data and latents of equal size
    for ae in settings.autoencoders():
        table = results["reconstruction"][ae.name]
        assert sorted(map(int, table)) == sweep_reconstruction_prefixes(ae, settings)
        assert all(math.isfinite(v["psnr"]) and 0 <= v["ssim"] <= 1 for v in table.values())
        metadata = json.loads((sweep_cache_dir(out, ae) / "metadata.json").read_text())
        assert metadata["scaling_factor_measurement"]["num_images"] == settings.num_train_images
        side = 64 // ae.spatial_compression
        assert metadata["latent_shape"] == [ae.latent_channels, side, side]

    # every arm evaluated at every checkpoint and guidance scale; compute = passes x tokens
    every = settings.usit_steps // settings.usit_checkpoints
    expected = sorted(
        (settings.arm(arm, seed).name, seed, every * k, g)
        for arm in REGIME_ARMS
        for seed in settings.seeds
        for k in range(1, settings.usit_checkpoints + 1)
        for g in EVAL_GUIDANCE_SCALES
    )
    rows = results["diffusion"]
    assert sorted((r["run"], r["seed"], r["step"], r["guidance_scale"]) for r in rows) == expected
    compute = {results["runs"][run]["arm"]: entry["compute_per_step"] for run, entry in results["runs"].items()}
    assert compute == {"i": 16, "ii": 4, "iii": 4, "iv": 8, "v": 4}
    for row in rows:
        assert row["passes"] == row["step"] * results["runs"][row["run"]]["passes_per_step"]
        assert 0 <= row["class_accuracy"] <= 1 and math.isfinite(row["classifier_fd"])

    # the trainers ran the objectives, the model and the resolution the job list asked for
    for arm in REGIME_ARMS:
        run = settings.arm(arm, 0)
        config = json.loads((run.folder(out) / "training_config.json").read_text())
        assert config["augmented"] is (run.objective != "plain"), run.name
        assert config["args"]["num_channel_samples"] == (2 if run.objective == "per_pass" else 1)
        transformer = json.loads((run.folder(out) / "pipeline" / "transformer" / "config.json").read_text())
        assert transformer["in_channels"] == run.autoencoder.latent_channels
        assert transformer["attention_head_dim"] * transformer["num_attention_heads"] == 256
    vae = json.loads((out / "ae_plain_f16c32" / "training_config.json").read_text())
    assert vae["args"]["resolution"] == 64

    # --report_only rewrites the report from results.json; the same command again skips every job
    rewritten = run_recipe.main(["--mode", "regime-smoke", "--output_dir", str(out), "--report_only"])
    assert rewritten["headline"] == results["headline"]
    again = run_recipe.main(["--mode", "regime-smoke", "--output_dir", str(out), "--max_parallel", "2"])
    assert again["reconstruction"] == results["reconstruction"]
    assert again["diffusion"] == results["diffusion"]
