"""AutoencoderDC15: structured prefixes, diffusers interop, serialization, tiling/slicing, checkpointing, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_AE10_CONFIG, TINY_AE15_CONFIG
from diffusers import AutoencoderDC

from dc_ae_hf import AUTOENCODER_PRESETS, AutoencoderDC15
from dc_ae_hf.latents import decode_from_diffusion_space, encode_to_diffusion_space


@pytest.fixture
def vae() -> AutoencoderDC15:
    return AutoencoderDC15(**TINY_AE15_CONFIG).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_shapes_and_prefixes(vae, images):
    with torch.no_grad():
        latent = vae.encode(images).latent
        assert latent.shape == (2, 16, 8, 8)
        for c in vae.latent_channel_choices:
            prefix = vae.encode(images, latent_channels=c).latent
            torch.testing.assert_close(prefix, latent[:, :c], rtol=0, atol=0)
            recon = vae.decode(prefix).sample
            assert recon.shape == images.shape
            # Decoding a prefix equals decoding the zero-filled full latent (official AdaptiveInputConvLayer).
            filled = torch.cat([prefix, torch.zeros_like(latent[:, c:])], dim=1)
            torch.testing.assert_close(recon, vae.decode(filled).sample, rtol=0, atol=0)
        out = vae(images, latent_channels=8)
        assert out.latent.shape == (2, 8, 8, 8)
        torch.testing.assert_close(out.sample, vae.decode(latent[:, :8]).sample)
        assert vae(images, return_dict=False)[0].shape == images.shape


def test_prefix_changes_reconstruction(vae, images):
    with torch.no_grad():
        latent = vae.encode(images).latent
        full = vae.decode(latent).sample
        partial = vae.decode(latent[:, :4]).sample
    assert (full - partial).abs().max() > 1e-3


def test_determinism(vae, images):
    with torch.no_grad():
        a, b = vae(images).sample, vae(images).sample
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype, variant", [(torch.float32, None), (torch.bfloat16, "bf16")])
def test_save_load_round_trip(vae, images, tmp_path, dtype, variant):
    vae = vae.to(dtype)
    vae.save_pretrained(tmp_path, variant=variant)
    loaded = AutoencoderDC15.from_pretrained(tmp_path, variant=variant, torch_dtype=dtype).eval()
    assert loaded.dtype == dtype
    assert loaded.config.latent_channel_choices == [4, 8, 12, 16]
    assert loaded.config.scaling_factor == 0.7
    for (name, p), (_, q) in zip(vae.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(vae(images.to(dtype)).sample, loaded(images.to(dtype)).sample, rtol=0, atol=0)


def test_interop_with_diffusers_autoencoder_dc(vae, images, tmp_path):
    # AutoencoderDC15 folder -> AutoencoderDC, and back.
    vae.save_pretrained(tmp_path / "ours")
    parent = AutoencoderDC.from_pretrained(tmp_path / "ours").eval()
    assert type(parent) is AutoencoderDC
    with torch.no_grad():
        torch.testing.assert_close(parent(images).sample, vae(images).sample, rtol=0, atol=0)
    plain_config = {k: v for k, v in TINY_AE15_CONFIG.items() if k != "latent_channel_choices"}
    plain = AutoencoderDC(**plain_config)
    plain.load_state_dict(vae.state_dict())
    plain.save_pretrained(tmp_path / "theirs")
    ours = AutoencoderDC15.from_pretrained(tmp_path / "theirs").eval()
    assert ours.config.latent_channel_choices is None and ours.latent_channel_choices == (16,)
    with torch.no_grad():
        torch.testing.assert_close(ours(images).sample, vae(images).sample, rtol=0, atol=0)
        # Prefix decoding works on a model loaded from a plain AutoencoderDC folder (no shortcuts there).
        assert ours.decode(ours.encode(images, latent_channels=4).latent).sample.shape == images.shape


def test_slicing_and_tiling_with_prefixes(vae):
    images = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        latent = vae.encode(images).latent
        reference = vae.decode(latent[:, :8]).sample

        vae.enable_slicing()
        torch.testing.assert_close(vae.encode(images, latent_channels=8).latent, latent[:, :8], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(vae.decode(latent[:, :8]).sample, reference, rtol=1e-5, atol=1e-5)
        vae.disable_slicing()

        vae.enable_tiling(64, 64, 32, 32)
        tiled_latent = vae.encode(images, latent_channels=8).latent
        tiled = vae.decode(latent[:, :8]).sample
        filled = torch.cat([latent[:, :8], torch.zeros_like(latent[:, 8:])], dim=1)
        torch.testing.assert_close(tiled, vae.decode(filled).sample, rtol=0, atol=0)
        vae.disable_tiling()
    assert tiled_latent.shape == (3, 8, 12, 12) and tiled.shape == images.shape
    # Tiles are blended, so they approximate (not equal) the untiled result; random weights make this loose.
    assert (tiled - reference).abs().mean() < 0.3 * reference.abs().mean()
    assert (tiled_latent - latent[:, :8]).abs().mean() < 0.3 * latent[:, :8].abs().mean()
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(latent[:, :8]).sample, reference, rtol=0, atol=0)


def test_gradient_checkpointing_equivalence(images):
    torch.manual_seed(3)
    plain = AutoencoderDC15(**TINY_AE15_CONFIG).train()
    checkpointed = AutoencoderDC15(**TINY_AE15_CONFIG).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.enable_gradient_checkpointing()
    assert checkpointed.is_gradient_checkpointing
    losses = []
    for model in (plain, checkpointed):
        loss = (model(images, latent_channels=8).sample - images).abs().mean()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        if p.grad is None:
            assert q.grad is None, name
        else:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
    # Trailing encoder filters get no gradient from a c'=8 reconstruction (paper Eq. 1 mask).
    assert plain.encoder.conv_out.weight.grad[8:].abs().max() == 0
    assert plain.encoder.conv_out.weight.grad[:8].abs().max() > 0


def test_bf16_forward_is_finite(vae, images):
    vae = vae.to(torch.bfloat16)
    with torch.no_grad():
        out = vae(images.to(torch.bfloat16), latent_channels=4).sample
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_latent_scaling_helpers(vae, images):
    with torch.no_grad():
        scaled = encode_to_diffusion_space(vae, images, latent_channels=8)
        torch.testing.assert_close(scaled, vae.encode(images).latent[:, :8] * 0.7)
        torch.testing.assert_close(decode_from_diffusion_space(vae, scaled), vae.decode(scaled / 0.7).sample)


@pytest.mark.parametrize("name", sorted(AUTOENCODER_PRESETS))
def test_presets_build_on_meta(name):
    with torch.device("meta"):
        model = AutoencoderDC15.from_preset(name)
    config = AUTOENCODER_PRESETS[name]
    assert model.config.latent_channels == config["latent_channels"]
    assert model.spatial_compression_ratio == 2 ** (len(config["encoder_block_out_channels"]) - 1)


def test_preset_values():
    with torch.device("meta"):
        f64 = AutoencoderDC15.from_preset("dc-ae-f64c128-1.5")  # official spelling is an alias
    assert f64.spatial_compression_ratio == 64 and f64.config.scaling_factor == 0.5935
    assert f64.latent_channel_choices == tuple(range(16, 129, 4))
    assert not f64.has_latent_shortcuts
    # Encoder 1024 -> 128 head, decoder 128 -> 1024 stem, 12-channel pixel-shuffle head (dc_gen/aecore/models/dc_ae.py, dc_ae_f64_1_5).
    assert tuple(f64.encoder.conv_out.weight.shape) == (128, 1024, 3, 3)
    assert tuple(f64.decoder.conv_out.conv.weight.shape) == (12, 256, 3, 3)
    assert AUTOENCODER_PRESETS["dc-ae-f32c32-in-1.0"]["scaling_factor"] == 0.3189
    with pytest.raises(ValueError, match="not a known autoencoder preset"):
        AutoencoderDC15.from_preset("dc-ae-f16c4")


def test_bad_inputs(vae):
    with pytest.raises(ValueError, match="not divisible by the spatial compression ratio 8"):
        vae.encode(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError, match="4-D"):
        vae.encode(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="in_channels=3"):
        vae.encode(torch.zeros(1, 4, 64, 64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        vae.encode([[0.0]])
    for bad in (0, 17, -1):
        with pytest.raises(ValueError, match=r"latent_channels=.* outside the allowed range 1..16"):
            vae.encode(torch.zeros(1, 3, 64, 64), latent_channels=bad)
    with pytest.raises(TypeError, match="must be an int"):
        vae.encode(torch.zeros(1, 3, 64, 64), latent_channels=4.0)
    with pytest.raises(ValueError, match="outside the allowed range 1..16"):
        vae.decode(torch.zeros(1, 20, 8, 8))
    with pytest.raises(ValueError, match="4-D"):
        vae.decode(torch.zeros(16, 8, 8))
    with pytest.raises(ValueError, match="strictly increasing"):
        AutoencoderDC15(**{**TINY_AE15_CONFIG, "latent_channel_choices": (8, 4)})
    with pytest.raises(ValueError, match=r"1..latent_channels=16"):
        AutoencoderDC15(**{**TINY_AE15_CONFIG, "latent_channel_choices": (4, 32)})


def test_dc_ae_10_rejects_prefixes():
    vae = AutoencoderDC15(**TINY_AE10_CONFIG).eval()
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        assert vae.decode(vae.encode(x).latent).sample.shape == x.shape
    with pytest.raises(ValueError, match="latent-level shortcuts"):
        vae.decode(torch.zeros(1, 8, 8, 8))
    with pytest.raises(ValueError, match="latent-level shortcuts"):
        vae.encode(x, latent_channels=8)
    with pytest.raises(ValueError, match="needs a model without latent shortcuts"):
        AutoencoderDC15(**{**TINY_AE10_CONFIG, "latent_channel_choices": (8, 16)})


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), True, "0.5"])
def test_scaling_factor_must_be_finite_and_positive(bad):
    with pytest.raises(ValueError, match=r"scaling_factor=.* is not allowed: it must be a finite number > 0"):
        AutoencoderDC15(**{**TINY_AE15_CONFIG, "scaling_factor": bad})


def test_prefix_rules_of_a_structured_model(vae):
    """DC-AE 1.5-style (no latent shortcuts, choices 4..16): every prefix decodes, only the choices are trained."""
    assert vae.latent_channel_choices == (4, 8, 12, 16)
    assert [c for c in range(-1, 19) if vae.can_decode_prefix(c)] == list(range(1, 17))
    assert [c for c in range(-1, 19) if vae.is_trained_prefix(c)] == [4, 8, 12, 16]
    for not_an_int in (4.0, True, "4", None, torch.tensor(4)):
        assert not vae.can_decode_prefix(not_an_int) and not vae.is_trained_prefix(not_an_int)
    assert vae.check_prefix(6) == 6 and vae.check_prefix(16, "c") == 16
    for bad in (0, 17, -1):
        with pytest.raises(ValueError, match=rf"^c'={bad} is outside the allowed range 1..16 \(latent_channels"):
            vae.check_prefix(bad, "c'")
    with pytest.raises(TypeError, match=r"^latent_channels must be an int in 1..16, got 4.0 \(float\)\.$"):
        vae.check_prefix(4.0)
    with pytest.raises(TypeError, match=r"got True \(bool\)"):
        vae.check_prefix(True)


def test_prefix_rules_of_an_unstructured_model():
    """No latent_channel_choices: any prefix decodes, only the full latent is trained."""
    unstructured = AutoencoderDC15(**{**TINY_AE15_CONFIG, "latent_channel_choices": None})
    assert unstructured.latent_channel_choices == (16,)
    assert unstructured.can_decode_prefix(4) and unstructured.check_prefix(4) == 4
    assert [c for c in range(20) if unstructured.is_trained_prefix(c)] == [16]


def test_prefix_rules_of_a_dc_ae_10_model():
    """Latent-level shortcuts: only the full latent decodes, and it is the only trained one."""
    vae = AutoencoderDC15(**TINY_AE10_CONFIG)
    assert vae.has_latent_shortcuts and vae.latent_channel_choices == (16,)
    assert [c for c in range(20) if vae.can_decode_prefix(c)] == [16]
    assert [c for c in range(20) if vae.is_trained_prefix(c)] == [16]
    assert vae.check_prefix(16) == 16
    with pytest.raises(ValueError) as error:
        vae.check_prefix(8, "c'")
    assert str(error.value) == (
        "c'=8 < latent_channels=16, but this model has latent-level shortcuts (encoder_out_shortcut=True, "
        "decoder_in_shortcut=True, i.e. a DC-AE 1.0 model): channel prefixes are only defined for models without "
        "them (DC-AE 1.5). Use the full latent."
    )
    with pytest.raises(ValueError, match="outside the allowed range 1..16"):
        vae.check_prefix(17)
