"""Official DC-AE checkpoints -> AutoencoderDC15: parity with the official code, strictness, the CLI."""

from __future__ import annotations

import json
import math
import re
import warnings

import pytest
import torch
from conftest import TINY_AE10_CONFIG, TINY_AE15_CONFIG, fixture_path
from diffusers import AutoencoderDC, AutoModel
from safetensors.torch import load_file, save_file

from dc_ae_hf import AUTOENCODER_PRESETS, AutoencoderDC15, convert_autoencoder_state_dict, infer_autoencoder_config
from dc_ae_hf.convert import load_official_autoencoder, load_original_checkpoint
from dc_ae_hf.convert.autoencoder import LatentStructureError, ScalingFactorUnknownWarning, match_autoencoder_presets
from dc_ae_hf.convert.cli import convert_autoencoder
from dc_ae_hf.convert.cli import main as convert_main
from dc_ae_hf.self_contained import is_self_contained

TOL = dict(rtol=1e-5, atol=1e-5)
# The fixture's official structure (tests/fixtures/reference/ae15_a.json, "adaptive_latent_channels"): not in the
# weights, so every conversion of it names it.
AE15_A_CHOICES = (4, 8, 12, 16)


@pytest.fixture(scope="module")
def ae15_a():
    return load_file(fixture_path("ae15_a.original.safetensors")), load_file(fixture_path("ae15_a.io.safetensors"))


