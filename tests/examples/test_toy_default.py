"""The toy recipe's built-in-default mode (examples/toy/run_recipe.py --mode default / default-smoke): its settings,
the trainer commands it builds, its report and bundle, and the smoke mode end to end with the real trainers."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from PIL import Image

from dc_ae_hf.data.shapes import SHAPE_CLASSES
from dc_ae_hf.metrics.classifier import train_classifier
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from examples.toy import run_recipe, score_pipeline, toy_evaluation, toy_stages
from examples.toy.report.card import write_bundle
from examples.toy.report.default import default_results_summary, write_default_report
from examples.toy.toy_settings import (
    AUTOENCODER_CONFIG,
    CHANNEL_CHOICES,
    DEFAULT_MODES,
    DEFAULT_RUN,
    DEFAULT_USIT_CONFIG,
    EVAL_GUIDANCE_SCALES,
    DefaultSettings,
)

SMOKE = DEFAULT_MODES["default-smoke"]  # usit_steps 4, 2 checkpoints, seed 0


def _flags(command: list[str]) -> dict[str, list[str]]:
    """A trainer command line as flag -> its values (an empty list for a bare flag)."""
    flags: dict[str, list[str]] = {}
    for item in command[2:]:
        if item.startswith("--"):
            current = flags.setdefault(item, [])
        else:
            current.append(item)
    return flags


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("target_accuracy", 1.5, "target_accuracy"),
        ("target_accuracy", 0, "target_accuracy"),
        ("seed", -1, "seed"),
        ("usit_checkpoints", 5, "usit_checkpoints"),
        ("num_train_images", 5, "num_train_images"),
        ("classifier_steps", 0, "classifier_steps"),
        ("usit_learning_rate", float("nan"), "usit_learning_rate"),
        ("usit_warmup_steps", 0, "usit_warmup_steps"),
        ("usit_warmup_steps", 5, "usit_warmup_steps"),  # more than usit_steps
    ],
)
def test_default_settings_refuse_bad_fields(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMOKE, **{field: value})


def test_default_settings_seeds_and_budget():
    assert SMOKE.seeds == (0,)
    default = DEFAULT_MODES["default"]
    assert default.target_accuracy == 0.8 and default.usit_steps % default.usit_checkpoints == 0
    assert isinstance(default, DefaultSettings)


def test_default_jobs_train_the_larger_usit_with_one_pass_augmentation(tmp_path):
    settings = DEFAULT_MODES["default"]
    toy_stages.write_configs(tmp_path, DEFAULT_USIT_CONFIG)
    assert json.loads((tmp_path / "configs" / "usit.json").read_text()) == DEFAULT_USIT_CONFIG
    (autoencoder,) = toy_stages.autoencoder_jobs(tmp_path, settings, ("ae_struct",))
    assert _flags(autoencoder.command)["--latent_channel_choices"] == [str(c) for c in CHANNEL_CHOICES]
    assert _flags(autoencoder.command)["--max_train_steps"] == [str(settings.ae_steps)]

    cache, usit = toy_stages.default_jobs(tmp_path, settings)
    # the cache is done when its last shard exists: 20000 images in shards of 1024 -> shard 19
    assert _flags(cache.command)["--shard_size"] == ["1024"]
    assert cache.done_marker.name == "shard-00019.safetensors"
    assert usit.after == (cache.name,)
    flags = _flags(usit.command)
    # the plain objective (the pilot's choice, results/default/pilot.md): the full latent only
    assert flags["--no_augmented"] == []
    assert not {"--channel_sampling", "--always_include_full", "--latent_channel_choices"} & set(flags)
    assert flags["--model_config"] == [str(tmp_path / "configs" / "usit.json")]
    assert flags["--max_train_steps"] == ["32000"] and flags["--checkpointing_steps"] == ["2000"]
    # the warm-up of the 24000-step run it continued (a resume refuses a changed one); 5% when not given
    assert flags["--lr_warmup_steps"] == flags["--ema_warmup_steps"] == ["1200"]
    _, smoke_usit = toy_stages.default_jobs(tmp_path, SMOKE)
    assert _flags(smoke_usit.command)["--lr_warmup_steps"] == [str(max(1, SMOKE.usit_steps // 20))]
    assert usit.done_marker == tmp_path / "usit" / f"{DEFAULT_RUN}_seed0" / "pipeline" / "model_index.json"
    with pytest.raises(ValueError, match="names"):
        toy_stages.autoencoder_jobs(tmp_path, settings, ("ae_other",))


def _rows(final_guided: float) -> list[dict]:
    rows = []
    for step, accuracy in ((2, 0.3), (4, final_guided)):
        for scale in (1.0, 3.0):
            rows.append(
                {
                    "run": DEFAULT_RUN,
                    "seed": 0,
                    "step": step,
                    "passes": step,
                    "guidance_scale": scale,
                    "class_accuracy": accuracy if scale == 3.0 else 0.2,
                    "classifier_fd": 10.0 / step,
                    "eval_seconds": 1.0,
                }
            )
    return rows


def _summary(final_guided: float) -> dict:
    ae = {"structured": {str(c): {"psnr": 20.0 + c / 8, "ssim": 0.5 + c / 100} for c in CHANNEL_CHOICES}}
    classifier = {
        "accuracy": {"held-out real images": 0.99, "ae_struct": 0.97},
        "fd_floor": {"ae_struct": 1.2},
        "steps": 5,
        "trained_on": ["ae_struct"],
    }
    return default_results_summary(
        "default-smoke", SMOKE, ae, classifier, _rows(final_guided), {"diffusion": 12.0}, {}
    )


@pytest.mark.parametrize("final_guided, verdict", [(0.85, "met (0.850)"), (0.62, "missed by 0.180 (0.620)")])
def test_default_report_states_the_target(tmp_path, final_guided, verdict):
    results = _summary(final_guided)
    assert results["target_met"] is (final_guided >= 0.8)
    assert results["final"]["3.0"]["class_accuracy"] == final_guided
    write_default_report(tmp_path, results)
    text = (tmp_path / "results.md").read_text()
    assert f"Target (guided class accuracy >= 0.8 at the final step): {verdict}." in text
    assert "| 4 | 0.200 | 2.5 | " + f"{final_guided:.3f} | 2.5 |" in text  # one row per checkpoint
    assert "| held-out reconstructions (ae_struct) | 0.970 |" in text
    assert json.loads((tmp_path / "results.json").read_text())["run"] == DEFAULT_RUN
    with Image.open(tmp_path / "curves.png") as plot:
        assert plot.size == (11 * 90, 4 * 90)


def test_default_report_says_when_the_final_step_is_not_evaluated(tmp_path):
    results = _summary(0.9)
    results["diffusion"] = [r for r in results["diffusion"] if r["step"] != 4]
    results["final"], results["target_met"] = {}, False
    write_default_report(tmp_path, results)
    assert "The final step 4 has not been evaluated." in (tmp_path / "results.md").read_text()


def test_bundle_of_the_default_run_states_its_training_and_target(tmp_path):
    torch.manual_seed(0)
    transformer = USiTTransformer2DModel(**DEFAULT_USIT_CONFIG, sample_size=4, in_channels=32, num_classes=10)
    vae = AutoencoderDC15(**{**AUTOENCODER_CONFIG, "latent_channel_choices": CHANNEL_CHOICES})
    source = tmp_path / "pipeline"
    DCAE15Pipeline(transformer.eval(), vae.eval(), id2label=dict(enumerate(SHAPE_CLASSES))).save_pretrained(source)
    results = _summary(0.62)
    target = tmp_path / "bundle"
    write_bundle(
        source,
        target,
        "default-smoke",
        SMOKE,
        results["autoencoders"],
        results["diffusion"],
        DEFAULT_RUN,
        results["classifier"],
    )
    card = (target / "README.md").read_text()
    assert f"`examples/toy/run_recipe.py --mode default-smoke`, run `{DEFAULT_RUN}`, seed 0" in card
    assert "trained with the plain diffusion objective on the procedural 32 px shapes" in card
    assert "the full latent only, the one the pipeline samples" in card
    assert "5 steps; 0.990 accuracy on held-out real images" in card
    assert "Target: guided (CFG 3) class accuracy >= 0.8; measured 0.620: missed by 0.180." in card
    assert "requested shape class 62% of the time at guidance 3" in card
    assert "6 layers (7 blocks), hidden 128" in card
    with pytest.raises(ValueError, match="cannot be bundled"):
        write_bundle(source, tmp_path / "x", "default-smoke", SMOKE, {}, [], "plain_plain")
    assert not (tmp_path / "x").exists()


def test_default_smoke_recipe_end_to_end_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, bundle = tmp_path / "toy", tmp_path / "bundle"
    argv = ["--mode", "default-smoke", "--output_dir", str(out), "--bundle_to", str(bundle)]
    results = run_recipe.main(argv)

    folder = out / "results"
    for name in ("results.json", "results.md", "curves.png", "samples.png"):
        assert (folder / name).stat().st_size > 0, name
    with Image.open(folder / "samples.png") as grid:  # one row per class, 8 samples each, 32 px cells enlarged 3x
        assert grid.size == ((8 * 34 + 2) * 3, (10 * 34 + 2) * 3)
    assert sorted(map(int, results["autoencoders"]["structured"])) == CHANNEL_CHOICES
    rows = results["diffusion"]
    assert sorted((r["run"], r["step"], r["guidance_scale"]) for r in rows) == sorted(
        (DEFAULT_RUN, step, g) for step in (2, 4) for g in EVAL_GUIDANCE_SCALES
    )
    assert all(r["passes"] == r["step"] and math.isfinite(r["classifier_fd"]) for r in rows)
    assert set(results["final"]) == {"1.0", "3.0"}
    assert results["classifier"]["trained_on"] == ["ae_struct"]
    # the trainer really ran the plain objective with the larger USiT
    config = json.loads((out / "usit" / f"{DEFAULT_RUN}_seed0" / "training_config.json").read_text())
    assert config["augmented"] is False
    pipe = DCAE15Pipeline.from_pretrained(bundle)
    assert pipe.transformer.config.num_layers == DEFAULT_USIT_CONFIG["num_layers"]
    assert pipe.get_label_ids("star") == [SHAPE_CLASSES.index("star")]
    assert "run_recipe.py --mode default-smoke" in (bundle / "README.md").read_text()
    assert not (out / "ae_plain").exists()  # the default trains the structured autoencoder only

    assert (out / "eval" / "classifier" / "info.json").is_file()  # the judge is kept for re-runs and scoring

    again = run_recipe.main(argv)  # every stage is skipped, the evaluation rows and the classifier are read back
    assert again["diffusion"] == rows and again["autoencoders"] == results["autoencoders"]
    assert again["classifier"] == results["classifier"]

    # score_pipeline.py judges the bundled pipeline exactly as the recipe judged its final checkpoint
    scored = score_pipeline.main(
        ["--output_dir", str(out), "--pipeline", str(bundle), "--num_samples", "20", "--sample_steps", "2"]
    )
    for row in scored:
        final = results["final"][str(row["guidance_scale"])]
        assert row["class_accuracy"] == pytest.approx(final["class_accuracy"])
        assert row["classifier_fd"] == pytest.approx(final["classifier_fd"], rel=1e-4)
        per_class = row["class_accuracy_per_class"]  # 2 samples per class: the overall accuracy is their mean
        assert list(per_class) == list(SHAPE_CLASSES)
        assert sum(per_class.values()) / len(per_class) == pytest.approx(row["class_accuracy"])
        assert row["judge"] == "recipe"

    # the second judge: trained once on the real training images (width 48, its own seed), kept, then reused
    argv = ["--output_dir", str(out), "--pipeline", str(bundle), "--num_samples", "20", "--sample_steps", "2"]
    argv += ["--judge", "real_images", "--judge_seed", "3", "--judge_steps", "3"]
    second = score_pipeline.main(argv)
    info = json.loads((out / "eval" / "judge_real_images_seed3" / "info.json").read_text())
    assert info["trained_on"] == "real training images" and info["width"] == 48 and info["seed"] == 3
    assert [row["judge"] for row in second] == ["real_images seed 3"] * len(EVAL_GUIDANCE_SCALES)
    assert all(row["judge_heldout_accuracy"] == info["heldout_accuracy"] for row in second)
    assert score_pipeline.main(argv) == second  # the kept judge, the same seeded samples
    with pytest.raises(SystemExit):
        score_pipeline.main([*argv[:-1], "4"])
    assert "--judge_steps=4 is not allowed: the judge kept in" in capsys.readouterr().err


def test_score_pipeline_refuses_a_folder_without_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        score_pipeline.main(["--output_dir", str(tmp_path), "--pipeline", str(tmp_path)])
    assert "has no eval/classifier/config.json: run --mode default there first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        score_pipeline.main(["--output_dir", str(tmp_path), "--pipeline", str(tmp_path), "--num_samples", "0"])
    assert "--num_samples" in capsys.readouterr().err
    # a run folder that has the classifier and the data, but a --pipeline that is not a pipeline folder
    (tmp_path / "eval" / "classifier").mkdir(parents=True)
    (tmp_path / "eval" / "classifier" / "config.json").write_text("{}")
    (tmp_path / "data" / "heldout" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit):
        score_pipeline.main(["--output_dir", str(tmp_path), "--pipeline", str(tmp_path / "data")])
    assert "is not a pipeline folder (no model_index.json)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        score_pipeline.main(["--output_dir", str(tmp_path), "--pipeline", str(tmp_path), "--seed", "-1"])
    assert "--seed" in capsys.readouterr().err
    # the second judge is trained on the training images: a run folder without them is refused before anything runs
    with pytest.raises(SystemExit):
        score_pipeline.main(["--output_dir", str(tmp_path), "--pipeline", str(tmp_path), "--judge", "real_images"])
    assert "has no data/train/train: run --mode default there first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        score_pipeline.main(["--output_dir", str(tmp_path), "--pipeline", str(tmp_path), "--judge_steps", "0"])
    assert "--judge_steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        score_pipeline.main(["--output_dir", str(tmp_path), "--pipeline", str(tmp_path), "--judge_seed", "-1"])
    assert "--judge_seed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        score_pipeline.main(["--output_dir", str(tmp_path), "--pipeline", str(tmp_path), "--judge", "other"])
    assert "--judge: invalid choice: 'other'" in capsys.readouterr().err


def test_saved_classifier_trains_once_then_loads(tmp_path):
    images, labels = torch.rand(20, 3, 32, 32) * 2 - 1, torch.arange(20) % 10
    calls = []

    def train():
        calls.append(1)
        return train_classifier(images, labels, 10, steps=2), {}, {"steps": 2, "accuracy": {"x": 0.5}}

    first, info = toy_evaluation.saved_classifier(tmp_path / "classifier", train)
    second, again = toy_evaluation.saved_classifier(tmp_path / "classifier", train)
    assert len(calls) == 1 and info == again == {"steps": 2, "accuracy": {"x": 0.5}}
    with torch.no_grad():
        torch.testing.assert_close(first(images), second(images), rtol=0, atol=0)
