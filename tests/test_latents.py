"""`dc_ae_hf.latents`: measuring the scaling factor (`compute_scaling_factor`, `latent_statistics`,
`LatentStatistics`) on a tiny AutoencoderDC15."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_AE15_CONFIG

from dc_ae_hf.latents import (
    LatentStatistics,
    compute_scaling_factor,
    encode_to_diffusion_space,
    latent_statistics,
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
