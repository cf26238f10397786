"""Tests of dc_ae_hf.metrics: PSNR/SSIM, LPIPS, FID/IS/precision-recall, FD-DINOv2, AE evaluation.

LPIPS, torch-fidelity and DINOv2 run through their real loading code with the seeded stand-in weights of
dc_ae_hf.testing (no network). Cost control on a 2-core CPU: the Inception forward at 299 px takes about 0.3-1 s per
image, and one 2048-d Frechet distance (an eigendecomposition or sqrtm of a 2048x2048 matrix) 8-25 s. So the two
image sets hold 8 images each, torch-fidelity's on-disk feature cache (inputs named "A" and "B") sends every set
through Inception once per session, the FID tests use Inception's 64-d feature layer, and only the rFID test of
evaluate_autoencoder computes a full 2048-d FID.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from conftest import fixture_path
from diffusers import AutoencoderDC
from PIL import Image
from safetensors.torch import load_file
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import StructuralSimilarityIndexMeasure

from dc_ae_hf.metrics.autoencoder import evaluate_autoencoder, format_markdown_table
from dc_ae_hf.metrics.generation import (
    compute_generation_metrics,
    compute_reference_statistics,
    dinov2_features,
    fd_dinov2,
    feature_statistics,
    fid_from_reference_statistics,
    frechet_distance,
    inception_features,
    load_dinov2,
    load_statistics,
    save_statistics,
)
from dc_ae_hf.metrics.image import psnr, ssim, to_uint8
from dc_ae_hf.metrics.lpips import load_lpips, lpips_backbone_checkpoint_path
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.testing import write_standin_inception_weights, write_standin_lpips_backbone, write_tiny_dinov2

NUM_IMAGES = 8
# torch-fidelity options of the generation tests: 64-d FID/PR features, no loader workers.
SMALL_FIDELITY = dict(save_cpu_ram=True, feature_layer_fid="64", feature_layer_prc="64")

TINY_AE = dict(
    latent_channels=8,
    attention_head_dim=8,
    encoder_block_types="ResBlock",
    decoder_block_types="ResBlock",
    encoder_block_out_channels=(8, 16),
    decoder_block_out_channels=(8, 16),
    encoder_layers_per_block=(1, 1),
    decoder_layers_per_block=(1, 1),
    encoder_qkv_multiscales=((), ()),
    decoder_qkv_multiscales=((), ()),
    encoder_out_shortcut=False,
    decoder_in_shortcut=False,
)


# ---------------------------------------------------------------------------------------------------------------------
# Session fixtures.


def _smooth_images(num: int, size: int, seed: int) -> torch.Tensor:
    """Float images (num, 3, size, size) in [-1, 1]: random 8x8 colour fields upsampled bilinearly."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num, 3, 8, 8, generator=generator) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


@pytest.fixture(scope="session")
def image_sets() -> dict[str, torch.Tensor]:
    """Set A and a shifted, lower-contrast set B, as uint8 (N, 3, 64, 64)."""
    a = _smooth_images(NUM_IMAGES, 64, seed=1)
    b = (0.5 * _smooth_images(NUM_IMAGES, 64, seed=2) + 0.4).clamp(-1, 1)
    return {"A": to_uint8(a), "B": to_uint8(b)}


@pytest.fixture(scope="session")
def image_folders(tmp_path_factory, image_sets) -> dict[str, str]:
    folders = {}
    for name, images in image_sets.items():
        folder = tmp_path_factory.mktemp(f"images_{name}")
        for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
            Image.fromarray(image).save(folder / f"{i:03d}.png")
        folders[name] = str(folder)
    return folders


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> str:
    return write_standin_inception_weights(tmp_path_factory.mktemp("inception") / "inception.pth", seed=0)


@pytest.fixture(scope="session")
def fidelity_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("fidelity_cache"))


@pytest.fixture(scope="session")
def generation_metrics(image_folders, inception_weights, fidelity_cache) -> dict[str, float]:
    """FID, IS and precision/recall of B (generated) against A (reference) in one torch-fidelity call.

    It extracts both Inception layers of both sets and fills the feature cache the other Inception tests read.
    """
    return compute_generation_metrics(
        image_folders["B"],
        image_folders["A"],
        inception_weights_path=inception_weights,
        isc_splits=2,
        cache_root=fidelity_cache,
        input1_cache_name="B",
        input2_cache_name="A",
        **SMALL_FIDELITY,
    )


