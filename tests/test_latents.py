"""`dc_ae_hf.latents`: measuring the scaling factor (`compute_scaling_factor`, `latent_statistics`,
`LatentStatistics`) on a tiny AutoencoderDC15, and decoding channel prefixes with any AutoencoderDC
(`zero_fill_prefix`, `decode_prefix`, `check_prefix`, `can_decode_prefix`, `trained_prefixes`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_AE10_CONFIG, TINY_AE15_CONFIG
from diffusers import AutoencoderDC

from dc_ae_hf.latents import (
    LatentStatistics,
    can_decode_prefix,
    check_prefix,
    compute_scaling_factor,
    decode_from_diffusion_space,
    decode_prefix,
    encode_to_diffusion_space,
    latent_statistics,
    trained_prefixes,
    zero_fill_prefix,
)
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return AutoencoderDC15(**TINY_AE15_CONFIG).eval()


@pytest.fixture(scope="module")
def batches():
    """10 images in [-1, 1] in batches of 3, 5 and 2 (different sizes on purpose)."""
    images = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return [images[:3], images[3:8], images[8:]]


def _encode_each(vae, batches, latent_channels=None) -> torch.Tensor:
    with torch.no_grad():
        if latent_channels is None:
            return torch.cat([vae.encode(b).latent for b in batches]).double()
        return torch.cat([vae.encode(b, latent_channels=latent_channels).latent for b in batches]).double()


def test_scaling_factor_is_one_over_the_population_std_of_all_latent_elements(vae, batches):
    latents = _encode_each(vae, batches)  # (10, 16, 4, 4), the same batches, concatenated
    expected = 1.0 / latents.std(unbiased=False).item()
    factor = compute_scaling_factor(vae, batches)
    assert factor == pytest.approx(expected, rel=1e-6)
    assert isinstance(factor, float)
    # dicts with "pixel_values" (the trainers' batches), a generator and a single 4-D tensor give the same number
    assert compute_scaling_factor(vae, [{"pixel_values": b, "labels": None} for b in batches]) == pytest.approx(
        factor, rel=1e-12
    )
    assert compute_scaling_factor(vae, (b for b in batches)) == pytest.approx(factor, rel=1e-12)
    all_at_once = compute_scaling_factor(vae, torch.cat(batches))  # one batch: batch-size-dependent fp32 rounding
    assert all_at_once == pytest.approx(factor, rel=1e-5)

    statistics = latent_statistics(vae, batches)  # the mean is subtracted for the std, never from the latents
    assert statistics.count == latents.numel()
    assert statistics.mean == pytest.approx(latents.mean().item(), rel=1e-9, abs=1e-12)
    assert statistics.std == pytest.approx(latents.std(unbiased=False).item(), rel=1e-9)


def test_measured_factor_gives_unit_variance_diffusion_latents(vae, batches):
    measured = AutoencoderDC15(**TINY_AE15_CONFIG).eval()
    measured.load_state_dict(vae.state_dict())
    measured.register_to_config(scaling_factor=compute_scaling_factor(vae, batches))
    with torch.no_grad():
        scaled = torch.cat([encode_to_diffusion_space(measured, b) for b in batches]).double()
    assert scaled.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-6)


def test_prefix_statistics(vae, batches):
    latents = _encode_each(vae, batches, latent_channels=8)  # (10, 8, 4, 4): the structured prefix c' = 8
    factor = compute_scaling_factor(vae, batches, latent_channels=8)
    assert factor == pytest.approx(1.0 / latents.std(unbiased=False).item(), rel=1e-6)
    with pytest.raises(ValueError, match="outside the allowed range"):
        compute_scaling_factor(vae, batches, latent_channels=17)


def test_streaming_statistics_merge_and_round_trip():
    values = torch.randn(7, 4, 3, generator=torch.Generator().manual_seed(0)) * 3 + 2
    whole = LatentStatistics().update(values)
    parts = LatentStatistics().update(values[:2]).merge(LatentStatistics().update(values[2:]))
    assert parts.count == whole.count == values.numel()
    assert parts.mean == pytest.approx(values.double().mean().item(), rel=1e-12)
    assert parts.std == pytest.approx(values.double().std(unbiased=False).item(), rel=1e-12)
    assert LatentStatistics.from_dict(whole.to_dict()) == whole
    with pytest.raises(ValueError, match="no latent elements"):
        _ = LatentStatistics().std


class _ConstantEncoder:
    """A stand-in autoencoder whose latent is always `value` (std 0, or NaN)."""

    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self, value: float):
        self.value = value

    def encode(self, images):
        return SimpleNamespace(latent=torch.full((images.shape[0], 4, 2, 2), self.value))


def test_bad_inputs_raise_clear_errors(vae, batches):
    with pytest.raises(ValueError, match="images yielded no batch"):
        compute_scaling_factor(vae, [])
    with pytest.raises(ValueError, match="only empty batches"):
        compute_scaling_factor(vae, [torch.zeros(0, 3, 32, 32)])
    with pytest.raises(TypeError, match="images must be an iterable of image batches"):
        compute_scaling_factor(vae, 3)
    with pytest.raises(TypeError, match="batch 1 is a list; expected a tensor"):
        compute_scaling_factor(vae, [batches[0], [1, 2]])
    with pytest.raises(TypeError, match="without a 'pixel_values' key"):
        compute_scaling_factor(vae, [{"images": batches[0]}])
    with pytest.raises(ValueError, match=r"batch 0 has shape \(3, 32, 32\); expected \(B, 3, H, W\)"):
        compute_scaling_factor(vae, [batches[0][0]])
    with pytest.raises(ValueError, match="have std 0.0 .* not a usable scaling factor"):
        compute_scaling_factor(_ConstantEncoder(0.5), [batches[0]])
    with pytest.raises(ValueError, match="have std nan"):
        compute_scaling_factor(_ConstantEncoder(float("nan")), [batches[0]])


# ---------------------------------------------------------------------------------------------------------------------
# Channel prefixes with any AutoencoderDC.

TOL = dict(rtol=1e-5, atol=1e-5)

# diffusers' own class with the weights layout of TINY_AE15_CONFIG (no latent shortcuts) and of TINY_AE10_CONFIG.
PLAIN_AE15_CONFIG = {k: v for k, v in TINY_AE15_CONFIG.items() if k != "latent_channel_choices"}


def test_zero_fill_prefix():
    prefix = torch.randn(2, 5, 3, 3, requires_grad=True)
    filled = zero_fill_prefix(prefix, 16)
    assert filled.shape == (2, 16, 3, 3) and filled.dtype == prefix.dtype
    assert torch.equal(filled[:, :5], prefix) and not filled[:, 5:].any()
    filled.sum().backward()  # differentiable: the decoder of a trainer can take it
    assert torch.equal(prefix.grad, torch.ones_like(prefix))
    full = torch.randn(1, 16, 2, 2)
    assert zero_fill_prefix(full, 16) is full
    with pytest.raises(ValueError, match=r"^latents has 17 channels, more than latent_channels=16"):
        zero_fill_prefix(torch.zeros(1, 17, 2, 2), 16)
    with pytest.raises(ValueError, match=r"latents must be 4-D .* got shape \(16, 2, 2\)"):
        zero_fill_prefix(torch.zeros(16, 2, 2), 16)
    with pytest.raises(TypeError, match="latents must be a torch.Tensor"):
        zero_fill_prefix([[0.0]], 16)
    with pytest.raises(TypeError, match=r"latent_channels must be an int, got 16.0 \(float\)"):
        zero_fill_prefix(full, 16.0)


def test_prefix_rules_ask_an_autoencoder_dc15(vae):
    """An AutoencoderDC15 answers with its own rules, whatever its structure."""
    assert trained_prefixes(vae) == (4, 8, 12, 16)
    assert [c for c in range(18) if can_decode_prefix(vae, c)] == list(range(1, 17))
    assert check_prefix(vae, 6) == 6
    with pytest.raises(ValueError, match=r"^c'=17 is outside the allowed range 1..16 \(latent_channels of this model"):
        check_prefix(vae, 17, "c'")
    unstructured = AutoencoderDC15(**{**TINY_AE15_CONFIG, "latent_channel_choices": None})
    assert trained_prefixes(unstructured) == (16,) and can_decode_prefix(unstructured, 4)
    dc_ae_10 = AutoencoderDC15(**TINY_AE10_CONFIG)
    assert trained_prefixes(dc_ae_10) == (16,)
    assert [c for c in range(18) if can_decode_prefix(dc_ae_10, c)] == [16]
    with pytest.raises(ValueError, match=r"^c'=8 < latent_channels=16, but this model has latent-level shortcuts"):
        check_prefix(dc_ae_10, 8, "c'")


def test_prefix_rules_of_a_plain_autoencoder_dc():
    """A plain AutoencoderDC records no trained prefixes; it decodes any prefix unless its decoder has an input
    shortcut (the rule DCAE15Pipeline applies)."""
    plain = AutoencoderDC(**PLAIN_AE15_CONFIG)
    assert trained_prefixes(plain) is None
    assert [c for c in range(-1, 18) if can_decode_prefix(plain, c)] == list(range(1, 17))
    assert not can_decode_prefix(plain, 4.0) and not can_decode_prefix(plain, True)
    assert check_prefix(plain, 4) == 4
    with pytest.raises(ValueError) as error:
        check_prefix(plain, 0, "c'")
    assert str(error.value) == "c'=0 is outside the allowed range 1..16 (latent_channels of this AutoencoderDC)."
    with pytest.raises(TypeError, match=r"^latent_channels must be an int in 1..16, got 4.0 \(float\)\.$"):
        check_prefix(plain, 4.0)
    dc_ae_10 = AutoencoderDC(**TINY_AE10_CONFIG)
    assert trained_prefixes(dc_ae_10) is None
    assert [c for c in range(18) if can_decode_prefix(dc_ae_10, c)] == [16]
    with pytest.raises(ValueError) as error:
        check_prefix(dc_ae_10, 8, "c'")
    assert str(error.value) == (
        "c'=8 < latent_channels=16, but this AutoencoderDC has latent shortcuts (decoder_in_shortcut=True, a DC-AE "
        "1.0 model): its decoder repeats latent channels into its stem, so it cannot decode a channel prefix. Use "
        "the full latent."
    )
    # only the decoder's shortcut matters for decoding
    encoder_shortcut = AutoencoderDC(**{**PLAIN_AE15_CONFIG, "encoder_out_shortcut": True})
    assert can_decode_prefix(encoder_shortcut, 8)


def test_decode_prefix_with_any_autoencoder_dc(vae):
    """The same prefix decodes to the same images with AutoencoderDC15 and diffusers' AutoencoderDC (same weights),
    and equals decoding the zero-filled full latent."""
    plain = AutoencoderDC(**PLAIN_AE15_CONFIG).eval()
    plain.load_state_dict(vae.state_dict())
    latent = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for c in (4, 6, 16):
            expected = vae.decode(zero_fill_prefix(latent[:, :c], 16)).sample  # (2, 3, 32, 32)
            assert expected.shape == (2, 3, 32, 32)
            torch.testing.assert_close(decode_prefix(plain, latent[:, :c]), expected, **TOL)
            if c == 6:  # not a trained prefix: the model's own warning
                with pytest.warns(UserWarning, match=r"channels of z\)=6 is not one of .* \[4, 8, 12, 16\]"):
                    torch.testing.assert_close(decode_prefix(vae, latent[:, :c]), expected, rtol=0, atol=0)
            else:
                torch.testing.assert_close(decode_prefix(vae, latent[:, :c]), expected, rtol=0, atol=0)
        # in diffusion space too (divided by the scaling factor, then decoded as a prefix)
        torch.testing.assert_close(
            decode_from_diffusion_space(plain, latent[:, :8]), decode_prefix(vae, latent[:, :8] / 0.7), **TOL
        )
    with pytest.raises(ValueError, match=r"^latents.shape\[1\] \(latent channels of latents\)=17 is outside"):
        decode_prefix(plain, torch.zeros(1, 17, 4, 4))
    with pytest.raises(ValueError, match=r"^z.shape\[1\] \(latent channels of z\)=17 is outside"):
        decode_prefix(vae, torch.zeros(1, 17, 4, 4))
    with pytest.raises(ValueError, match="latents must be 4-D"):
        decode_prefix(plain, torch.zeros(16, 4, 4))
    dc_ae_10 = AutoencoderDC(**TINY_AE10_CONFIG).eval()
    with pytest.raises(ValueError, match="has latent shortcuts"):
        decode_prefix(dc_ae_10, torch.zeros(1, 8, 4, 4))
    with torch.no_grad():
        assert decode_prefix(dc_ae_10, torch.zeros(1, 16, 4, 4)).shape == (1, 3, 16, 16)
