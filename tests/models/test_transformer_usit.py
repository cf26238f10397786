"""USiTTransformer2DModel: official parity (usit_a fixture), checkpoint conversion, adaptive channels, diffusers API."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_path
from helpers import official_usit
from safetensors.torch import load_file

from dc_ae_hf.convert.usit import (
    convert_usit_state_dict,
    infer_usit_config,
    load_original_checkpoint,
    load_usit_from_original,
)
from dc_ae_hf.models.transformer_usit import USIT_PRESETS, USiTTransformer2DModel

TOL = dict(atol=1e-5, rtol=1e-5)
TINY = dict(sample_size=4, in_channels=6, num_layers=2, num_attention_heads=2, attention_head_dim=8, num_classes=5)


@pytest.fixture(scope="module")
def original() -> dict[str, torch.Tensor]:
    return load_file(fixture_path("usit_a.original.safetensors"))


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(fixture_path("usit_a.io.safetensors"))


@pytest.fixture(scope="module")
def model() -> USiTTransformer2DModel:
    return official_usit()


def test_infer_config_matches_fixture_architecture(original):
    # usit_a.json "architecture": depth 4, hidden 64, 4 heads, 16 channels, 4x4 input, 10 classes (+ null row)
    assert infer_usit_config(original, num_attention_heads=4) == dict(
        sample_size=4,
        patch_size=1,
        in_channels=16,
        num_layers=4,
        num_attention_heads=4,
        attention_head_dim=16,
        mlp_ratio=4.0,
        num_classes=10,
        class_dropout_prob=0.1,
    )
    with pytest.raises(ValueError, match="num_attention_heads"):
        infer_usit_config(original)  # hidden 64 is no official width: heads cannot be guessed


def test_velocity_matches_official(model, io):
    with torch.no_grad():
        velocity = model(io["x_t"], io["t"], io["labels"]).sample
        torch.testing.assert_close(velocity, io["velocity"], **TOL)
        for c in (4, 12):  # adaptive channels: the first c' input channels -> c' output channels
            out = model(io["x_t"][:, :c], io["t"], io["labels"], return_dict=False)[0]
            assert out.shape == (3, c, 4, 4)
            torch.testing.assert_close(out, io[f"velocity_c{c}"], **TOL)


def test_fsdp_ema_checkpoint_converts_to_same_weights(original):
    reference = convert_usit_state_dict(original)
    checkpoint = load_original_checkpoint(fixture_path("usit_a.fsdp_ema.pt"))  # torch.load(weights_only=True)
    assert set(checkpoint) >= {"ema", "global_step"}
    converted = convert_usit_state_dict(checkpoint)
    assert converted.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(converted[key], value, rtol=0, atol=0)
    # the only decay, chosen explicitly; an absent decay names the available ones
    assert convert_usit_state_dict(checkpoint, ema_decay=0.9999).keys() == reference.keys()
    with pytest.raises(ValueError, match="0.999"):
        convert_usit_state_dict(checkpoint, ema_decay=0.5)


def test_load_usit_from_original_file(io):
    model = load_usit_from_original(fixture_path("usit_a.fsdp_ema.pt"), num_attention_heads=4)
    with torch.no_grad():
        torch.testing.assert_close(model(io["x_t"], io["t"], io["labels"]).sample, io["velocity"], **TOL)


def test_converter_accepts_hub_ddp_and_multi_decay_forms(original):
    reference = convert_usit_state_dict(original)
    hub = {f"diffusion_model.{k}": v for k, v in original.items()}
    hub["autoencoder.encoder.conv_in.weight"] = torch.zeros(1)  # the AE inside the Hub file is dropped
    ddp = {f"0.{k}": v for k, v in original.items()}
    other = {k: v + 1 for k, v in original.items()}
    multi = {"ema": {0.9999: original, 0.999: other}, "global_step": 3}
    for form in (hub, ddp, {"model_state_dict": original}):
        converted = convert_usit_state_dict(form)
        assert converted.keys() == reference.keys()
        torch.testing.assert_close(converted["pos_embed"], reference["pos_embed"], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"0\.9999.*0\.999"):  # several EMAs: the decay must be chosen
        convert_usit_state_dict(multi)
    first = convert_usit_state_dict(multi, ema_decay=0.9999)
    torch.testing.assert_close(first["pos_embed"], reference["pos_embed"], rtol=0, atol=0)
    chosen = convert_usit_state_dict(multi, ema_decay=0.999)
    torch.testing.assert_close(chosen["pos_embed"], reference["pos_embed"] + 1, rtol=0, atol=0)


def test_converter_is_strict(original, model):
    with pytest.raises(ValueError, match="in_blocks.0.attn.qkv.bias"):
        convert_usit_state_dict({**original, "in_blocks.0.attn.qkv.bias": torch.zeros(192)})
    missing = {k: v for k, v in original.items() if k != "norm.weight"}
    with pytest.raises(ValueError, match="norm_out.weight"):
        convert_usit_state_dict(missing, model=model)
    config = {**model.config, "in_channels": 8}
    with pytest.raises(ValueError, match="patch_embed.proj.weight"):
        convert_usit_state_dict(original, config=config)
    with pytest.raises(TypeError, match="mapping"):
        convert_usit_state_dict([1, 2])


def test_converted_keys_are_the_model_keys(original, model):
    assert set(convert_usit_state_dict(original)) == set(model.state_dict())
    assert "label_embed.weight" in model.state_dict() and "proj_out.weight" in model.state_dict()


def test_channel_prefix_equals_zero_padding():
    # The official semantics (usit_a.json "checks"): with patch_size 1, c' channels behave like the zero-padded
    # full input and the output is the first c' channels of the full prediction.
    model = USiTTransformer2DModel(**TINY).eval()
    x, t, y = torch.randn(2, 6, 4, 4), torch.tensor([0.3, 0.9]), torch.tensor([1, 4])
    with torch.no_grad():
        for c in (1, 3, 5):
            prefix = model(x[:, :c], t, y).sample
            padded = model(F.pad(x[:, :c], (0, 0, 0, 0, 0, 6 - c)), t, y).sample[:, :c]
            torch.testing.assert_close(prefix, padded, atol=1e-6, rtol=1e-5)


def test_patch_size_2_prefix_follows_the_official_row_slice():
    # Official AdaptiveLinear keeps the first c' * p * p head rows and unpatchifies them as (p1 p2 c').
    model = USiTTransformer2DModel(**{**TINY, "patch_size": 2}).eval()
    x, t, y = torch.randn(2, 6, 4, 4), torch.tensor([0.3, 0.9]), torch.tensor([1, 4])
    captured = {}
    model.norm_out.register_forward_hook(lambda module, args, out: captured.update(tokens=out))
    with torch.no_grad():
        c = 3
        prefix = model(x[:, :c], t, y).sample
        rows = torch.nn.functional.linear(
            captured["tokens"], model.proj_out.weight[: 4 * c], model.proj_out.bias[: 4 * c]
        )[:, 2:]  # (B, N, p*p*c')
        expected = rows.reshape(2, 2, 2, 2, 2, c).permute(0, 5, 1, 3, 2, 4).reshape(2, c, 4, 4)
    torch.testing.assert_close(prefix, expected)


def _public(config) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def test_save_load_round_trip(tmp_path):
    model = USiTTransformer2DModel(**TINY).eval()
    model.save_pretrained(tmp_path)
    loaded = USiTTransformer2DModel.from_pretrained(tmp_path).eval()
    assert _public(loaded.config) == _public(model.config)
    x, t, y = torch.randn(2, 6, 4, 4), torch.rand(2), torch.tensor([0, 5])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, y).sample, model(x, t, y).sample, rtol=0, atol=0)


def test_gradient_checkpointing_equivalence():
    model = USiTTransformer2DModel(**TINY).train()
    x, t, y = torch.randn(3, 6, 4, 4), torch.rand(3), torch.tensor([0, 2, 4])

    def loss_and_grads():
        model.zero_grad()
        torch.manual_seed(0)  # the same label dropout in both runs
        loss = model(x, t, y).sample.square().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = loss_and_grads()
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    loss_ckpt, grads_ckpt = loss_and_grads()
    torch.testing.assert_close(loss_ckpt, loss, rtol=0, atol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, atol=1e-6, rtol=1e-5)


def test_bf16_forward_is_finite():
    model = USiTTransformer2DModel(**TINY).to(torch.bfloat16).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 6, 4, 4, dtype=torch.bfloat16), 0.5, torch.tensor([1, 5])).sample
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_layerwise_casting_keeps_the_adaptive_head_working():
    model = USiTTransformer2DModel(**TINY).eval()
    x, y = torch.randn(2, 6, 4, 4), torch.tensor([1, 5])
    with torch.no_grad():
        reference = [model(x[:, :c], 0.5, y).sample for c in (6, 3)]
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
        assert model.in_blocks[0].mlp.fc1.weight.dtype == torch.float8_e4m3fn
        assert model.patch_embed.proj.weight.dtype == torch.float32  # skipped (_skip_layerwise_casting_patterns)
        for c, expected in zip((6, 3), reference):
            out = model(x[:, :c], 0.5, y).sample
            assert out.dtype == torch.float32 and out.shape == expected.shape
            torch.testing.assert_close(out, expected, atol=0.1, rtol=0.1)  # fp8 weight storage


def test_timestep_scalar_and_labels_in_eval_vs_training():
    model = USiTTransformer2DModel(**{**TINY, "class_dropout_prob": 0.999999})
    x, y, null = torch.randn(2, 6, 4, 4), torch.tensor([1, 3]), torch.tensor([5, 5])
    with torch.no_grad():
        model.eval()
        scalar = model(x, 0.25, y).sample
        torch.testing.assert_close(scalar, model(x, torch.tensor([0.25, 0.25]), y).sample, rtol=0, atol=0)
        unconditional = model(x, 0.25, null).sample
        assert (scalar - unconditional).abs().max() > 1e-4  # eval: labels are used as given
        model.train()  # training: (almost surely) every label is dropped to the null class
        torch.testing.assert_close(model(x, 0.25, y).sample, unconditional, rtol=0, atol=0)


def test_presets_have_the_official_sizes():
    counts = {}
    for name in USIT_PRESETS:
        with torch.device("meta"):
            model = USiTTransformer2DModel.from_preset(name)
        counts[name] = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(counts["usit-h"], 2) == 500.87  # efficientvit applications/dc_ae/README.md
    assert round(counts["usit-2b"], 2) == 1580.40
    assert 3000 < counts["usit-3b"] < 3200  # depth 56 (57 blocks), ~3.1B
    with torch.device("meta"):
        model = USiTTransformer2DModel.from_preset("usit-2b", in_channels=32, sample_size=16)
    assert model.config.in_channels == 32 and model.pos_embed.shape == (1, 2 + 256, 2048)
    with pytest.raises(ValueError, match="usit-2b"):
        USiTTransformer2DModel.from_preset("usit-xl")


def test_bad_inputs_raise_clear_errors():
    model = USiTTransformer2DModel(**TINY).eval()
    x, t, y = torch.randn(2, 6, 4, 4), torch.rand(2), torch.tensor([0, 1])
    cases = [
        ((x[0], t, y), "4-D"),
        ((torch.randn(2, 7, 4, 4), t, y), "7 channels"),
        ((torch.randn(2, 6, 6, 6), t, y), "position-embedding grid"),
        ((x, torch.rand(3), y), "timestep"),
        ((x, t, torch.tensor([0.0, 1.0])), "integer"),
    ]
    with torch.no_grad():
        for args, message in cases:
            with pytest.raises(ValueError, match=message):
                model(*args)
        patched = USiTTransformer2DModel(**{**TINY, "patch_size": 2})
        with pytest.raises(ValueError, match="patch_size=2"):
            patched(torch.randn(2, 6, 5, 5), t, y)
        # Label values are not read in forward (no device sync, compilable); the embedding itself rejects ids outside
        # [0, num_classes] (num_classes = the null class), and DCAE15Pipeline checks labels once per call.
        for labels in ([0, 6], [-1, 0]):
            with pytest.raises(IndexError, match="index out of range"):
                model(x, t, torch.tensor(labels))
        no_null = USiTTransformer2DModel(**{**TINY, "class_dropout_prob": 0.0})
        with pytest.raises(IndexError, match="index out of range"):
            no_null(x, t, torch.tensor([0, 5]))
    for bad in (
        dict(num_layers=3),
        dict(sample_size=5, patch_size=2),
        dict(num_classes=0),
        dict(class_dropout_prob=1),
    ):
        with pytest.raises(ValueError):
            USiTTransformer2DModel(**{**TINY, **bad})


def test_forward_compiles_without_graph_breaks():
    # fullgraph=True fails on any graph break, e.g. a check that reads tensor values on the host; the "eager" backend
    # runs the captured graph as is, so this checks the capture without paying for code generation.
    torch._dynamo.reset()
    model = USiTTransformer2DModel(**TINY).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x, t, y = torch.randn(2, 6, 4, 4), torch.rand(2), torch.tensor([0, 5])
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, t, y).sample, model(x, t, y).sample, rtol=0, atol=0)
        prefix = x[:, :3]  # a channel prefix is another static shape: recompiled, still without breaks
        torch.testing.assert_close(compiled(prefix, t, y).sample, model(prefix, t, y).sample, rtol=0, atol=0)
    torch._dynamo.reset()
