"""Official DC-AE checkpoints -> AutoencoderDC15: parity with the official code, strictness, the CLI."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import TINY_AE10_CONFIG, fixture_path
from diffusers import AutoencoderDC
from safetensors.torch import load_file, save_file

from dc_ae_hf import AutoencoderDC15, convert_autoencoder_state_dict, infer_autoencoder_config
from dc_ae_hf.convert import load_official_autoencoder, load_original_checkpoint
from dc_ae_hf.convert.cli import main as convert_main

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def ae15_a():
    return load_file(fixture_path("ae15_a.original.safetensors")), load_file(fixture_path("ae15_a.io.safetensors"))


def test_ae15_a_parity_with_official_code(ae15_a):
    original, io = ae15_a
    vae = load_official_autoencoder(original, latent_channel_choices=(4, 8, 12, 16))
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(io["x"]).latent, io["latent"], **TOL)
        torch.testing.assert_close(vae.decode(io["latent"]).sample, io["recon"], **TOL)
        recon_keys = sorted(k for k in io if re.fullmatch(r"recon_c\d+", k))
        latent_keys = sorted(k for k in io if re.fullmatch(r"latent_c\d+", k))
        assert recon_keys and latent_keys
        for key in recon_keys:
            c = int(key[len("recon_c") :])
            torch.testing.assert_close(vae.decode(io["latent"][:, :c]).sample, io[key], **TOL, msg=key)
        for key in latent_keys:
            c = int(key[len("latent_c") :])
            torch.testing.assert_close(vae.encode(io["x"], latent_channels=c).latent, io[key], **TOL, msg=key)


def test_inferred_config_matches_the_fixture_description(ae15_a):
    config = infer_autoencoder_config(ae15_a[0])
    assert config["latent_channels"] == 16
    assert config["encoder_block_out_channels"][1:] == (16, 32, 32)
    assert config["encoder_layers_per_block"] == (0, 1, 1, 1)
    assert config["decoder_layers_per_block"] == (0, 1, 2, 1)
    assert not config["encoder_out_shortcut"] and not config["decoder_in_shortcut"]
    assert config["decoder_conv_act_fn"] == "silu"


def test_wrapped_and_prefixed_checkpoints(ae15_a, tmp_path):
    original, _ = ae15_a
    direct = convert_autoencoder_state_dict(original)
    torch.save({"state_dict": dict(original), "epoch": 3}, tmp_path / "train.pt")
    nested = convert_autoencoder_state_dict(load_original_checkpoint(tmp_path / "train.pt"))
    prefixed = convert_autoencoder_state_dict({f"autoencoder.{k}": v for k, v in original.items()})
    for other in (nested, prefixed):
        assert other.keys() == direct.keys()
        for k in direct:
            torch.testing.assert_close(other[k], direct[k], rtol=0, atol=0)


def test_strictness_names_the_problem(ae15_a):
    original, _ = ae15_a
    config = infer_autoencoder_config(original)
    extra = {**original, "encoder.stages.9.op_list.0.main.conv1.conv.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"no counterpart .*encoder\.stages\.9"):
        convert_autoencoder_state_dict(extra, config)
    missing = {k: v for k, v in original.items() if "decoder.project_in" not in k}
    with pytest.raises(ValueError, match=r"missing from the checkpoint .*decoder\.conv_in\.weight"):
        convert_autoencoder_state_dict(missing, config)
    with pytest.raises(ValueError, match=r"shape mismatches .*encoder\.conv_out\.weight"):
        convert_autoencoder_state_dict(original, {**config, "latent_channels": 8})
    with pytest.raises(ValueError, match="not a DC-AE state dict"):
        infer_autoencoder_config({"patch_embed.proj.weight": torch.zeros(1)})
    # A checkpoint of the wrong architecture against a named preset.
    with pytest.raises(ValueError, match="does not match the target autoencoder architecture"):
        load_official_autoencoder(original, preset="dc-ae-1.5-f32c128")
    with pytest.raises(ValueError, match="not a known autoencoder preset"):
        load_official_autoencoder(original, preset="nope")


def _to_official_keys(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Write a diffusers-layout DC-AE 1.0 state dict in the official key grammar (`main.` / `op_list.` wrappers of dc_gen/models/nn/ops.py)."""
    official = {}
    for key, value in state.items():
        k = key
        k = re.sub(r"^encoder\.conv_in\.conv\.", "encoder.project_in.conv.conv.", k)
        k = re.sub(r"^encoder\.conv_out\.", "encoder.project_out.main.op_list.0.conv.", k)
        k = re.sub(r"^decoder\.conv_in\.", "decoder.project_in.main.conv.", k)
        k = re.sub(r"^decoder\.norm_out\.", "decoder.project_out.op_list.0.", k)
        k = re.sub(r"^decoder\.conv_out\.conv\.", "decoder.project_out.op_list.2.conv.conv.", k)
        m = re.match(r"^(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(\d+)\.(.*)$", k)
        if m:
            side, _, s, j, rest = m.groups()
            head = f"{side}.stages.{s}.op_list.{j}."
            if rest.startswith(("conv1.", "conv2.", "norm.")):
                rest = (
                    rest.replace("conv1.", "conv1.conv.")
                    .replace("conv2.", "conv2.conv.")
                    .replace("norm.", "conv2.norm.")
                )
                k = head + "main." + rest
            elif rest.startswith("conv."):
                k = head + "main.conv.conv." + rest[len("conv.") :]
            elif rest.startswith("attn.to_q."):
                q, kk, v = (state[key.replace("to_q", n)] for n in ("to_q", "to_k", "to_v"))
                official[head + "context_module.main.qkv.conv.weight"] = torch.cat([q, kk, v])[..., None, None]
                continue
            elif rest.startswith(("attn.to_k.", "attn.to_v.")):
                continue
            elif rest.startswith("attn."):
                rest = re.sub(r"to_qkv_multiscale\.(\d+)\.proj_in\.", r"aggreg.\1.0.", rest[len("attn.") :])
                rest = re.sub(r"to_qkv_multiscale\.(\d+)\.proj_out\.", r"aggreg.\1.1.", rest)
                rest = rest.replace("norm_out.", "proj.norm.")
                if rest == "to_out.weight":
                    rest, value = "proj.conv.weight", value[..., None, None]
                k = head + "context_module.main." + rest
            elif rest.startswith("conv_out."):
                rest = rest[len("conv_out.") :]
                for a, b in (("conv_inverted.", "inverted_conv.conv."), ("conv_depth.", "depth_conv.conv."),
                             ("conv_point.", "point_conv.conv."), ("norm.", "point_conv.norm.")):  # fmt: skip
                    rest = rest.replace(a, b) if rest.startswith(a) else rest
                k = head + "local_module.main." + rest
        official[k] = value
    return official