@pytest.fixture(scope="session")
def lpips_squeeze(tmp_path_factory):
    torch_home = tmp_path_factory.mktemp("torch_home")
    write_standin_lpips_backbone("squeeze", torch_home, seed=0)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("TORCH_HOME", str(torch_home))
        assert lpips_backbone_checkpoint_path("squeeze") == str(
            torch_home / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
        )
        return load_lpips("squeeze")


@pytest.fixture(scope="session")
def tiny_dinov2_path(tmp_path_factory) -> str:
    return write_tiny_dinov2(tmp_path_factory.mktemp("dinov2") / "tiny-dinov2", seed=0)


# ---------------------------------------------------------------------------------------------------------------------
# PSNR, SSIM, quantisation.


def test_to_uint8_matches_official_rounding():
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 1 / 255, 0.5, 1.0, 2.0]).view(1, 1, 1, 8)
    # clamp(127.5 x + 128, 0, 255) truncated: -0.5 -> 64.25 -> 64, 0 -> 128, 1/255 -> 128.5 -> 128, 0.5 -> 191.75.
    assert to_uint8(x).flatten().tolist() == [0, 0, 64, 128, 128, 191, 255, 255]
    assert to_uint8(x).dtype == torch.uint8


def test_psnr_known_values():
    target = torch.zeros(3, 3, 16, 16)
    assert torch.isinf(psnr(target, target)).all()
    signs = torch.where(torch.arange(16 * 16).view(16, 16) % 2 == 0, 1.0, -1.0).expand(3, 3, 16, 16)
    noisy = target + signs * torch.tensor([0.1, 0.05, 0.01]).view(3, 1, 1, 1)  # MSE = 1e-2, 2.5e-3, 1e-4
    expected = [10 * math.log10(4 / mse) for mse in (1e-2, 2.5e-3, 1e-4)]
    torch.testing.assert_close(psnr(noisy, target), torch.tensor(expected, dtype=torch.float64))
    # The same pictures in uint8 with peak 255: PSNR is invariant to the affine map [-1, 1] -> [0, 255].
    a, b = torch.tensor([[[[10, 20]]]], dtype=torch.uint8), torch.tensor([[[[12, 20]]]], dtype=torch.uint8)
    torch.testing.assert_close(psnr(a, b, data_range=255.0), torch.tensor([10 * math.log10(255**2 / 2.0)]).double())


def _ssim_scipy(x: np.ndarray, y: np.ndarray, border: str) -> float:
    """Independent SSIM of two (C, H, W) float images in [0, 255] with scipy's gaussian filter."""
    mode = "mirror" if border == "reflect" else "constant"  # scipy "mirror" is torch's "reflect" padding

    def blur(a):
        return scipy.ndimage.gaussian_filter(a, sigma=(0, 1.5, 1.5), truncate=3.5, mode=mode)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy = np.maximum(blur(x * x) - mx**2, 0), np.maximum(blur(y * y) - my**2, 0)
    cxy = blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    if border == "valid":
        ssim_map = ssim_map[:, 5:-5, 5:-5]
    return float(ssim_map.mean())


@pytest.mark.parametrize("border", ["reflect", "valid"])
def test_ssim_matches_independent_scipy_computation(border):
    pred = _smooth_images(2, 32, seed=3)
    target = (pred + 0.2 * torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))).clamp(-1, 1)
    values = ssim(pred.double(), target.double(), border=border)
    assert values.shape == (2,)
    for i in range(2):
        x, y = (127.5 * (t[i].double().numpy() + 1) for t in (pred, target))
        assert values[i].item() == pytest.approx(_ssim_scipy(x, y, border), abs=1e-10)
    # uint8 with data_range (0, 255) is the same computation as the float [-1, 1] images of the same pixels.
    p8, t8 = to_uint8(pred), to_uint8(target)
    torch.testing.assert_close(
        ssim(p8, t8, data_range=(0.0, 255.0), border=border),
        ssim(p8.double() / 127.5 - 1, t8.double() / 127.5 - 1, border=border),
    )


def test_ssim_analytic_cases():
    image = _smooth_images(2, 24, seed=5)
    torch.testing.assert_close(ssim(image, image), torch.ones(2, dtype=torch.float64))
    # Constant images: no variance, so SSIM is the luminance term (2 m1 m2 + C1) / (m1^2 + m2^2 + C1) in [0, 255].
    m1, m2 = 100.0, 150.0
    c1 = (0.01 * 255) ** 2
    expected = (2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1)
    a = torch.full((1, 3, 16, 16), m1 / 127.5 - 1)
    b = torch.full((1, 3, 16, 16), m2 / 127.5 - 1)
    assert ssim(a, b).item() == pytest.approx(expected, rel=1e-6)
    assert ssim(a, b).item() == pytest.approx(ssim(b, a).item(), abs=1e-7)  # symmetric


