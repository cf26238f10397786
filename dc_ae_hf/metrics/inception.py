"""FID, Inception Score and precision/recall through torch-fidelity's Inception network, and FID reference statistics.

Inception metrics use torch-fidelity's ``inception-v3-compat`` extractor (the TF-FID Inception weights; pool3
2048-d features for FID and precision/recall, unbiased logits for IS). Offline, pass ``inception_weights_path=``
(torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``) or put that file in
``$TORCH_HOME/hub/checkpoints/``.

The official DC-AE evaluation (``dc_gen/apps/metrics/fid/fid.py``, ``inception.py``) differs in small ways: it embeds
with pytorch-fid's port of the same network, which resizes to 299 with plain bilinear interpolation where
torch-fidelity emulates TF1 bilinear resizing, so FIDs agree closely but not bit-exactly. Its IS (10 splits,
shuffled with RandomState(2020)) and precision/recall (k = 3 nearest neighbours on pool3 features, input1 =
generated) are the estimators torch-fidelity computes with the defaults used here.

FID against a cached reference: :func:`compute_reference_statistics` writes ``mu``/``sigma`` (float64, covariance
with N - 1, the official ``.npz`` layout; ``dc_ae_hf/metrics/frechet.py``) and :func:`fid_from_reference_statistics`
scores an image set against such a file. (torch-fidelity 0.4.0 has no ``fid_statistics_file`` option; its own
``cache_root``/``input*_cache_name`` caching can be switched on through ``**fidelity_kwargs`` of
:func:`compute_generation_metrics`.) Image sets: ``dc_ae_hf/metrics/image_sets.py``; FD-DINOv2, which
:func:`compute_generation_metrics` adds on request: ``dc_ae_hf/metrics/dinov2.py``.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
from typing import Any

import torch

from dc_ae_hf.checks import check_int
from dc_ae_hf.extras import missing_extra
from dc_ae_hf.metrics.dinov2 import Dinov2Model, dinov2_features, fd_dinov2, load_dinov2
from dc_ae_hf.metrics.frechet import feature_statistics, frechet_distance, load_statistics, save_statistics
from dc_ae_hf.metrics.image_sets import ImageSet, as_fidelity_input, is_statistics_file

try:
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id_cached
except ImportError as error:
    raise missing_extra(error, "dc_ae_hf.metrics (FID, IS, precision/recall, FD-DINOv2)") from error

__all__ = [
    "compute_generation_metrics",
    "compute_reference_statistics",
    "fid_from_reference_statistics",
    "inception_features",
    "resolve_inception_weights",
]

_INCEPTION = "inception-v3-compat"
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


def _check_fidelity_kwargs(fidelity_kwargs: dict[str, Any]) -> None:
    clashes = sorted(_RESERVED_FIDELITY_KWARGS & fidelity_kwargs.keys())
    if clashes:
        raise ValueError(f"fidelity_kwargs must not set {clashes}: use this function's own arguments instead.")


def resolve_inception_weights(path: str | os.PathLike | None, name: str = "inception_weights_path") -> str:
    """Return a checked local Inception weights file, downloading torch-fidelity's file when ``path`` is None.

    Without a path, the file goes where torch-fidelity itself caches it (``$TORCH_HOME/hub/checkpoints/``), fetched
    with ``torch.hub`` as torch-fidelity does; offline, the error names the file and the two ways to provide it.
    torch-fidelity reads the file with ``torch.load(weights_only=False)``, which can run code from a malicious
    pickle, so it is first loaded here with ``weights_only=True``, which refuses anything but a plain state dict.
    ``name`` is how the caller's user passes the path (``"--inception_weights_path"`` for a script), for the messages.
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
                    f"{name}=<file>, or place the file at {path!r}."
                ) from error
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} {path!r} does not exist.")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a file that is not a plain state dict
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"{name} {path!r} is not a plain tensor state dict: {reason}") from error
    if not isinstance(state_dict, dict) or "fc.weight" not in state_dict:
        raise ValueError(f"{name} {path!r} is not a torch-fidelity inception-v3-compat state dict.")
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
    batch_size = check_int("batch_size", batch_size, minimum=1)
    weights_path = resolve_inception_weights(inception_weights_path)
    cuda, device_context = _fidelity_device(device)
    kwargs = dict(
        input1=as_fidelity_input(images, "images"),
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


def _fid_against_file(features: torch.Tensor, reference_path: str | os.PathLike, feature_layer: str) -> float:
    """FID of Inception features (N, D) against the ``mu``/``sigma`` of a statistics file of the same layer."""
    mu_ref, sigma_ref = load_statistics(reference_path)
    if mu_ref.shape[0] != features.shape[1]:
        raise ValueError(
            f"reference statistics {os.fspath(reference_path)!r} are {mu_ref.shape[0]}-d, but Inception layer "
            f"{feature_layer!r} gives {features.shape[1]}-d features: compute the statistics with the same layer."
        )
    mu, sigma = feature_statistics(features)
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)


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
    are cheaper, e.g. for CPU tests). With ``dinov2`` (a ``Dinov2Model`` or a name/path for ``load_dinov2``) the
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
    load_statistics(reference_path)  # a bad file fails before the images go through Inception
    features = inception_features(
        images, inception_weights_path, (feature_layer,), batch_size, device, **fidelity_kwargs
    )
    return _fid_against_file(features[feature_layer], reference_path, feature_layer)


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
        generated: the generated image set (folder, tensor or Dataset; ``dc_ae_hf/metrics/image_sets.py``).
        reference: the real image set, or an ``.npz`` statistics file from :func:`compute_reference_statistics`
            (then FID and FD-DINOv2 use the stored statistics; precision/recall need images and are refused).
            May be None when only ``inception_score`` is asked for.
        fid, inception_score, precision_recall: which torch-fidelity metrics to compute, all with the
            ``inception-v3-compat`` extractor (also for precision/recall, whose torch-fidelity default is VGG16:
            the official evaluation uses Inception pool3 features for it).
        inception_weights_path: local torch-fidelity Inception weights (needed offline).
        dinov2: a ``Dinov2Model`` or a name/path for ``load_dinov2``; adds ``"fd_dinov2"``.
        isc_splits, prc_neighborhood: IS splits (official: 10) and the k of the k-NN precision/recall (official: 3).
        fidelity_kwargs: extra torch-fidelity options, e.g. ``save_cpu_ram=True``, ``cache_root``,
            ``input1_cache_name``/``input2_cache_name`` (feature caching), ``rng_seed``, ``feature_layer_fid`` /
            ``feature_layer_prc`` (default "2048"; a statistics-file reference must hold that layer's statistics).

    Returns:
        Keys among ``fid``, ``inception_score_mean``, ``inception_score_std``, ``precision``, ``recall``,
        ``f_score``, ``fd_dinov2``.
    """
    _check_fidelity_kwargs(fidelity_kwargs)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    isc_splits = check_int("isc_splits", isc_splits, minimum=1)
    prc_neighborhood = check_int("prc_neighborhood", prc_neighborhood, minimum=1)
    if not (fid or inception_score or precision_recall or dinov2 is not None):
        raise ValueError("Nothing to compute: set fid, inception_score or precision_recall, or pass dinov2.")
    needs_reference = fid or precision_recall or dinov2 is not None
    if needs_reference and reference is None:
        raise ValueError("reference is required for fid, precision_recall and fd_dinov2 (only IS works without it).")
    device = _default_device(device)
    common = dict(batch_size=batch_size, device=device, **fidelity_kwargs)
    results: dict[str, float] = {}

    if reference is not None and is_statistics_file(reference):
        if precision_recall:
            raise ValueError("precision_recall needs reference images; a statistics file only supports FID/FD-DINOv2.")
        fid_layer = fidelity_kwargs.get("feature_layer_fid") or "2048"  # torch-fidelity's option, honoured here too
        layers = ((fid_layer,) if fid else ()) + (("logits_unbiased",) if inception_score else ())
        if layers:
            if fid:
                load_statistics(reference)  # a bad file fails before the images go through Inception
            features = inception_features(generated, inception_weights_path, layers, verbose=verbose, **common)
            if fid:
                results["fid"] = _fid_against_file(features[fid_layer], reference, fid_layer)
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
        input1 = as_fidelity_input(generated, "generated")
        input2 = as_fidelity_input(reference, "reference") if (fid or precision_recall) else None
        weights_path = resolve_inception_weights(inception_weights_path)
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
