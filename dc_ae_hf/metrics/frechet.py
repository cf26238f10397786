"""Frechet distance between Gaussians fitted to features, and the ``.npz`` statistics files that cache them.

One implementation for FID (Inception features, ``dc_ae_hf/metrics/inception.py``), FD-DINOv2
(``dc_ae_hf/metrics/dinov2.py``) and custom feature spaces (``dc_ae_hf/metrics/classifier.py``). It follows the
official ``dc_gen/apps/metrics/fid/fid.py`` (the pytorch-fid formula): statistics in float64 with the covariance
normalised by N - 1, and ``scipy.linalg.sqrtm`` for the matrix square root.

Statistics files hold ``mu`` (D,) and ``sigma`` (D, D) float64 arrays (the official reference ``.npz`` layout), plus
optional pairs ``mu_<prefix>``/``sigma_<prefix>`` such as ``mu_dinov2``/``sigma_dinov2``.
"""

from __future__ import annotations

import os
import warnings
import zipfile

import numpy as np
import scipy.linalg
import torch

__all__ = ["feature_statistics", "frechet_distance", "load_statistics", "save_statistics"]


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), float64, covariance normalised by N - 1."""
    array = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if array.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got shape {array.shape}.")
    if array.shape[0] < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {array.shape[0]}.")
    if not np.isfinite(array).all():
        raise ValueError("features contain NaN or inf values.")
    array = array.astype(np.float64)
    return array.mean(axis=0), np.cov(array, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, Eq. 6).

    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2))`` with ``scipy.linalg.sqrtm``. Like the official
    ``dc_gen/apps/metrics/fid/fid.py`` (pytorch-fid), a non-finite square root is retried with ``eps`` added to the
    diagonals and the imaginary part left by round-off is dropped (with a warning when it is not negligible).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of the same length, got shapes {mu1.shape} and {mu2.shape}.")
    dim = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"{name} must have shape ({dim}, {dim}) to match the means, got {sigma.shape}.")

    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"Frechet distance: singular covariance product; adding {eps} to the diagonals.", stacklevel=2)
        offset = np.eye(dim) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            warnings.warn(
                f"Frechet distance: sqrtm has an imaginary component of up to {np.abs(covmean.imag).max():.3g}; "
                "using its real part.",
                stacklevel=2,
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def save_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, **extra: np.ndarray) -> str:
    """Save ``mu``/``sigma`` (and optional extra arrays such as ``mu_dinov2``) to an ``.npz`` file."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"statistics files are .npz files, got path {path!r}.")
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"mu must be (D,) and sigma (D, D), got shapes {mu.shape} and {sigma.shape}.")
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma, **{k: np.asarray(v, dtype=np.float64) for k, v in extra.items()})
    return path


def load_statistics(path: str | os.PathLike, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Load ``(mu, sigma)`` from an ``.npz`` file (keys ``mu``/``sigma``, or ``mu_<prefix>``/``sigma_<prefix>``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ``.npz`` archive of plain arrays, or ``mu`` is not (D,) / ``sigma`` not (D, D) / a value
            is not finite.
        KeyError: the file lacks the two arrays (the message lists the arrays it holds).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"statistics file {path!r} does not exist.")
    mu_key, sigma_key = (f"mu_{prefix}", f"sigma_{prefix}") if prefix else ("mu", "sigma")
    try:
        data = np.load(path, allow_pickle=False)  # no pickles: plain arrays only
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"statistics file {path!r} is not a readable .npz file ({error}).") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # a single .npy array
        raise ValueError(f"statistics file {path!r} is one array, not an .npz archive with {mu_key!r}/{sigma_key!r}.")
    with data:
        if mu_key not in data or sigma_key not in data:
            raise KeyError(f"{path!r} has no {mu_key!r}/{sigma_key!r} arrays; it holds {sorted(data.files)}.")
        try:
            mu, sigma = data[mu_key].astype(np.float64), data[sigma_key].astype(np.float64)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"statistics file {path!r}: {mu_key!r}/{sigma_key!r} cannot be read ({error}).") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"statistics file {path!r}: {mu_key!r} must be (D,) and {sigma_key!r} (D, D), got shapes {mu.shape} and "
            f"{sigma.shape}."
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"statistics file {path!r}: {mu_key!r}/{sigma_key!r} contain NaN or inf values.")
    return mu, sigma
