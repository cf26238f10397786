"""Generation metrics: FID, Inception Score, precision/recall (torch-fidelity) and FD-DINOv2 (EDM2).

Inputs ("image sets") are any of:

- a folder of PNG/JPEG images (all of one size, non-recursive, as torch-fidelity reads them),
- a tensor (N, 3, H, W): uint8, or float in [-1, 1] (quantised like the official code, see ``to_uint8``),
- a ``torch.utils.data.Dataset`` whose items are uint8 tensors (3, H, W).

Inception metrics use torch-fidelity's ``inception-v3-compat`` extractor (the TF-FID Inception weights; pool3
2048-d features for FID and precision/recall, unbiased logits for IS). Offline, pass ``inception_weights_path=``
(torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``) or put that file in
``$TORCH_HOME/hub/checkpoints/``. The official DC-AE evaluation (dc_gen/apps/metrics/fid/fid.py, inception.py) differs in small ways: it
embeds with pytorch-fid's port of the same network, which resizes to 299 with plain bilinear interpolation where
torch-fidelity emulates TF1 bilinear resizing, so FIDs agree closely but not bit-exactly. Its IS (10 splits,
shuffled with RandomState(2020)) and precision/recall (k = 3 nearest neighbours on pool3 features, input1 =
generated) are the estimators torch-fidelity computes with the defaults used here.

FID against a cached reference: :func:`compute_reference_statistics` writes ``mu``/``sigma`` (float64, covariance
with N - 1, the official ``.npz`` layout) and :func:`fid_from_reference_statistics` scores an image set against such
a file. (torch-fidelity 0.4.0 has no ``fid_statistics_file`` option; its own ``cache_root``/``input*_cache_name``
caching can be switched on through ``**fidelity_kwargs`` of :func:`compute_generation_metrics`.)

FD-DINOv2 follows EDM2 (``calculate_metrics.py``, ``DINOv2Detector``): uint8 images -> bicubic antialiased resize to
224x224 -> /255 -> ImageNet mean/std -> DINOv2 ViT-L/14 CLS token after the final layer norm (the Hugging Face
``Dinov2Model`` ``pooler_output``; ``facebook/dinov2-large`` holds the weights of the torch.hub ``dinov2_vitl14``
used by EDM2) -> Frechet distance. All Frechet distances here go through one implementation,
:func:`frechet_distance`, which also serves custom feature spaces via :func:`feature_statistics`.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import warnings
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from dc_ae_hf.extras import missing_extra
from dc_ae_hf.metrics.image import to_uint8

try:
    import torch_fidelity
    from torch_fidelity.datasets import ImagesPathDataset
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.utils import (
        create_feature_extractor,
        extract_featuresdict_from_input_id_cached,
        glob_samples_paths,
    )
    from transformers import Dinov2Model
except ImportError as error:
    raise missing_extra(error, "dc_ae_hf.metrics (FID, IS, precision/recall, FD-DINOv2)") from error

__all__ = [
    "DEFAULT_DINOV2",
    "compute_generation_metrics",
    "compute_reference_statistics",
    "dinov2_features",
    "fd_dinov2",
    "feature_statistics",
    "fid_from_reference_statistics",
    "frechet_distance",
    "inception_features",
    "load_dinov2",
    "load_statistics",
    "save_statistics",
]

ImageSet = str | os.PathLike | torch.Tensor | Dataset

DEFAULT_DINOV2 = "facebook/dinov2-large"  # ViT-L/14, the model EDM2 uses for FD-DINOv2
_INCEPTION = "inception-v3-compat"
_IMAGE_EXTENSIONS = "png,jpg,jpeg"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Keys this module sets itself when calling torch-fidelity; passing them in **fidelity_kwargs is an error.
_RESERVED_FIDELITY_KWARGS = {
    "input1",
    "input2",
    "fid",
    "isc",
    "prc",
    "kid",
    "ppl",
    "cuda",
    "feature_extractor",
    "feature_extractor_weights_path",
    "batch_size",
    "isc_splits",
    "prc_neighborhood",
    "verbose",
}


# ---------------------------------------------------------------------------------------------------------------------
# Frechet distance between Gaussians fitted to features (one implementation for FID, FD-DINOv2 and custom features).


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
    """Load ``(mu, sigma)`` from an ``.npz`` file (keys ``mu``/``sigma``, or ``mu_<prefix>``/``sigma_<prefix>``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"statistics file {path!r} does not exist.")
    mu_key, sigma_key = (f"mu_{prefix}", f"sigma_{prefix}") if prefix else ("mu", "sigma")
    with np.load(path, allow_pickle=False) as data:  # no pickles: plain arrays only
        if mu_key not in data or sigma_key not in data:
            raise KeyError(f"{path!r} has no {mu_key!r}/{sigma_key!r} arrays; it holds {sorted(data.files)}.")
        return data[mu_key].astype(np.float64), data[sigma_key].astype(np.float64)