def _official_uint8(images: torch.Tensor) -> torch.Tensor:
    """The official AE evaluation's quantisation (dc_gen/aecore/trainer.py), written as it is there."""
    return (255 * (images * 0.5 + 0.5) + 0.5).clamp(0, 255).to(torch.uint8)


def _ssim_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(real, reconstruction) uint8 pairs: the official DC-AE fixture's input and its reconstructions from every
    channel prefix (random weights: SSIM near 0), and smooth images with noise of three sizes (SSIM 0.3 to 0.99)."""
    io = load_file(fixture_path("ae15_a.io.safetensors"))
    real = _official_uint8(io["x"])
    pairs = [(real, _official_uint8(io[key])) for key in sorted(io) if key.startswith("recon")]
    smooth = _smooth_images(3, 48, seed=10)
    generator = torch.Generator().manual_seed(11)
    for noise in (0.01, 0.05, 0.3):
        noisy = (smooth + noise * torch.randn(smooth.shape, generator=generator)).clamp(-1, 1)
        pairs.append((_official_uint8(smooth), _official_uint8(noisy)))
    return pairs


def test_ssim_reproduces_the_official_torchmetrics_call():
    """The official evaluation: ``StructuralSimilarityIndexMeasure(data_range=(0.0, 255.0))`` updated with the uint8
    input and reconstruction, ``compute()`` = the mean over all images (torchmetrics' float32 on uint8 inputs)."""
    official = StructuralSimilarityIndexMeasure(data_range=(0.0, 255.0))
    ours = []
    for real, recon in _ssim_pairs():
        official.update(real, recon)
        values = ssim(recon, real, data_range=(0.0, 255.0))
        assert values.dtype == torch.float64
        # Per image: the official float32 numbers up to their round-off.
        per_image = structural_similarity_index_measure(real, recon, data_range=(0.0, 255.0), reduction="none")
        assert per_image.dtype == torch.float32  # what the official call computes in
        torch.testing.assert_close(values, per_image.double(), rtol=0, atol=1e-5)
        # The same torchmetrics computation in float64: equal up to float64 round-off (current default: reflect).
        exact = structural_similarity_index_measure(
            real.double(), recon.double(), data_range=(0.0, 255.0), reduction="none"
        )
        torch.testing.assert_close(values, exact, rtol=0, atol=1e-12)
        ours.append(values)
    ours = torch.cat(ours)
    assert ours.min() < 0.05 and ours.max() > 0.95  # the pairs span the SSIM range
    assert ours.mean().item() == pytest.approx(official.compute().item(), abs=1e-5)


def test_ssim_shifts_float_images_where_torchmetrics_does_not():
    # Dark float images in [-1, 1]: SSIM's luminance term is not shift-invariant. ssim() shifts to [0, 2] first, so
    # it equals torchmetrics on the shifted images (and on the uint8 images, test above), not on the raw ones.
    generator = torch.Generator().manual_seed(12)
    real = (0.1 * _smooth_images(2, 32, seed=13) - 0.8).double()
    recon = (real + 0.05 * torch.randn(real.shape, generator=generator, dtype=torch.float64)).clamp(-1, 1)
    values = ssim(recon, real)
    shifted = structural_similarity_index_measure(recon + 1, real + 1, data_range=(0.0, 2.0), reduction="none")
    torch.testing.assert_close(values, shifted, rtol=0, atol=1e-12)
    raw = structural_similarity_index_measure(recon, real, data_range=(-1.0, 1.0), reduction="none")
    assert (values - raw).abs().min() > 5e-4


def test_ssim_valid_border_drops_the_padded_windows():
    # "valid": the torchmetrics SSIM map without its 5-pixel reflect-padded border (what torchmetrics averaged before
    # its PR #2721, and skimage's gaussian SSIM), whichever torchmetrics release is installed.
    real, recon = _ssim_pairs()[-1]
    _, ssim_map = structural_similarity_index_measure(
        recon.double(), real.double(), data_range=(0.0, 255.0), reduction="none", return_full_image=True
    )
    assert ssim_map.shape == real.shape  # the full map: one window per pixel
    expected = ssim_map[..., 5:-5, 5:-5].flatten(1).mean(dim=1)
    torch.testing.assert_close(ssim(recon, real, (0.0, 255.0), border="valid"), expected, rtol=0, atol=1e-12)
    assert (ssim(recon, real, (0.0, 255.0), border="valid") - ssim(recon, real, (0.0, 255.0))).abs().max() > 1e-4


def test_image_metrics_reject_bad_inputs():
    x = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, torch.zeros(2, 3, 16, 8))
    with pytest.raises(ValueError, match="shape \\(B, C, H, W\\)"):
        ssim(x[0], x[0])
    with pytest.raises(ValueError, match="data_range=0.0 .*finite number > 0"):
        psnr(x, x, data_range=0.0)
    with pytest.raises(TypeError, match="data_range=\\(-1, 1\\) .*finite number"):
        psnr(x, x, data_range=(-1, 1))
    with pytest.raises(ValueError, match="data_range\\[0\\]=nan .*finite number"):
        ssim(x, x, data_range=(math.nan, 1.0))
    with pytest.raises(ValueError, match="low < high"):
        ssim(x, x, data_range=(1.0, -1.0))
    with pytest.raises(TypeError, match="data_range must be a \\(low, high\\) pair"):
        ssim(x, x, data_range=2.0)
    x8 = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8 images have values 0..255, so data_range must be 255.0"):
        psnr(x8, x8)
    with pytest.raises(ValueError, match="data_range must be \\(0.0, 255.0\\)"):
        ssim(x8, x8)
    with pytest.raises(TypeError, match="both be uint8 or both be float"):
        psnr(x8, x, data_range=255.0)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="border must be"):
        ssim(x, x, border="same")
    with pytest.raises(TypeError, match="floating point"):
        to_uint8(x8)