def test_ae15_a_parity_with_official_code(ae15_a):
    original, io = ae15_a
    vae = load_official_autoencoder(original, latent_channel_choices=AE15_A_CHOICES, scaling_factor=0.7)
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
    config = infer_autoencoder_config(ae15_a[0], latent_channel_choices=AE15_A_CHOICES, scaling_factor=0.7)
    assert config["latent_channel_choices"] == AE15_A_CHOICES and config["scaling_factor"] == 0.7
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
    config = infer_autoencoder_config(original, latent_channel_choices=AE15_A_CHOICES, scaling_factor=0.7)
    extra = {**original, "encoder.stages.9.op_list.0.main.conv1.conv.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"no counterpart .*encoder\.stages\.9"):
        convert_autoencoder_state_dict(extra, config)
    missing = {k: v for k, v in original.items() if "decoder.project_in" not in k}
    with pytest.raises(ValueError, match=r"missing from the checkpoint .*decoder\.conv_in\.weight"):
        convert_autoencoder_state_dict(missing, config)
    with pytest.raises(ValueError, match=r"shape mismatches .*encoder\.conv_out\.weight"):
        convert_autoencoder_state_dict(original, {**config, "latent_channels": 8, "latent_channel_choices": None})
    with pytest.raises(ValueError, match="not a DC-AE state dict"):
        infer_autoencoder_config({"patch_embed.proj.weight": torch.zeros(1)})
    # A checkpoint of the wrong architecture against a named preset.
    with pytest.raises(ValueError, match="does not match the target autoencoder architecture"):
        load_official_autoencoder(original, preset="dc-ae-1.5-f32c128")
    with pytest.raises(ValueError, match="not a known autoencoder preset"):
        load_official_autoencoder(original, preset="nope")


_GLU_RENAMES = (
    ("conv_inverted.", "inverted_conv.conv."),
    ("conv_depth.", "depth_conv.conv."),
    ("conv_point.", "point_conv.conv."),
    ("norm.", "point_conv.norm."),
)


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
                for a, b in _GLU_RENAMES:
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
    with pytest.warns(ScalingFactorUnknownWarning, match="matches no official preset"):
        config = infer_autoencoder_config(official)  # a 1.0-style model of no official architecture
    assert config["scaling_factor"] == 1.0 and config["latent_channel_choices"] is None
    for key in ("encoder_block_types", "decoder_block_types", "decoder_norm_types", "decoder_act_fns"):
        assert config[key] == tuple(TINY_AE10_CONFIG[key]), key
    assert config["encoder_qkv_multiscales"] == ((), (), (5,))
    assert config["encoder_out_shortcut"] and config["decoder_in_shortcut"] and config["decoder_conv_act_fn"] == "relu"
    converted = load_official_autoencoder(official, scaling_factor=0.3)  # a given scaling factor: no warning
    assert converted.config.scaling_factor == 0.3
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(converted(x).sample, reference(x).sample, rtol=0, atol=0)


def test_cli_writes_a_loadable_folder_with_a_model_card(ae15_a, tmp_path, capsys):
    original, io = ae15_a
    checkpoint = tmp_path / "model.safetensors"
    save_file(dict(original), checkpoint)
    structure = ["--latent_channel_choices", "4", "8", "12", "16", "--scaling_factor", "0.7"]
    convert_main(["autoencoder", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"), *structure])
    assert (tmp_path / "out" / "diffusion_pytorch_model.safetensors").exists()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["latent_channel_choices"] == [4, 8, 12, 16] and config["scaling_factor"] == 0.7
    card = (tmp_path / "out" / "README.md").read_text()
    assert "library_name: diffusers" in card and "f8" in card
    assert "4, ..., 16 (4 prefixes)" in card and "--latent_channel_choices 4 8 12 16" in card
    with torch.no_grad():
        for cls in (AutoencoderDC15, AutoencoderDC):
            vae = cls.from_pretrained(tmp_path / "out").eval()
            torch.testing.assert_close(vae.decode(io["latent"]).sample, io["recon"], **TOL)
    # --self_contained: the same weights, with the model's code; plain diffusers' AutoModel loads it
    convert_main(
        [
            "autoencoder",
            "--checkpoint",
            str(checkpoint),
            "--output",
            str(tmp_path / "sc"),
            *structure,
            "--self_contained",
        ]
    )
    assert is_self_contained(tmp_path / "sc") and not is_self_contained(tmp_path / "out")
    assert "AutoModel.from_pretrained" in (tmp_path / "sc" / "README.md").read_text()
    with torch.no_grad():
        vae = AutoModel.from_pretrained(str(tmp_path / "sc"), trust_remote_code=True).eval()
        assert type(vae).__module__.startswith("diffusers_modules")
        torch.testing.assert_close(vae.decode(io["latent"]).sample, io["recon"], **TOL)
    with pytest.raises(SystemExit):
        convert_main(["autoencoder", "--checkpoint", str(checkpoint)])  # --output missing
    with pytest.raises(SystemExit) as exit_info:
        convert_main(["autoencoder", "--checkpoint", str(tmp_path / "nope.pt"), "--output", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "neither an existing file nor a Hub repo id" in capsys.readouterr().err


# -- What the weights do not say: the structured latent space and the scaling factor ---------------------------


def _to_official_15_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A 1.5-style (no latent shortcuts) state dict in the official grammar: as 1.0, without the `main.` wrapper at
    the latent ends (`encoder.project_out.op_list.0.conv.*`, `decoder.project_in.conv.*`)."""
    official = {}
    for key, value in _to_official_keys(state, {}).items():
        key = key.replace("encoder.project_out.main.op_list.0.", "encoder.project_out.op_list.0.")
        official[key.replace("decoder.project_in.main.", "decoder.project_in.")] = value
    return official


_OFFICIAL_SHAPES: dict[str, dict[str, torch.Tensor]] = {}


def _official_shapes(preset: str) -> dict[str, torch.Tensor]:
    """The official-layout state dict of a full-size preset as meta tensors: shapes only (all that architecture
    inference reads), no memory for the 677M parameters."""
    if preset not in _OFFICIAL_SHAPES:
        with torch.device("meta"):
            model = AutoencoderDC15.from_preset(preset)
        state = model.state_dict()
        _OFFICIAL_SHAPES[preset] = (
            _to_official_keys(state, {}) if model.has_latent_shortcuts else _to_official_15_keys(state)
        )
    return _OFFICIAL_SHAPES[preset]


def test_the_15_key_writer_reproduces_the_official_fixture_keys(ae15_a):
    with torch.device("meta"):
        tiny = AutoencoderDC15(**TINY_AE15_CONFIG)
    written = _to_official_15_keys(tiny.state_dict())
    assert set(written) == set(ae15_a[0])
    assert all(tuple(written[k].shape) == tuple(v.shape) for k, v in ae15_a[0].items())


def test_an_official_15_architecture_brings_its_structure_and_scaling_factor():
    state = _official_shapes("dc-ae-1.5-f64c128")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScalingFactorUnknownWarning)
        config = infer_autoencoder_config(state)
    assert match_autoencoder_presets(config) == ["dc-ae-1.5-f64c128"]
    assert config["latent_channel_choices"] == tuple(range(16, 129, 4))  # paper Sec. 3.2: 16, 20, ..., 128
    assert config["scaling_factor"] == AUTOENCODER_PRESETS["dc-ae-1.5-f64c128"]["scaling_factor"] == 0.5935
    # What the caller says wins.
    config = infer_autoencoder_config(state, latent_channel_choices=(64, 128), scaling_factor=0.5)
    assert config["latent_channel_choices"] == (64, 128) and config["scaling_factor"] == 0.5
    # f32c128 is recognised too, but DC-Gen publishes no scaling factor for it: 1.0 with a warning.
    with pytest.warns(ScalingFactorUnknownWarning, match="dc-ae-1.5-f32c128 has no published scaling factor"):
        config = infer_autoencoder_config(_official_shapes("dc-ae-1.5-f32c128"))
    assert config["latent_channel_choices"] == tuple(range(16, 129, 4)) and config["scaling_factor"] == 1.0


def test_dc_ae_10_in_and_mix_share_an_architecture_so_the_scaling_factor_is_unknown():
    state = _official_shapes("dc-ae-f64c128-in-1.0")
    with pytest.warns(ScalingFactorUnknownWarning) as record:
        config = infer_autoencoder_config(state)
    assert match_autoencoder_presets(config) == ["dc-ae-f64c128-in-1.0", "dc-ae-f64c128-mix-1.0"]
    assert config["scaling_factor"] == 1.0 and config["latent_channel_choices"] is None
    warning = record[0].message
    message = str(warning)
    assert "dc-ae-f64c128-in-1.0 (0.2889)" in message and "dc-ae-f64c128-mix-1.0 (0.4538)" in message
    assert "1.0 was written" in message and "scaling_factor=" in message and "--" not in message
    assert "--scaling_factor S" in warning.describe(cli=True) and "--preset NAME" in warning.describe(cli=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScalingFactorUnknownWarning)
        assert infer_autoencoder_config(state, scaling_factor=0.2889)["scaling_factor"] == 0.2889


def test_an_unknown_15_structure_must_be_given(ae15_a):
    original, _ = ae15_a  # 1.5-style, 16 latent channels: no official preset has this architecture
    with pytest.raises(LatentStructureError) as info:
        load_official_autoencoder(original, scaling_factor=0.7)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "latent_channels=16" in message
    assert "latent_channel_choices=" in message and "latent_channel_choices=None" in message and "--" not in message
    cli = info.value.describe(cli=True)
    assert "--latent_channel_choices C1 C2" in cli and "--latent_channel_choices none" in cli
    with pytest.raises(LatentStructureError):
        infer_autoencoder_config(original)
    # None (a deliberately unstructured model) is an answer, not "not given".
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScalingFactorUnknownWarning)
        vae = load_official_autoencoder(original, latent_channel_choices=None, scaling_factor=0.7)
    assert vae.config.latent_channel_choices is None
    # The key mapping alone needs neither.
    assert convert_autoencoder_state_dict(original).keys() == vae.state_dict().keys()


def test_cli_takes_structure_and_scaling_factor_from_a_recognised_preset(ae15_a, tmp_path, monkeypatch, capsys):
    # Full-size official weights would mean 677M real parameters; registering the fixture's architecture as a
    # preset exercises the same recognition path.
    monkeypatch.setitem(AUTOENCODER_PRESETS, "tiny-1.5-for-tests", dict(TINY_AE15_CONFIG))
    checkpoint = tmp_path / "model.safetensors"
    save_file(dict(ae15_a[0]), checkpoint)
    convert_main(["autoencoder", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert "recognised the official architecture tiny-1.5-for-tests" in printed.out
    assert f"wrote {tmp_path / 'out'}" in printed.out and "warning" not in printed.err
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["latent_channel_choices"] == [4, 8, 12, 16] and config["scaling_factor"] == 0.7


def test_scaling_factor_must_be_finite_and_positive(ae15_a, tmp_path, capsys):
    original, _ = ae15_a
    for bad in (-1.0, 0.0, math.nan, math.inf, "0.5", True):
        with pytest.raises(ValueError, match="scaling_factor"):
            load_official_autoencoder(original, latent_channel_choices=AE15_A_CHOICES, scaling_factor=bad)
    with pytest.raises(ValueError, match="scaling_factor"):
        load_official_autoencoder(original, preset="dc-ae-1.5-f64c128", scaling_factor=-1.0)
    checkpoint = tmp_path / "model.safetensors"
    save_file(dict(original), checkpoint)
    with pytest.raises(ValueError, match="scaling_factor=nan"):
        convert_autoencoder(str(checkpoint), str(tmp_path / "py"), scaling_factor=math.nan)
    base = ["autoencoder", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "cli")]
    base += ["--latent_channel_choices", "4", "8", "12", "16"]
    for bad in ("-1", "nan", "0", "inf", "abc"):
        with pytest.raises(SystemExit) as exit_info:
            convert_main([*base, "--scaling_factor", bad])
        assert exit_info.value.code == 2
        assert "argument --scaling_factor" in capsys.readouterr().err, bad
    assert not (tmp_path / "py").exists() and not (tmp_path / "cli").exists()


def test_cli_latent_channel_choices(ae15_a, tmp_path, capsys):
    checkpoint = tmp_path / "model.safetensors"
    save_file(dict(ae15_a[0]), checkpoint)
    base = ["autoencoder", "--checkpoint", str(checkpoint), "--scaling_factor", "0.7"]
    with pytest.raises(SystemExit) as exit_info:
        convert_main([*base, "--output", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: --latent_channel_choices is required")
    assert "latent_channel_choices=" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists()
    for bad, why in ((["8", "4"], "strictly increasing"), (["0"], "not allowed"), (["4", "none"], "stand alone")):
        with pytest.raises(SystemExit) as exit_info:
            convert_main([*base, "--output", str(tmp_path / "bad"), "--latent_channel_choices", *bad])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "argument --latent_channel_choices" in err and why in err, bad
    convert_main([*base, "--output", str(tmp_path / "plain"), "--latent_channel_choices", "none"])
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["latent_channel_choices"] is None
    assert "| structured latent space (channel prefixes) | no |" in (tmp_path / "plain" / "README.md").read_text()


def test_corrupt_checkpoint_files_are_named(tmp_path):
    from dc_ae_hf.convert.checkpoint_io import load_original_checkpoint

    data = fixture_path("ae15_a.original.safetensors").read_bytes()
    truncated = tmp_path / "model.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors' is truncated or corrupt"):
        load_original_checkpoint(truncated)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"junk\.pt' could not be read as a torch file"):
        load_original_checkpoint(junk)


@pytest.mark.parametrize("command", ["autoencoder", "pipeline"])
def test_cli_refuses_latent_channel_choices_without_the_full_latent(tmp_path, capsys, command):
    """`--latent_channel_choices 4 8 12` on a 16-channel latent leaves out the full latent: refused, nothing written."""
    ae = str(fixture_path("ae15_a.original.safetensors"))
    inputs = ["--checkpoint", ae] if command == "autoencoder" else ["--autoencoder", ae, "--transformer"]
    if command == "pipeline":
        inputs += [str(fixture_path("usit_a.original.safetensors")), "--num_attention_heads", "4"]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        convert_main([command, *inputs, "--latent_channel_choices", "4", "8", "12", "--output", str(out)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --latent_channel_choices 4 8 12 is not allowed: the last prefix must be the full latent, 16 channels "
        "(the autoencoder's latent_channels), which DC-AE 1.5 is always trained on; e.g. --latent_channel_choices "
        "4 8 12 16"
    ]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("content", ["text", "list"])
def test_cli_names_a_file_that_is_not_a_checkpoint(tmp_path, capsys, content):
    """A text file (pickle fails with `KeyError: 101`) or a torch file holding a list, given as a .pt checkpoint."""
    path = tmp_path / "model.pt"
    if content == "text":
        path.write_text("hello, not a checkpoint\n")
    else:
        torch.save([1, 2, 3], path)
    with pytest.raises(SystemExit) as exit_info:
        convert_main(["autoencoder", "--checkpoint", str(path), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: checkpoint {str(path)!r} is not a checkpoint: "), err
    assert ("KeyError: 101" in err[0]) if content == "text" else ("it holds a list, not a dict of weights" in err[0])