# ---------------------------------------------------------------------------------------------------------------------
# Image sets.


class _UInt8Images(Dataset):
    """A tensor (N, 3, H, W) of images as a dataset of uint8 (3, H, W) tensors, the format torch-fidelity reads."""

    def __init__(self, images: torch.Tensor):
        self.images = images if images.dtype == torch.uint8 else to_uint8(images)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def _as_fidelity_input(images: ImageSet, name: str) -> str | Dataset:
    """Check an image set and return what torch-fidelity takes: a folder path (str) or a uint8 Dataset."""
    if isinstance(images, (str, os.PathLike)):
        folder = os.fspath(images)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{name}: image folder {folder!r} does not exist.")
        if not glob_samples_paths(folder, False, _IMAGE_EXTENSIONS, verbose=False):
            raise ValueError(f"{name}: folder {folder!r} has no {_IMAGE_EXTENSIONS} images.")
        return folder
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{name} must have shape (N, 3, H, W), got shape {tuple(images.shape)}.")
        if not (images.dtype == torch.uint8 or images.is_floating_point()):
            raise TypeError(f"{name} must be uint8 or float in [-1, 1], got dtype {images.dtype}.")
        if images.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 images, got {images.shape[0]}.")
        return _UInt8Images(images.detach().cpu())
    if isinstance(images, Dataset):
        return images
    raise TypeError(
        f"{name} must be an image folder path, a (N, 3, H, W) tensor or a Dataset of uint8 images, "
        f"got {type(images).__name__}."
    )


def _as_dataset(images: ImageSet, name: str) -> Dataset:
    data = _as_fidelity_input(images, name)
    if isinstance(data, str):
        return ImagesPathDataset(glob_samples_paths(data, False, _IMAGE_EXTENSIONS, verbose=False))
    return data


def _is_statistics_file(images: Any) -> bool:
    return isinstance(images, (str, os.PathLike)) and os.fspath(images).endswith(".npz")


# ---------------------------------------------------------------------------------------------------------------------
# torch-fidelity plumbing.