# ---------------------------------------------------------------------------------------------------------------------
# LPIPS.


def test_lpips_loads_standin_backbone_and_measures_distance(lpips_squeeze):
    assert not lpips_squeeze.training
    assert not any(p.requires_grad for p in lpips_squeeze.parameters())
    a = _smooth_images(2, 32, seed=6)
    b = _smooth_images(2, 32, seed=7)
    assert torch.allclose(lpips_squeeze(a, a).flatten(), torch.zeros(2), atol=1e-7)
    distance = lpips_squeeze(a, b).flatten()
    assert (distance > 1e-4).all() and torch.isfinite(distance).all()
    # Usable as a perceptual loss: gradients reach the input, not the frozen network.
    pred = a.clone().requires_grad_(True)
    lpips_squeeze(pred, b).mean().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_lpips_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="net must be one of \\['alex', 'squeeze', 'vgg'\\], got 'resnet'"):
        load_lpips("resnet")

    def offline(url, dst, *args, **kwargs):
        raise OSError(f"no network for {url}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth") as info:
        load_lpips("alex")
    assert str(tmp_path / "hub" / "checkpoints") in str(info.value)


# ---------------------------------------------------------------------------------------------------------------------
# Frechet distance.


def test_frechet_distance_analytic():
    # 1-D: N(0, 1) vs N(1, 4): 1 + 1 + 4 - 2 * sqrt(4) = 2.
    assert frechet_distance(np.zeros(1), np.eye(1), np.ones(1), 4 * np.eye(1)) == pytest.approx(2.0)
    # Diagonal covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 5.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
    features = np.random.default_rng(0).normal(size=(50, 4))
    mu, sigma = feature_statistics(features)
    np.testing.assert_allclose(mu, features.mean(0))
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-10


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same length"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="sigma2 must have shape \\(2, 2\\)"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        feature_statistics(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="shape \\(N, D\\)"):
        feature_statistics(torch.zeros(4))


