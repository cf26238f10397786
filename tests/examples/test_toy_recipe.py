"""The toy DC-AE 1.5 recipe (examples/toy/run_recipe.py) end to end in smoke mode, and the bundled default pipeline
(dc_ae_hf/assets/toy-dcae15-shapes) that its default mode produced."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from dc_ae_hf.data.shapes import SHAPE_CLASSES
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from examples.toy import run_recipe
from examples.toy.toy_settings import CHANNEL_CHOICES, EVAL_GUIDANCE_SCALES, MODES, RUNS, usit_run_dir

BUNDLED = REPO_ROOT / "dc_ae_hf" / "assets" / "toy-dcae15-shapes"


def test_smoke_recipe_produces_every_artefact(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, bundle = tmp_path / "toy", tmp_path / "bundle"
    results = run_recipe.main(
        ["--mode", "smoke", "--output_dir", str(out), "--bundle_to", str(bundle), "--max_parallel", "3"]
    )

    folder = out / "results"
    for name in (
        "plots.png",
        "prefix_grid_structured.png",
        "prefix_grid_plain.png",
        "samples_struct_aug.png",
        "results.md",
        "results.json",
    ):
        assert (folder / name).stat().st_size > 0, name
    assert json.loads((folder / "results.json").read_text())["mode"] == "smoke"
    assert "plain, decoder fine-tuned for c'" in (folder / "results.md").read_text()

    # reconstruction numbers for every c' (structured, plain zeroed) and the fine-tuned prefix, all finite
    ae = results["autoencoders"]
    assert sorted(map(int, ae["structured"])) == CHANNEL_CHOICES
    assert sorted(map(int, ae["plain_zeroed"])) == CHANNEL_CHOICES
    assert sorted(map(int, ae["plain_finetuned"])) == list(MODES["smoke"].finetune_channels)
    for table in ae.values():
        assert all(math.isfinite(v["psnr"]) and 0 <= v["ssim"] <= 1 for v in table.values())
    # the fine-tuned plain AE has the single prefix it was fine-tuned for
    tuned = AutoencoderDC15.load_config(out / "ae_plain_ft_c8" / "vae_ema")
    assert tuned["latent_channel_choices"] == [8]
    finetune = json.loads((out / "ae_plain_ft_c8" / "training_config.json").read_text())
    assert finetune["trainable_modules"] == ["decoder"]  # Fig. 3 protocol: the decoder alone

    # diffusion: every run evaluated at every checkpoint; augmented passes = 2 x steps
    settings = MODES["smoke"]
    every = settings.usit_steps // settings.usit_checkpoints
    rows = results["diffusion"]
    assert sorted((r["run"], r["step"], r["guidance_scale"]) for r in rows) == sorted(
        (run, every * k, g)
        for run in RUNS
        for k in range(1, settings.usit_checkpoints + 1)
        for g in EVAL_GUIDANCE_SCALES
    )
    for row in rows:
        assert row["passes"] == row["step"] * (2 if row["run"] == "struct_aug" else 1)
        assert 0 <= row["class_accuracy"] <= 1 and math.isfinite(row["classifier_fd"])
    assert set(results["stage_seconds"]) >= {"autoencoders", "latent caches", "diffusion"}

    # the augmented run really trained with prefixes; the baselines on the full latent only
    for run, augmented in (("struct_aug", True), ("struct_plain", False), ("plain_plain", False)):
        config = json.loads((usit_run_dir(out, run, 0) / "training_config.json").read_text())
        assert config["augmented"] is augmented
    # the bundled copy is a loadable pipeline with the shape names
    pipe = DCAE15Pipeline.from_pretrained(bundle)
    assert pipe.get_label_ids("star") == [SHAPE_CLASSES.index("star")]
    card = (bundle / "README.md").read_text()  # says where it came from, how to load it and what it scores
    assert f'DCAE15Pipeline.from_pretrained("{bundle}")' in card and "run_recipe.py --mode smoke" in card
    assert "class accuracy" in card and str(out) not in card
    assert not any(str(out) in f.read_text() for f in bundle.rglob("*.json"))  # no local paths in the configs

    # a second run skips every stage (resumable) and gives the same autoencoder numbers
    again = run_recipe.main(["--mode", "smoke", "--output_dir", str(out), "--max_parallel", "3"])
    assert again["autoencoders"] == results["autoencoders"]
    assert again["diffusion"] == results["diffusion"]


@pytest.fixture(scope="module")
def bundled_pipeline():
    if not (BUNDLED / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the bundled pipeline is missing: run python -m examples.toy.run_recipe --mode default --bundle_to {BUNDLED}"
        )
    pipe = DCAE15Pipeline.from_pretrained(BUNDLED)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_bundled_pipeline_has_shape_labels(bundled_pipeline):
    config = bundled_pipeline.config
    assert {int(k): v for k, v in config.id2label.items()} == dict(enumerate(SHAPE_CLASSES))
    assert bundled_pipeline.transformer.config.num_classes == len(SHAPE_CLASSES)
    assert bundled_pipeline.vae.config.latent_channel_choices == [4, 8, 12, 16, 20, 24, 28, 32]
    size = sum(f.stat().st_size for f in BUNDLED.rglob("*.safetensors"))
    assert size < 20 * 2**20, f"bundled weights are {size / 2**20:.1f} MiB"


def test_bundled_pipeline_samples_deterministically(bundled_pipeline):
    def sample(seed):
        return bundled_pipeline(
            ["circle", "square", "star"],
            guidance_scale=1.0,
            solver="euler",
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
        ).images

    first, second, other = sample(0), sample(0), sample(1)
    assert first.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