def test_dc_ae_10_style_round_trip_through_the_official_grammar():
    torch.manual_seed(5)
    reference = AutoencoderDC15(**TINY_AE10_CONFIG).eval()
    for module in reference.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.75, 1.25)
    official = _to_official_keys(reference.state_dict(), TINY_AE10_CONFIG)
    assert any(".context_module.main.qkv.conv.weight" in k for k in official)
    assert any(k.startswith("decoder.project_in.main.") for k in official)
    config = infer_autoencoder_config(official)
    for key in ("encoder_block_types", "decoder_block_types", "decoder_norm_types", "decoder_act_fns"):
        assert config[key] == tuple(TINY_AE10_CONFIG[key]), key
    assert config["encoder_qkv_multiscales"] == ((), (), (5,))
    assert config["encoder_out_shortcut"] and config["decoder_in_shortcut"] and config["decoder_conv_act_fn"] == "relu"
    converted = load_official_autoencoder(official)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(converted(x).sample, reference(x).sample, rtol=0, atol=0)


def test_cli_writes_a_loadable_folder_with_a_model_card(ae15_a, tmp_path):
    original, io = ae15_a
    checkpoint = tmp_path / "model.safetensors"
    save_file(dict(original), checkpoint)
    convert_main(["autoencoder", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out")])
    assert (tmp_path / "out" / "diffusion_pytorch_model.safetensors").exists()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "library_name: diffusers" in card and "f8" in card
    with torch.no_grad():
        for cls in (AutoencoderDC15, AutoencoderDC):
            vae = cls.from_pretrained(tmp_path / "out").eval()
            torch.testing.assert_close(vae.decode(io["latent"]).sample, io["recon"], **TOL)
    with pytest.raises(SystemExit):
        convert_main(["autoencoder", "--checkpoint", str(checkpoint)])  # --output missing
    with pytest.raises(FileNotFoundError, match="neither an existing file nor a Hub repo id"):
        convert_main(["autoencoder", "--checkpoint", str(tmp_path / "nope.pt"), "--output", str(tmp_path / "x")])