def test_load_statistics_checks_the_file(tmp_path):
    good = save_statistics(tmp_path / "good.npz", np.zeros(3), np.eye(3), mu_dinov2=np.ones(2), sigma_dinov2=np.eye(2))
    mu, sigma = load_statistics(good)
    assert mu.shape == (3,) and sigma.shape == (3, 3)
    assert load_statistics(good, prefix="dinov2")[0].tolist() == [1.0, 1.0]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_statistics(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match="text.npz.* is not a readable .npz file"):
        load_statistics(tmp_path / "text.npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match="is one array, not an .npz archive"):
        load_statistics(tmp_path / "array.npy")
    np.savez(tmp_path / "keys.npz", mean=np.zeros(3), cov=np.eye(3))
    with pytest.raises(KeyError, match="no 'mu'/'sigma' arrays; it holds \\['cov', 'mean'\\]"):
        load_statistics(tmp_path / "keys.npz")
    np.savez(tmp_path / "shapes.npz", mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(
        ValueError, match="'mu' must be \\(D,\\) and 'sigma' \\(D, D\\), got shapes \\(3,\\) and \\(4, 4\\)"
    ):
        load_statistics(tmp_path / "shapes.npz")
    np.savez(tmp_path / "nan.npz", mu=np.array([0.0, np.nan]), sigma=np.eye(2))
    with pytest.raises(ValueError, match="NaN or inf"):
        load_statistics(tmp_path / "nan.npz")
    np.savez(tmp_path / "objects.npz", mu=np.array([{}], dtype=object), sigma=np.eye(1))
    with pytest.raises(ValueError, match="cannot be read"):
        load_statistics(tmp_path / "objects.npz")


def test_generation_module_gathers_the_public_names():
    """dc_ae_hf/metrics/generation.py is one namespace for the generation metrics: each public name is the object
    of the module that defines it."""
    from dc_ae_hf.metrics import dinov2, frechet, generation, image_sets, inception

    homes = {
        frechet: ["feature_statistics", "frechet_distance", "save_statistics", "load_statistics"],
        inception: ["inception_features", "compute_reference_statistics", "fid_from_reference_statistics"]
        + ["compute_generation_metrics"],
        dinov2: ["DEFAULT_DINOV2", "load_dinov2", "dinov2_features", "fd_dinov2"],
        image_sets: ["ImageSet"],
    }
    assert sorted(generation.__all__) == sorted(name for names in homes.values() for name in names)
    for module, names in homes.items():
        for name in names:
            assert getattr(generation, name) is getattr(module, name), name


# ---------------------------------------------------------------------------------------------------------------------
# FID, IS, precision/recall (torch-fidelity) and reference statistics.


def test_fid_is_prc_ranges(generation_metrics):
    assert set(generation_metrics) == {
        "fid",
        "inception_score_mean",
        "inception_score_std",
        "precision",
        "recall",
        "f_score",
    }
    assert all(isinstance(v, float) and math.isfinite(v) for v in generation_metrics.values())
    assert generation_metrics["fid"] > 0.05  # stand-in weights: only relative values mean something
    assert generation_metrics["inception_score_mean"] >= 1.0  # IS = exp(E KL(p(y|x) || p(y))) >= 1
    assert generation_metrics["inception_score_std"] >= 0.0
    for key in ("precision", "recall", "f_score"):
        assert 0.0 <= generation_metrics[key] <= 1.0


def test_a_set_against_itself_has_zero_fid_and_full_precision_recall(
    generation_metrics, image_folders, inception_weights, fidelity_cache
):
    same = compute_generation_metrics(
        image_folders["A"],
        image_folders["A"],
        inception_score=False,
        inception_weights_path=inception_weights,
        cache_root=fidelity_cache,
        input1_cache_name="A",
        input2_cache_name="A",
        **SMALL_FIDELITY,
    )
    assert set(same) == {"fid", "precision", "recall", "f_score"}
    assert abs(same["fid"]) < 1e-6 * generation_metrics["fid"]
    # Every sample lies inside its own k-NN ball: precision = recall = 1.
    assert same["precision"] == same["recall"] == pytest.approx(1.0)


def test_tensor_and_folder_inputs_give_the_same_features(image_sets, image_folders, inception_weights):
    # Two images only: a float tensor in [-1, 1] is quantised like the PNGs were written.
    as_float = image_sets["A"][:2].float() / 127.5 - 1 + 0.2 / 255
    folder = os.path.join(image_folders["A"], "..", "two_images")
    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(image_sets["A"][:2].permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image).save(os.path.join(folder, f"{i}.png"))
    from_tensor = inception_features(as_float, inception_weights, ("64",), save_cpu_ram=True)["64"]
    from_folder = inception_features(folder, inception_weights, ("64",), save_cpu_ram=True)["64"]
    assert from_tensor.shape == (2, 64)
    torch.testing.assert_close(from_tensor, from_folder)


def test_reference_statistics_round_trip(
    generation_metrics, image_folders, inception_weights, fidelity_cache, tmp_path
):
    cached = dict(SMALL_FIDELITY, cache_root=fidelity_cache)
    path = compute_reference_statistics(
        image_folders["A"],
        tmp_path / "ref.npz",
        inception_weights,
        feature_layer="64",
        input1_cache_name="A",
        **cached,
    )
    mu, sigma = load_statistics(path)
    assert mu.shape == (64,) and sigma.shape == (64, 64) and mu.dtype == np.float64
    features = inception_features(image_folders["A"], inception_weights, ("64",), input1_cache_name="A", **cached)[
        "64"
    ]
    mu_direct, sigma_direct = feature_statistics(features)
    np.testing.assert_array_equal(mu, mu_direct)
    np.testing.assert_array_equal(sigma, sigma_direct)
    # FID of B against the file equals torch-fidelity's image-vs-image FID (sqrtm vs eigenvalues: round-off only).
    fid_file = fid_from_reference_statistics(
        image_folders["B"], path, inception_weights, feature_layer="64", input1_cache_name="B", **cached
    )
    assert fid_file == pytest.approx(generation_metrics["fid"], rel=1e-6)
    via_api = compute_generation_metrics(
        image_folders["B"],
        path,
        precision_recall=False,
        inception_weights_path=inception_weights,
        isc_splits=2,
        input1_cache_name="B",
        **cached,
    )
    assert via_api["fid"] == pytest.approx(fid_file, rel=1e-9)
    assert via_api["inception_score_mean"] == pytest.approx(generation_metrics["inception_score_mean"], rel=1e-6)
    with pytest.raises(ValueError, match="precision_recall needs reference images"):
        compute_generation_metrics(image_folders["B"], path, inception_weights_path=inception_weights, **cached)
    with pytest.raises(KeyError, match="mu_dinov2"):
        load_statistics(path, prefix="dinov2")
    # Statistics of another layer than the features: named before any Frechet distance is attempted.
    other = save_statistics(tmp_path / "ref192.npz", np.zeros(192), np.eye(192))
    with pytest.raises(ValueError, match="ref192.npz' are 192-d, but Inception layer '64' gives 64-d features"):
        compute_generation_metrics(
            image_folders["B"],
            other,
            inception_score=False,
            precision_recall=False,
            inception_weights_path=inception_weights,
            input1_cache_name="B",
            **cached,
        )


def test_generation_metrics_reject_bad_inputs(image_folders, inception_weights, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compute_generation_metrics(
            str(tmp_path / "missing"), image_folders["A"], inception_weights_path=inception_weights
        )
    with pytest.raises(ValueError, match="reference is required"):
        compute_generation_metrics(image_folders["A"], None, inception_weights_path=inception_weights)
    with pytest.raises(ValueError, match="fidelity_kwargs must not set \\['cuda'\\]"):
        compute_generation_metrics(image_folders["A"], image_folders["B"], cuda=False)
    with pytest.raises(FileNotFoundError, match="inception_weights_path"):
        compute_generation_metrics(image_folders["A"], image_folders["B"], inception_weights_path=tmp_path / "x.pth")
    torch.save({"not": "inception"}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torch-fidelity inception-v3-compat state dict"):
        compute_generation_metrics(image_folders["A"], image_folders["B"], inception_weights_path=tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="shape \\(N, 3, H, W\\)"):
        compute_generation_metrics(
            torch.zeros(4, 1, 8, 8), image_folders["A"], inception_weights_path=inception_weights
        )
    with pytest.raises(ValueError, match="Nothing to compute"):
        compute_generation_metrics(image_folders["A"], image_folders["B"], False, False, False)

    def offline(url, dst, *args, **kwargs):
        raise OSError(f"no network for {url}")

    # No weights path and no cached file: the download fails offline with an error naming the file and where to put it.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    expected = str(tmp_path / "torch_home" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth")
    with pytest.raises(FileNotFoundError, match="could not be downloaded") as info:
        compute_generation_metrics(image_folders["A"], image_folders["B"])
    assert expected in str(info.value)


# ---------------------------------------------------------------------------------------------------------------------
# FD-DINOv2.


def test_fd_dinov2_with_tiny_model(image_sets, tiny_dinov2_path, tmp_path):
    model = load_dinov2(tiny_dinov2_path)
    assert not model.training
    a, b = image_sets["A"], image_sets["B"]
    features = dinov2_features(a, model, batch_size=5)
    assert features.shape == (NUM_IMAGES, 32) and features.dtype == torch.float64
    # EDM2 preprocessing by hand for the first two images.
    x = F.interpolate(a[:2].float(), size=(224, 224), mode="bicubic", antialias=True) / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        expected = model(pixel_values=x).last_hidden_state[:, 0]  # CLS token after the final layer norm
    torch.testing.assert_close(features[:2].float(), expected, rtol=1e-4, atol=1e-5)

    fd_self = fd_dinov2(a, a, model)
    fd_shift = fd_dinov2(a, b, model)
    assert abs(fd_self) < 1e-6 * fd_shift and fd_shift > 0
    # Through the generation API, and against a statistics file holding the DINOv2 statistics.
    mu, sigma = feature_statistics(features)
    np.savez(tmp_path / "ref.npz", mu=np.zeros(2048), sigma=np.eye(2048), mu_dinov2=mu, sigma_dinov2=sigma)
    assert fd_dinov2(b, str(tmp_path / "ref.npz"), model) == pytest.approx(fd_shift, rel=1e-9)
    results = compute_generation_metrics(b, a, fid=False, inception_score=False, precision_recall=False, dinov2=model)
    assert results == {"fd_dinov2": pytest.approx(fd_shift, rel=1e-9)}


def test_load_dinov2_from_a_hub_cache_layout_and_errors(tiny_dinov2_path, tmp_path):
    # models--org--name/refs/main + snapshots/<hash>/: the repo-id path of from_pretrained, offline.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--test-org--tiny-dinov2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in Path(tiny_dinov2_path).iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    model = load_dinov2("test-org/tiny-dinov2", cache_dir=tmp_path)
    reference = load_dinov2(tiny_dinov2_path)
    for (name, p), (_, q) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(p, q), name
    with pytest.raises(OSError, match="Could not load the DINOv2 model"):
        load_dinov2(str(tmp_path / "no-such-model"))
    with pytest.raises(TypeError, match="Dinov2Model"):
        dinov2_features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------------------------------
# Autoencoder evaluation.


def _tiny_autoencoders() -> tuple[AutoencoderDC15, AutoencoderDC]:
    """A structured AutoencoderDC15 (c' in {4, 8}) and a plain AutoencoderDC with the same weights."""
    torch.manual_seed(0)
    ae15 = AutoencoderDC15(**TINY_AE, latent_channel_choices=(4, 8)).eval()
    plain = AutoencoderDC(**TINY_AE).eval()
    plain.load_state_dict(ae15.state_dict())
    return ae15, plain


def _loader() -> list:
    images = _smooth_images(4, 32, seed=8)
    return [{"pixel_values": images[:2]}, images[2:]]  # both batch formats


def test_evaluate_autoencoder_structure_and_rfid(lpips_squeeze, inception_weights):
    ae15, _ = _tiny_autoencoders()
    # One prefix only: each rFID is a full 2048-d FID (one 2048x2048 eigendecomposition, 8-25 s on this CPU).
    results = evaluate_autoencoder(
        ae15, _loader(), [4], lpips_model=lpips_squeeze, compute_rfid=True, inception_weights_path=inception_weights
    )
    assert list(results) == [4]
    assert set(results[4]) == {"psnr", "ssim", "lpips", "rfid"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in results[4].values())
    assert results[4]["lpips"] > 0 and results[4]["rfid"] > 0 and -1 <= results[4]["ssim"] <= 1
    table = format_markdown_table({**results, 8: {"psnr": math.inf, "ssim": 1.0}}).splitlines()
    assert table[0] == "| c' | PSNR | SSIM | LPIPS | rFID |" and table[1] == "|---:|---:|---:|---:|---:|"
    assert table[2].startswith(f"| 4 | {results[4]['psnr']:.2f} | ")
    assert table[3] == "| 8 | inf | 1.0000 | – | – |"


def test_evaluate_autoencoder_equals_hand_computation(lpips_squeeze):
    ae15, plain = _tiny_autoencoders()
    loader = _loader()
    results = evaluate_autoencoder(ae15, loader, lpips_model=lpips_squeeze, max_batches=1)
    assert sorted(results) == [4, 8]  # default: the config's latent_channel_choices
    x = loader[0]["pixel_values"]
    with torch.no_grad():
        latent = plain.encode(x).latent
        for c in (4, 8):
            z = torch.cat([latent[:, :c], torch.zeros_like(latent[:, c:])], dim=1)
            recon8, real8 = to_uint8(plain.decode(z).sample), to_uint8(x)
            expected = {
                "psnr": psnr(recon8, real8, data_range=255.0).mean().item(),
                "ssim": ssim(recon8, real8, data_range=(0.0, 255.0)).mean().item(),
                "lpips": lpips_squeeze(recon8 / 127.5 - 1, real8 / 127.5 - 1).mean().item(),
            }
            assert results[c] == pytest.approx(expected, rel=1e-5)
    # A plain AutoencoderDC without latent shortcuts is evaluated on zero-padded prefixes: same numbers.
    plain_results = evaluate_autoencoder(plain, loader, [4, 8], lpips_model=lpips_squeeze, max_batches=1)
    assert sorted(plain_results) == [4, 8]
    for c in (4, 8):
        assert plain_results[c] == pytest.approx(results[c], rel=1e-5)
    # Default for a plain AutoencoderDC: only the full latent.
    assert list(evaluate_autoencoder(plain, loader, max_batches=1)) == [8]


def test_evaluate_autoencoder_rejects_bad_inputs():
    ae15, plain = _tiny_autoencoders()
    images = _smooth_images(2, 32, seed=9)
    with pytest.raises(ValueError, match="pixel_values must be in \\[-1, 1\\]"):
        evaluate_autoencoder(ae15, [127.5 * (images + 1)])
    with pytest.raises(ValueError, match="shape \\(B, 3, H, W\\)"):
        evaluate_autoencoder(ae15, [images[:, :1]])
    with pytest.raises(KeyError, match="pixel_values"):
        evaluate_autoencoder(ae15, [{"images": images}])
    with pytest.raises(ValueError, match="latent_channels_list=\\[0, 8\\].* outside 1..8"):
        evaluate_autoencoder(ae15, [images], latent_channels_list=[0, 8])
    with pytest.raises(TypeError, match="latent_channels_list=4 .*list of ints"):
        evaluate_autoencoder(ae15, [images], latent_channels_list=4)
    with pytest.raises(ValueError, match="max_batches=0 .*>= 1"):
        evaluate_autoencoder(ae15, [images], max_batches=0)
    with pytest.raises(ValueError, match="no images"):
        evaluate_autoencoder(ae15, [])
    with pytest.raises(ValueError, match="non-empty dict"):
        format_markdown_table({})
    torch.manual_seed(0)
    with_shortcuts = AutoencoderDC(**{**TINY_AE, "encoder_out_shortcut": True, "decoder_in_shortcut": True})
    with pytest.raises(ValueError, match="latent shortcuts"):
        evaluate_autoencoder(with_shortcuts, [images], latent_channels_list=[4, 8])


def test_evaluate_autoencoder_checks_every_prefix_before_the_first_batch():
    """c' is checked once, where it enters, with the vae's own rule: nothing is encoded for a prefix it cannot
    decode, and the message names the entry of latent_channels_list."""

    def no_batch():
        raise AssertionError("a batch was read before latent_channels_list was checked")
        yield

    dc_ae_10 = AutoencoderDC15(**{**TINY_AE, "encoder_out_shortcut": True, "decoder_in_shortcut": True})
    plain_10 = AutoencoderDC(**{**TINY_AE, "encoder_out_shortcut": True, "decoder_in_shortcut": True})
    with pytest.raises(
        ValueError, match=r"^latent_channels_list\[1\]=4 < latent_channels=8, but this model has latent-level"
    ):
        evaluate_autoencoder(dc_ae_10, no_batch(), latent_channels_list=[8, 4])
    with pytest.raises(
        ValueError, match=r"^latent_channels_list\[0\]=2 < latent_channels=8, but this AutoencoderDC has"
    ):
        evaluate_autoencoder(plain_10, no_batch(), latent_channels_list=[2, 8])


# ---------------------------------------------------------------------------------------------------------------------
# Stand-in weights.


def test_standin_weights_are_deterministic(tmp_path):
    first = torch.load(write_standin_lpips_backbone("squeeze", tmp_path / "a", seed=3), weights_only=True)
    second = torch.load(write_standin_lpips_backbone("squeeze", tmp_path / "b", seed=3), weights_only=True)
    other = torch.load(write_standin_lpips_backbone("squeeze", tmp_path / "c", seed=4), weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["features.0.weight"], other["features.0.weight"])
    # Kaiming-normal (fan_in, ReLU gain): std sqrt(2 / fan_in) for the first conv (3 * 3 * 3 inputs).
    assert first["features.0.weight"].std().item() == pytest.approx((2 / 27) ** 0.5, rel=0.15)
    state = torch.random.get_rng_state()
    write_tiny_dinov2(tmp_path / "d1", seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    write_tiny_dinov2(tmp_path / "d2", seed=5)
    assert (tmp_path / "d1" / "model.safetensors").read_bytes() == (tmp_path / "d2" / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="net must be one of"):
        write_standin_lpips_backbone("resnet", tmp_path)
