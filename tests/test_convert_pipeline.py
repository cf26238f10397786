"""`python -m dc_ae_hf.convert pipeline`: official autoencoder + USiT checkpoints -> a DCAE15Pipeline folder."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import fixture_path
from safetensors.torch import load_file

from dc_ae_hf import AutoencoderDC15, DCAE15Pipeline
from dc_ae_hf.convert.cli import main as convert_main
from dc_ae_hf.convert.pipeline import PIPELINE_PRESETS, build_official_pipeline

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    id2label = out.parent / "id2label.json"
    id2label.write_text(json.dumps({str(i): f"class {i}" for i in range(10)}))
    convert_main(
        [
            "pipeline",
            "--autoencoder", str(fixture_path("ae15_a.original.safetensors")),
            "--transformer", str(fixture_path("usit_a.fsdp_ema.pt")),  # the official FSDP EMA nesting
            "--num_attention_heads", "4",
            "--scaling_factor", "0.8",
            "--id2label", str(id2label),
            "--output", str(out),
        ]
    )  # fmt: skip
    return out


def test_folder_layout_and_model_card(converted):
    index = json.loads((converted / "model_index.json").read_text())
    assert index["_class_name"] == "DCAE15Pipeline"
    assert index["vae"][1] == "AutoencoderDC15" and index["transformer"][1] == "USiTTransformer2DModel"
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    card = (converted / "README.md").read_text()
    assert "library_name: diffusers" in card and "16x4x4" in card and "scaling factor 0.8" in card
    assert AutoencoderDC15.from_pretrained(converted / "vae").config.scaling_factor == 0.8


def test_converted_pipeline_reproduces_the_official_sampler(converted):
    io = load_file(fixture_path("usit_a.io.safetensors"))
    pipe = DCAE15Pipeline.from_pretrained(converted)
    assert pipe.get_label_ids(["class 2", "class 9"]) == io["sample_labels"].tolist()
    latents = pipe(
        io["sample_labels"].tolist(),
        guidance_scale=1.5,
        num_inference_steps=8,
        latents=io["sample_noise"],
        solver="euler",
        output_type="latent",
    ).images
    torch.testing.assert_close(latents, io["sample_euler"], **TOL)
    images = pipe([2], num_inference_steps=2, solver="euler", output_type="np", generator=torch.manual_seed(0)).images
    assert images.shape == (1, 32, 32, 3) and 0 <= images.min() and images.max() <= 1


def test_mismatched_checkpoints_and_presets_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="not a known pipeline preset"):
        build_official_pipeline("a", "b", preset="dc-ae-usit-xxl")
    # The f64c128-1.5 USiT-2B preset does not fit the tiny fixture weights.
    with pytest.raises(ValueError, match="does not match"):
        build_official_pipeline(
            fixture_path("ae15_a.original.safetensors"), fixture_path("usit_a.original.safetensors"),
            preset="dc-ae-1.5-f64c128-usit-2b",
        )  # fmt: skip
    assert set(PIPELINE_PRESETS) >= {"dc-ae-1.5-f64c128-usit-2b", "dc-ae-1.5-f64c128-usit-3b"}
