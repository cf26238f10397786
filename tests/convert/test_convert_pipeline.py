"""`python -m dc_ae_hf.convert pipeline`: official autoencoder + USiT checkpoints -> a DCAE15Pipeline folder."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from conftest import fixture_path
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from dc_ae_hf import AutoencoderDC15, DCAE15Pipeline
from dc_ae_hf.convert import load_original_checkpoint
from dc_ae_hf.convert.cli import main as convert_main
from dc_ae_hf.convert.pipeline import PIPELINE_PRESETS, build_official_pipeline
from dc_ae_hf.convert.usit import AttentionHeadsError, EmaDecayError, convert_usit_state_dict, infer_usit_config
from dc_ae_hf.self_contained import is_self_contained

TOL = dict(rtol=1e-5, atol=1e-5)
AE = str(fixture_path("ae15_a.original.safetensors"))
USIT = str(fixture_path("usit_a.original.safetensors"))
# Not in the weights of these tiny models (tests/fixtures/reference/ae15_a.json, usit_a.json).
AE_STRUCTURE = dict(latent_channel_choices=(4, 8, 12, 16), scaling_factor=0.8)
AE_STRUCTURE_FLAGS = ["--latent_channel_choices", "4", "8", "12", "16", "--scaling_factor", "0.8"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    id2label = out.parent / "id2label.json"
    id2label.write_text(json.dumps({str(i): f"class {i}" for i in range(10)}))
    fsdp = str(fixture_path("usit_a.fsdp_ema.pt"))  # the official FSDP EMA nesting, one decay: no --ema_decay
    convert_main(
        ["pipeline", "--autoencoder", AE, "--transformer", fsdp, "--num_attention_heads", "4", *AE_STRUCTURE_FLAGS]
        + ["--id2label", str(id2label), "--output", str(out)]
    )
    return out


def test_folder_layout_and_model_card(converted):
    index = json.loads((converted / "model_index.json").read_text())
    assert index["_class_name"] == "DCAE15Pipeline"
    assert index["vae"][1] == "AutoencoderDC15" and index["transformer"][1] == "USiTTransformer2DModel"
    assert index["scheduler"] == ["diffusers", "UniPCMultistepScheduler"]
    card = (converted / "README.md").read_text()
    assert "library_name: diffusers" in card and "16x4x4" in card and "scaling factor 0.8" in card
    vae_config = AutoencoderDC15.from_pretrained(converted / "vae").config
    assert vae_config.scaling_factor == 0.8 and tuple(vae_config.latent_channel_choices) == (4, 8, 12, 16)


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


def test_self_contained_conversion_loads_in_plain_diffusers(converted, tmp_path):
    # --self_contained: the same folder plus its code; DiffusionPipeline (remote code) reproduces the official sampler
    out = tmp_path / "self-contained"
    flags = ["--num_attention_heads", "4", *AE_STRUCTURE_FLAGS, "--output", str(out), "--self_contained"]
    convert_main(["pipeline", "--autoencoder", AE, "--transformer", USIT, *flags])
    assert is_self_contained(out) and not is_self_contained(converted)
    card = (out / "README.md").read_text()
    assert card.index("DiffusionPipeline.from_pretrained") < card.index("DCAE15Pipeline.from_pretrained")
    io = load_file(fixture_path("usit_a.io.safetensors"))
    pipe = DiffusionPipeline.from_pretrained(out, trust_remote_code=True)
    assert type(pipe).__module__.startswith("diffusers_modules")
    pipe.set_progress_bar_config(disable=True)
    labels = io["sample_labels"].tolist()
    latents = pipe(
        labels,
        guidance_scale=1.5,
        num_inference_steps=8,
        latents=io["sample_noise"],
        solver="euler",
        output_type="latent",
    ).images
    torch.testing.assert_close(latents, io["sample_euler"], **TOL)


def test_mismatched_checkpoints_and_presets_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="not a known pipeline preset"):
        build_official_pipeline("a", "b", preset="dc-ae-usit-xxl")
    # The f64c128-1.5 USiT-2B preset does not fit the tiny fixture weights.
    with pytest.raises(ValueError, match="does not match"):
        build_official_pipeline(AE, USIT, preset="dc-ae-1.5-f64c128-usit-2b")
    assert set(PIPELINE_PRESETS) >= {"dc-ae-1.5-f64c128-usit-2b", "dc-ae-1.5-f64c128-usit-3b"}


# -- The head count is not in the weights -----------------------------------------------------------------------


def test_the_head_count_is_required_and_never_guessed():
    original = load_original_checkpoint(USIT)  # hidden size 64: no official width
    for call in (
        lambda: infer_usit_config(original),
        lambda: build_official_pipeline(AE, USIT, **AE_STRUCTURE),
    ):
        with pytest.raises(AttentionHeadsError) as info:
            call()
        message = str(info.value)
        assert isinstance(info.value, ValueError) and info.value.hidden_size == 64
        assert "num_attention_heads=N" in message and "--" not in message and "64" in message
        assert re.search(r"num_attention_heads=\d", message) is None and "e.g." not in message  # no suggestion
        assert "--num_attention_heads N" in info.value.describe(cli=True) and "--preset" in info.value.describe(
            cli=True
        )
    with pytest.raises(AttentionHeadsError, match="not divisible by num_attention_heads=5"):
        infer_usit_config(original, num_attention_heads=5)
    for bad in (0, -4, 2.0, "4", True):
        with pytest.raises(ValueError, match="num_attention_heads"):
            infer_usit_config(original, num_attention_heads=bad)
        with pytest.raises(ValueError, match="num_attention_heads"):
            build_official_pipeline(AE, USIT, num_attention_heads=bad, **AE_STRUCTURE)
    with pytest.raises(ValueError, match="num_attention_heads=8 contradicts preset"):
        build_official_pipeline(AE, USIT, preset="dc-ae-1.5-f64c128-usit-2b", num_attention_heads=8)


def test_cli_head_count_errors_speak_flags(tmp_path, capsys):
    base = ["pipeline", "--autoencoder", AE, "--transformer", USIT, "--output", str(tmp_path / "out")]
    base += AE_STRUCTURE_FLAGS
    with pytest.raises(SystemExit) as exit_info:
        convert_main(base)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: --num_attention_heads is required")
    assert "--preset" in err and "num_attention_heads=" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    for bad in ("0", "-2", "abc", "2.5"):
        with pytest.raises(SystemExit) as exit_info:
            convert_main([*base, "--num_attention_heads", bad])
        assert exit_info.value.code == 2 and "argument --num_attention_heads" in capsys.readouterr().err, bad
    with pytest.raises(SystemExit) as exit_info:
        convert_main([*base, "--num_attention_heads", "5"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "not divisible by --num_attention_heads 5" in err
    assert not (tmp_path / "out").exists()


def test_cli_needs_the_autoencoder_structure_for_a_pipeline_too(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert_main(
            ["pipeline", "--autoencoder", AE, "--transformer", USIT, "--num_attention_heads", "4"]
            + ["--output", str(tmp_path / "out")]
        )
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: --latent_channel_choices is required")
    with pytest.raises(SystemExit) as exit_info:
        convert_main(
            ["pipeline", "--autoencoder", AE, "--transformer", USIT, "--output", "x", "--scaling_factor", "-1"]
        )
    assert exit_info.value.code == 2 and "argument --scaling_factor" in capsys.readouterr().err
    with pytest.raises(ValueError, match="scaling_factor"):
        build_official_pipeline(AE, USIT, num_attention_heads=4, latent_channel_choices=None, scaling_factor=0.0)


# -- Several EMAs in one FSDP checkpoint -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_emas(tmp_path_factory):
    """The official FSDP form `{"ema": {decay: state_dict}, ...}` with two decays (the fixture has one)."""
    checkpoint = load_original_checkpoint(fixture_path("usit_a.fsdp_ema.pt"))
    ((decay, state),) = checkpoint["ema"].items()
    other = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path_factory.mktemp("emas") / "two_emas.pt"
    torch.save({**checkpoint, "ema": {decay: state, 0.999: other}}, path)
    return path, decay


def test_several_emas_need_ema_decay(two_emas):
    path, decay = two_emas
    checkpoint = load_original_checkpoint(path)
    with pytest.raises(EmaDecayError) as info:
        infer_usit_config(checkpoint, num_attention_heads=4)
    message = str(info.value)
    assert "2 EMAs" in message and str(decay) in message and "0.999" in message and "ema_decay=" in message
    assert "--ema_decay DECAY" in info.value.describe(cli=True)
    chosen = convert_usit_state_dict(checkpoint, ema_decay=0.999)
    first = convert_usit_state_dict(checkpoint, ema_decay=decay)
    torch.testing.assert_close(chosen["pos_embed"], first["pos_embed"] + 1, rtol=0, atol=0)
    with pytest.raises(EmaDecayError, match=r"ema_decay=0.5 is not in the checkpoint; its EMA decays are"):
        convert_usit_state_dict(checkpoint, ema_decay=0.5)
    with pytest.raises(EmaDecayError, match="no 'ema' entry"):
        convert_usit_state_dict(load_original_checkpoint(USIT), ema_decay=0.999)


def test_cli_several_emas(two_emas, tmp_path, capsys):
    path, _ = two_emas
    base = ["pipeline", "--autoencoder", AE, "--transformer", str(path), "--num_attention_heads", "4"]
    base += [*AE_STRUCTURE_FLAGS, "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        convert_main(base)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "choose one with --ema_decay DECAY" in err and "0.999" in err
    assert not (tmp_path / "out").exists()
    convert_main([*base, "--ema_decay", "0.999"])
    assert (tmp_path / "out" / "model_index.json").exists()


# -- The output folder: new, empty, or the converter's own earlier output ----------------------------------------


def test_the_output_must_be_new_empty_or_the_converters_own(converted, tmp_path, capsys):
    argv = ["pipeline", "--autoencoder", AE, "--transformer", USIT, "--num_attention_heads", "4", *AE_STRUCTURE_FLAGS]
    run = tmp_path / "runs" / "ae"  # a finished train_dc_ae.py run: its trained vae/ must not be replaced
    (run / "vae").mkdir(parents=True)
    (run / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"trained")
    (run / "training_config.json").write_text(json.dumps({"script": "train_dc_ae"}))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    for folder, holds in [(run, "a training run of train_dc_ae.py"), (other, "other files (todo.txt)")]:
        before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
        with pytest.raises(SystemExit) as exit_info:
            convert_main([*argv, "--output", str(folder)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: --output={str(folder)!r} is not allowed: it holds {holds}"), err
        assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing written
    assert (run / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == b"trained"

    # its own earlier output is replaced whole (a stale file goes), also one written before the owner record
    again = tmp_path / "again"
    shutil.copytree(converted, again)
    (again / "stale.txt").write_text("from the earlier conversion")
    (again / ".dc_ae_hf_output.json").unlink()  # as written by an earlier version: its model card names the command
    convert_main([*argv, "--output", str(again)])
    assert not (again / "stale.txt").exists() and (again / "model_index.json").is_file()
    assert json.loads((again / ".dc_ae_hf_output.json").read_text()) == {
        "writer": "python -m dc_ae_hf.convert pipeline"
    }
    with pytest.raises(SystemExit):  # the pipeline converter's folder is not the autoencoder converter's
        convert_main(["autoencoder", "--checkpoint", AE, "--output", str(again), "--latent_channel_choices", "4", "8"])
    assert "it holds the output of `python -m dc_ae_hf.convert pipeline`" in capsys.readouterr().err
