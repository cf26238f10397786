"""The toy recipe's evaluation (examples/toy/toy_evaluation.py) on randomly initialised models of the recipe's
sizes and a small exported shapes imagefolder: loading, reconstruction, the autoencoder table, the classifier and
the per-checkpoint diffusion rows with their resumable cache."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dc_ae_hf.data.shapes import SHAPE_CLASSES, export_imagefolder
from dc_ae_hf.metrics.classifier import SmallImageClassifier
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from examples.toy import toy_evaluation
from examples.toy.toy_settings import (
    AUTOENCODER_CONFIG,
    CHANNEL_CHOICES,
    EVAL_GUIDANCE_SCALES,
    LATENT_CHANNELS,
    MODES,
    RUNS,
    USIT_CONFIG,
    usit_run_dir,
)

SETTINGS = dataclasses.replace(MODES["smoke"], num_samples=20, sample_steps=2, classifier_steps=2)


def _autoencoder(seed: int, choices=CHANNEL_CHOICES) -> AutoencoderDC15:
    torch.manual_seed(seed)
    return AutoencoderDC15(**{**AUTOENCODER_CONFIG, "latent_channel_choices": choices}).eval()


def _transformer(seed: int) -> USiTTransformer2DModel:
    torch.manual_seed(seed)
    config = {**USIT_CONFIG, "sample_size": 4, "in_channels": LATENT_CHANNELS, "num_classes": len(SHAPE_CLASSES)}
    return USiTTransformer2DModel(**config).eval()


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    return export_imagefolder(tmp_path_factory.mktemp("shapes"), 30, seed=0)


def test_load_imagefolder_sorts_by_class_and_scales_to_unit_range(imagefolder, tmp_path):
    images, labels = toy_evaluation.load_imagefolder(imagefolder)
    assert images.shape == (30, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == sorted(labels.tolist()) and labels.bincount().tolist() == [3] * len(SHAPE_CLASSES)
    first = sorted((imagefolder / "train" / SHAPE_CLASSES[0]).glob("*.png"))[0]
    pixels = np.asarray(Image.open(first).convert("RGB"), dtype=np.float32)
    np.testing.assert_allclose(images[0].permute(1, 2, 0).numpy(), pixels / 127.5 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="no images under .*expected an exported shapes imagefolder"):
        toy_evaluation.load_imagefolder(tmp_path)


def test_reconstruct_decodes_the_full_latent_clamped(imagefolder):
    images, _ = toy_evaluation.load_imagefolder(imagefolder)
    vae = _autoencoder(0)
    recon = toy_evaluation.reconstruct(vae, images, batch_size=7)  # several batches
    with torch.no_grad():
        expected = vae.decode(vae.encode(images).latent).sample.clamp(-1, 1)
    torch.testing.assert_close(recon, expected, rtol=1e-5, atol=1e-5)
    assert recon.shape == images.shape and recon.abs().max() <= 1


def test_evaluate_autoencoders_gives_every_prefix(imagefolder, tmp_path):
    images = toy_evaluation.load_imagefolder(imagefolder)[0][::3]  # one image per class
    _autoencoder(0).save_pretrained(tmp_path / "ae_struct" / "vae_ema")
    _autoencoder(1, [LATENT_CHANNELS]).save_pretrained(tmp_path / "ae_plain" / "vae_ema")
    _autoencoder(2, [8]).save_pretrained(tmp_path / "ae_plain_ft_c8" / "vae_ema")
    results = toy_evaluation.evaluate_autoencoders(tmp_path, SETTINGS, images)
    assert list(results) == ["structured", "plain_zeroed", "plain_finetuned"]
    assert list(results["structured"]) == [str(c) for c in CHANNEL_CHOICES] == list(results["plain_zeroed"])
    assert list(results["plain_finetuned"]) == ["8"]
    for table in results.values():
        for values in table.values():
            assert set(values) == {"psnr", "ssim"} and math.isfinite(values["psnr"]) and -1 <= values["ssim"] <= 1


def test_evaluate_classifier_returns_model_references_and_floor(imagefolder):
    images, labels = toy_evaluation.load_imagefolder(imagefolder)
    vaes = {"ae_struct": _autoencoder(0), "ae_plain": _autoencoder(1, [LATENT_CHANNELS])}
    heldout = (images[::3], labels[::3])
    model, references, info = toy_evaluation.evaluate_structured_classifier(vaes, (images, labels), heldout, SETTINGS)
    assert isinstance(model, SmallImageClassifier) and not model.training
    for ae, vae in vaes.items():
        torch.testing.assert_close(references[ae], toy_evaluation.reconstruct(vae, heldout[0]))
    assert list(info["accuracy"]) == [
        "held-out real images",
        "held-out structured-AE reconstructions",
        "held-out plain-AE reconstructions",
    ]
    assert all(0 <= value <= 1 for value in info["accuracy"].values())
    assert set(info["fd_floor"]) == {"ae_struct", "ae_plain"} and all(map(math.isfinite, info["fd_floor"].values()))
    assert info["steps"] == SETTINGS.classifier_steps


def test_the_scoring_classifier_is_saved_so_a_resumed_run_scores_with_the_same_one(imagefolder, tmp_path, capsys):
    images, labels = toy_evaluation.load_imagefolder(imagefolder)
    vaes = {"ae_struct": _autoencoder(0), "ae_plain": _autoencoder(1, [LATENT_CHANNELS])}
    heldout = (images[::3], labels[::3])
    # rows kept by a run whose classifier was never saved are moved aside, not mixed with a new classifier's
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "diffusion.json").write_text("[]")
    trained = []

    def train():
        trained.append(1)
        return toy_evaluation.evaluate_structured_classifier(vaes, (images, labels), heldout, SETTINGS)

    first, references, info = toy_evaluation.scoring_classifier(tmp_path, vaes, heldout[0], train)
    assert not (tmp_path / "eval" / "diffusion.json").exists()
    assert (tmp_path / "eval" / "diffusion.unsaved-classifier.json").read_text() == "[]"
    assert "were scored by a classifier that was not saved" in capsys.readouterr().out
    assert (tmp_path / "eval" / "classifier" / "info.json").is_file() and trained == [1]
    for ae, vae in vaes.items():
        torch.testing.assert_close(references[ae], toy_evaluation.reconstruct(vae, heldout[0]))

    # resumed: the saved classifier, not a new one; kept rows stay where they are
    (tmp_path / "eval" / "diffusion.json").write_text("[]")
    again, _, info_again = toy_evaluation.scoring_classifier(tmp_path, vaes, heldout[0], train)
    assert trained == [1] and info_again == json.loads(json.dumps(info))
    assert (tmp_path / "eval" / "diffusion.json").is_file()
    with torch.no_grad():
        torch.testing.assert_close(again(heldout[0]), first(heldout[0]))

    # the classifier lost again: the new rows go aside under a free name, the earlier aside file is kept
    shutil.rmtree(tmp_path / "eval" / "classifier")
    (tmp_path / "eval" / "diffusion.json").write_text('[{"step": 2}]')
    toy_evaluation.scoring_classifier(tmp_path, vaes, heldout[0], train)
    assert (tmp_path / "eval" / "diffusion.unsaved-classifier.json").read_text() == "[]"
    assert (tmp_path / "eval" / "diffusion.unsaved-classifier.2.json").read_text() == '[{"step": 2}]'
    assert trained == [1, 1]


def test_generate_is_class_balanced_and_seeded():
    pipe = DCAE15Pipeline(transformer=_transformer(0), vae=_autoencoder(0))
    pipe.set_progress_bar_config(disable=True)
    images, labels = toy_evaluation.generate(pipe, 12, steps=2, seed=5, guidance_scale=3.0)
    assert images.shape == (12, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert labels.tolist() == [i % len(SHAPE_CLASSES) for i in range(12)]
    again, _ = toy_evaluation.generate(pipe, 12, steps=2, seed=5, guidance_scale=3.0)
    other, _ = toy_evaluation.generate(pipe, 12, steps=2, seed=6, guidance_scale=3.0)
    torch.testing.assert_close(images, again)
    assert not torch.equal(images, other)


def test_evaluate_diffusion_scores_every_checkpoint_once(tmp_path, monkeypatch):
    _autoencoder(0).save_pretrained(tmp_path / "ae_struct" / "vae_diffusion")
    _autoencoder(1, [LATENT_CHANNELS]).save_pretrained(tmp_path / "ae_plain" / "vae_diffusion")
    steps = {"struct_aug": (10, 2), "struct_plain": (2,), "plain_plain": (4,)}  # listed in step order, not by name
    for k, run in enumerate(RUNS):
        for step in steps[run]:
            _transformer(k).save_pretrained(usit_run_dir(tmp_path, run, 0) / f"checkpoint-{step}" / "transformer_ema")
        (usit_run_dir(tmp_path, run, 0) / "checkpoint-6.tmp").mkdir()  # an unfinished save: not a checkpoint
    torch.manual_seed(0)
    references = {ae: torch.rand(20, 3, 32, 32) * 2 - 1 for ae in ("ae_struct", "ae_plain")}
    classifier = SmallImageClassifier(num_classes=len(SHAPE_CLASSES)).eval()

    rows = toy_evaluation.evaluate_diffusion(tmp_path, SETTINGS, classifier, references)
    assert [(r["run"], r["step"], r["guidance_scale"]) for r in rows] == [
        (run, step, g) for run in RUNS for step in sorted(steps[run]) for g in EVAL_GUIDANCE_SCALES
    ]
    for row in rows:
        assert set(row) == {"run", "seed", "step", "passes", "guidance_scale"} | {
            "class_accuracy",
            "classifier_fd",
            "eval_seconds",
        }
        assert row["passes"] == row["step"] * (2 if row["run"] == "struct_aug" else 1) and row["seed"] == 0
        assert 0 <= row["class_accuracy"] <= 1 and math.isfinite(row["classifier_fd"])
    cache = tmp_path / "eval" / "diffusion.json"
    assert json.loads(cache.read_text()) == rows

    # resumed: only the rows missing from the cache are computed
    json.dump([r for r in rows if (r["run"], r["step"]) != ("plain_plain", 4)], cache.open("w"))
    calls = []
    generate = toy_evaluation.generate
    monkeypatch.setattr(
        toy_evaluation, "generate", lambda *args, **kwargs: calls.append(args) or generate(*args, **kwargs)
    )
    again = toy_evaluation.evaluate_diffusion(tmp_path, SETTINGS, classifier, references)
    assert len(calls) == len(EVAL_GUIDANCE_SCALES)
    strip = [{k: v for k, v in r.items() if k != "eval_seconds"} for r in rows]
    assert [{k: v for k, v in r.items() if k != "eval_seconds"} for r in again] == strip  # same numbers
    calls.clear()
    assert toy_evaluation.evaluate_diffusion(tmp_path, SETTINGS, classifier, references) == again and not calls


def test_class_samples_follow_the_class_order(tmp_path):
    pipe = DCAE15Pipeline(transformer=_transformer(0), vae=_autoencoder(0), id2label=dict(enumerate(SHAPE_CLASSES)))
    pipe.save_pretrained(tmp_path / "pipeline")
    samples = toy_evaluation.class_samples(tmp_path / "pipeline", per_class=2, steps=2, guidance_scale=3.0)
    assert len(samples) == 2 * len(SHAPE_CLASSES) and {image.size for image in samples} == {(32, 32)}
    again = toy_evaluation.class_samples(tmp_path / "pipeline", per_class=2, steps=2, guidance_scale=3.0)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(samples, again))  # seeded