def _default_device(device: str | torch.device | None) -> torch.device:
    """The given device, else CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _fidelity_device(device: str | torch.device | None) -> tuple[bool, contextlib.AbstractContextManager]:
    """torch-fidelity only knows ``cuda=True/False`` (the current CUDA device): map a device onto that."""
    device = _default_device(device)
    if device.type == "cpu":
        return False, contextlib.nullcontext()
    if device.type == "cuda":
        return True, torch.cuda.device(device) if device.index is not None else contextlib.nullcontext()
    raise ValueError(f"torch-fidelity metrics run on 'cpu' or 'cuda' devices, got device {str(device)!r}.")


def _resolve_inception_weights(path: str | os.PathLike | None) -> str:
    """Return a checked local Inception weights file, downloading torch-fidelity's file when ``path`` is None.

    Without a path, the file goes where torch-fidelity itself caches it (``$TORCH_HOME/hub/checkpoints/``), fetched
    with ``torch.hub`` as torch-fidelity does; offline, the error names the file and the two ways to provide it.
    torch-fidelity reads the file with ``torch.load(weights_only=False)``, which can run code from a malicious
    pickle, so it is first loaded here with ``weights_only=True``, which refuses anything but a plain state dict.
    """
    if path is None:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(URL_INCEPTION_V3))
        if not os.path.isfile(path):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                torch.hub.download_url_to_file(URL_INCEPTION_V3, path, progress=False)
            except (urllib.error.URLError, OSError) as error:
                raise FileNotFoundError(
                    f"The Inception weights for FID/IS/precision-recall could not be downloaded "
                    f"({type(error).__name__}: {error}). Download {URL_INCEPTION_V3} elsewhere and pass "
                    f"inception_weights_path=<file>, or place the file at {path!r}."
                ) from error
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"inception_weights_path {path!r} does not exist.")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"inception_weights_path {path!r} is not a plain tensor state dict: {error}") from error
    if not isinstance(state_dict, dict) or "fc.weight" not in state_dict:
        raise ValueError(f"inception_weights_path {path!r} is not a torch-fidelity inception-v3-compat state dict.")
    return path


def inception_features(
    images: ImageSet,
    inception_weights_path: str | os.PathLike | None = None,
    layers: tuple[str, ...] = ("2048",),
    batch_size: int = 64,
    device: str | torch.device | None = None,
    verbose: bool = False,
    **fidelity_kwargs: Any,
) -> dict[str, torch.Tensor]:
    """Features of an image set from torch-fidelity's ``inception-v3-compat``: ``{layer: (N, D) float32}``.

    ``layers`` are torch-fidelity feature names: "2048" (pool3, FID and precision/recall) and "logits_unbiased"
    (IS). ``fidelity_kwargs`` go to torch-fidelity (e.g. ``save_cpu_ram=True`` for no loader workers, or
    ``cache_root=..., input1_cache_name=...`` to cache the features on disk).
    """
    _check_fidelity_kwargs(fidelity_kwargs)
    weights_path = _resolve_inception_weights(inception_weights_path)
    cuda, device_context = _fidelity_device(device)
    kwargs = dict(
        input1=_as_fidelity_input(images, "images"),
        feature_extractor=_INCEPTION,
        feature_extractor_weights_path=weights_path,
        batch_size=batch_size,
        cuda=cuda,
        verbose=verbose,
        **fidelity_kwargs,
    )
    with device_context:
        extractor = create_feature_extractor(_INCEPTION, list(layers), **kwargs)
        features = extract_featuresdict_from_input_id_cached(1, extractor, **kwargs)
    return {layer: features[layer] for layer in layers}


def compute_reference_statistics(
    images: ImageSet,
    out_path: str | os.PathLike,
    inception_weights_path: str | os.PathLike | None = None,
    dinov2: Dinov2Model | str | None = None,
    feature_layer: str = "2048",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    **fidelity_kwargs: Any,
) -> str:
    """Compute FID reference statistics (``mu``, ``sigma`` of Inception features) of an image set; save as ``.npz``.

    ``feature_layer`` is the torch-fidelity Inception layer ("2048" = pool3, the FID standard; "64", "192", "768"
    are cheaper, e.g. for CPU tests). With ``dinov2`` (a ``Dinov2Model`` or a name/path for :func:`load_dinov2`) the
    file also gets ``mu_dinov2`` and ``sigma_dinov2`` for FD-DINOv2. Returns ``out_path``.
    """
    if not os.fspath(out_path).endswith(".npz"):
        raise ValueError(f"out_path must end with .npz, got {os.fspath(out_path)!r}.")
    features = inception_features(
        images, inception_weights_path, (feature_layer,), batch_size, device, **fidelity_kwargs
    )
    mu, sigma = feature_statistics(features[feature_layer])
    extra = {}
    if dinov2 is not None:
        model = load_dinov2(dinov2, device=device) if isinstance(dinov2, (str, os.PathLike)) else dinov2
        extra["mu_dinov2"], extra["sigma_dinov2"] = feature_statistics(dinov2_features(images, model, batch_size))
    return save_statistics(out_path, mu, sigma, **extra)


def fid_from_reference_statistics(
    images: ImageSet,
    reference_path: str | os.PathLike,
    inception_weights_path: str | os.PathLike | None = None,
    feature_layer: str = "2048",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    **fidelity_kwargs: Any,
) -> float:
    """FID of an image set against a statistics file from :func:`compute_reference_statistics` (or the official
    ``.npz`` reference files, which use the same ``mu``/``sigma`` keys for pool3 features)."""
    mu_ref, sigma_ref = load_statistics(reference_path)
    features = inception_features(
        images, inception_weights_path, (feature_layer,), batch_size, device, **fidelity_kwargs
    )
    mu, sigma = feature_statistics(features[feature_layer])
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)


def compute_generation_metrics(
    generated: ImageSet,
    reference: ImageSet | None = None,
    fid: bool = True,
    inception_score: bool = True,
    precision_recall: bool = True,
    inception_weights_path: str | os.PathLike | None = None,
    dinov2: Dinov2Model | str | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    isc_splits: int = 10,
    prc_neighborhood: int = 3,
    verbose: bool = False,
    **fidelity_kwargs: Any,
) -> dict[str, float]:
    """Compute generation metrics of ``generated`` against ``reference`` as a dict of floats.

    Args:
        generated: the generated image set (folder, tensor or Dataset; see the module docstring).
        reference: the real image set, or an ``.npz`` statistics file from :func:`compute_reference_statistics`
            (then FID and FD-DINOv2 use the stored statistics; precision/recall need images and are refused).
            May be None when only ``inception_score`` is asked for.
        fid, inception_score, precision_recall: which torch-fidelity metrics to compute, all with the
            ``inception-v3-compat`` extractor (also for precision/recall, whose torch-fidelity default is VGG16:
            the official evaluation uses Inception pool3 features for it).
        inception_weights_path: local torch-fidelity Inception weights (needed offline).
        dinov2: a ``Dinov2Model`` or a name/path for :func:`load_dinov2`; adds ``"fd_dinov2"``.
        isc_splits, prc_neighborhood: IS splits (official: 10) and the k of the k-NN precision/recall (official: 3).
        fidelity_kwargs: extra torch-fidelity options, e.g. ``save_cpu_ram=True``, ``cache_root``,
            ``input1_cache_name``/``input2_cache_name`` (feature caching), ``rng_seed``, ``feature_layer_fid`` /
            ``feature_layer_prc`` (default "2048"; a statistics-file reference must hold that layer's statistics).

    Returns:
        Keys among ``fid``, ``inception_score_mean``, ``inception_score_std``, ``precision``, ``recall``,
        ``f_score``, ``fd_dinov2``.
    """
    _check_fidelity_kwargs(fidelity_kwargs)
    if not (fid or inception_score or precision_recall or dinov2 is not None):
        raise ValueError("Nothing to compute: set fid, inception_score or precision_recall, or pass dinov2.")
    needs_reference = fid or precision_recall or dinov2 is not None
    if needs_reference and reference is None:
        raise ValueError("reference is required for fid, precision_recall and fd_dinov2 (only IS works without it).")
    device = _default_device(device)
    common = dict(batch_size=batch_size, device=device, **fidelity_kwargs)
    results: dict[str, float] = {}

    if reference is not None and _is_statistics_file(reference):
        if precision_recall:
            raise ValueError("precision_recall needs reference images; a statistics file only supports FID/FD-DINOv2.")
        fid_layer = fidelity_kwargs.get("feature_layer_fid") or "2048"  # torch-fidelity's option, honoured here too
        layers = ((fid_layer,) if fid else ()) + (("logits_unbiased",) if inception_score else ())
        if layers:
            features = inception_features(generated, inception_weights_path, layers, verbose=verbose, **common)
            if fid:
                mu, sigma = feature_statistics(features[fid_layer])
                results["fid"] = frechet_distance(mu, sigma, *load_statistics(reference))
            if inception_score:
                isc = isc_features_to_metric(
                    features["logits_unbiased"],
                    splits=isc_splits,
                    shuffle=fidelity_kwargs.get("samples_shuffle", True),  # torch-fidelity's defaults
                    rng_seed=fidelity_kwargs.get("rng_seed", 2020),
                )
                results["inception_score_mean"] = isc[torch_fidelity.KEY_METRIC_ISC_MEAN]
                results["inception_score_std"] = isc[torch_fidelity.KEY_METRIC_ISC_STD]
    elif fid or inception_score or precision_recall:
        input1 = _as_fidelity_input(generated, "generated")
        input2 = _as_fidelity_input(reference, "reference") if (fid or precision_recall) else None
        weights_path = _resolve_inception_weights(inception_weights_path)
        cuda, device_context = _fidelity_device(device)
        with device_context:
            metrics = torch_fidelity.calculate_metrics(
                input1=input1,
                input2=input2,
                fid=fid,
                isc=inception_score,
                prc=precision_recall,
                feature_extractor=_INCEPTION,
                feature_extractor_weights_path=weights_path,
                batch_size=batch_size,
                cuda=cuda,
                isc_splits=isc_splits,
                prc_neighborhood=prc_neighborhood,
                verbose=verbose,
                **fidelity_kwargs,
            )
        names = {
            torch_fidelity.KEY_METRIC_FID: "fid",
            torch_fidelity.KEY_METRIC_ISC_MEAN: "inception_score_mean",
            torch_fidelity.KEY_METRIC_ISC_STD: "inception_score_std",
            torch_fidelity.KEY_METRIC_PRECISION: "precision",
            torch_fidelity.KEY_METRIC_RECALL: "recall",
            torch_fidelity.KEY_METRIC_F_SCORE: "f_score",
        }
        results.update({names[key]: float(value) for key, value in metrics.items() if key in names})

    if dinov2 is not None:
        model = load_dinov2(dinov2, device=device) if isinstance(dinov2, (str, os.PathLike)) else dinov2
        results["fd_dinov2"] = fd_dinov2(generated, reference, model, batch_size=batch_size)
    return results


def _check_fidelity_kwargs(fidelity_kwargs: dict[str, Any]) -> None:
    clashes = sorted(_RESERVED_FIDELITY_KWARGS & fidelity_kwargs.keys())
    if clashes:
        raise ValueError(f"fidelity_kwargs must not set {clashes}: use this function's own arguments instead.")


# ---------------------------------------------------------------------------------------------------------------------
# FD-DINOv2 (EDM2, calculate_metrics.py).


def load_dinov2(
    name_or_path: str | os.PathLike = DEFAULT_DINOV2,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Dinov2Model:
    """Load a ``transformers.Dinov2Model`` (Hub id or local folder) in eval mode with gradients off."""
    try:
        model = Dinov2Model.from_pretrained(os.fspath(name_or_path), cache_dir=cache_dir)
    except OSError as error:
        raise OSError(
            f"Could not load the DINOv2 model {os.fspath(name_or_path)!r} ({error}). Offline, pass a local folder "
            f"written by save_pretrained, or a Hub id already in the Hugging Face cache (cache_dir={cache_dir!r})."
        ) from error
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return model


@torch.no_grad()
def dinov2_features(images: ImageSet, model: Dinov2Model, batch_size: int = 64) -> torch.Tensor:
    """DINOv2 CLS features (N, D) float64 of an image set, preprocessed like EDM2's ``DINOv2Detector``."""
    if not isinstance(model, Dinov2Model):
        raise TypeError(f"model must be a transformers Dinov2Model, got {type(model).__name__}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    dataset = _as_dataset(images, "images")
    parameter = next(model.parameters())
    mean = torch.tensor(_IMAGENET_MEAN, device=parameter.device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=parameter.device).view(1, 3, 1, 1)
    features = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(
                f"image datasets must yield uint8 (3, H, W) tensors, got a batch {batch.dtype} {tuple(batch.shape)}."
            )
        x = batch.to(parameter.device, torch.float32)  # (B, 3, H, W) in 0..255
        x = F.interpolate(x, size=(224, 224), mode="bicubic", antialias=True)  # (B, 3, 224, 224)
        x = (x / 255 - mean) / std
        cls = model(pixel_values=x.to(parameter.dtype)).pooler_output  # (B, D): CLS token after the final LayerNorm
        features.append(cls.double().cpu())
    return torch.cat(features)


def fd_dinov2(images: ImageSet, reference: ImageSet, model: Dinov2Model, batch_size: int = 64) -> float:
    """Frechet distance in DINOv2 feature space between an image set and a reference set or ``.npz`` file
    (``mu_dinov2``/``sigma_dinov2`` from :func:`compute_reference_statistics`)."""
    mu, sigma = feature_statistics(dinov2_features(images, model, batch_size))
    if _is_statistics_file(reference):
        mu_ref, sigma_ref = load_statistics(reference, prefix="dinov2")
    else:
        mu_ref, sigma_ref = feature_statistics(dinov2_features(reference, model, batch_size))
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)
