"""Sharded latent cache: the dataset encoded once by a frozen autoencoder, as `training/cache_latents.py` writes it.

Official data pipeline (``applications/dc_ae/dc_ae_generate_latent.py``, ``data_provider/latent_imagenet.py``):
latents are computed once per image after the ADM center crop and stored *already multiplied* by the autoencoder's
scaling factor; training reads them back. Layout of a cache folder::

    metadata.json               what made the cache (autoencoder + config hash, resolution, scaling factor, classes),
                                and latent_mean / latent_std of all cached latents once the cache is complete
    shard-00000.safetensors     latents (N, C, h, w), labels (N,) int64, indices (N,) int64, flipped (N,) uint8;
                                its safetensors metadata holds the shard's latent statistics (count, sum, sum of
                                squares, float64) so the statistics of a whole cache are combined without reading
                                the latents, whichever process or run wrote each shard
    shard-00001.safetensors     ...

Shard i holds the source images ``i * shard_size .. (i + 1) * shard_size - 1`` (their latents, then, with ``flip``,
the latents of their horizontal mirror images). Shards are written atomically (temporary file + rename), so a shard
file either is complete or does not exist; a rerun of the cache script skips the shards that exist.
:class:`LatentCacheDataset` reads the shards through ``safetensors.safe_open`` (memory-mapped; one sample is read per
``__getitem__``).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dc_ae_hf.latents import LatentStatistics

__all__ = [
    "METADATA_FILE",
    "UPSAMPLED_KEY",
    "LatentCacheDataset",
    "autoencoder_config_hash",
    "autoencoder_weights_hash",
    "cache_latent_statistics",
    "cache_upsampled_images",
    "check_cache_matches_autoencoder",
    "load_latent_cache_metadata",
    "read_shard_statistics",
    "shard_path",
    "shards_of_process",
    "update_latent_cache_metadata",
    "write_latent_cache_metadata",
    "write_shard",
]

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1
SHARD_PATTERN = "shard-{:05d}.safetensors"
SHARD_STATISTICS_KEY = "latent_statistics"  # safetensors metadata of a shard: JSON of LatentStatistics.to_dict()
UPSAMPLED_KEY = "upsampled_images"  # safetensors metadata of a shard: how many of its images the ADM crop enlarged
# Metadata fields that must agree between an existing cache and a rerun that adds shards to it.
_IDENTITY_FIELDS = (
    "format_version",
    "autoencoder",
    "autoencoder_weights_hash",
    "resolution",
    "scaling_factor",
    "flip",
    "shard_size",
    "num_images",
    "latent_shape",
    "dtype",
    "dataset",
)


def autoencoder_config_hash(config: Mapping) -> str:
    """sha256 (first 16 hex digits) of an autoencoder's config without private ``_`` keys (canonical JSON).

    Two folders with the same architecture *and* scaling factor have the same hash; it identifies which autoencoder
    made a cache (the weights themselves are not hashed).
    """
    public = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    text = json.dumps(public, sort_keys=True, default=list)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def autoencoder_weights_hash(model: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) of a model's weights: every state-dict entry's name, dtype, shape and bytes, in
    name order. Two autoencoders with the same config but other weights (a run's `vae` and `vae_ema`, a retrained
    one) differ here; the latents of a cache decode correctly only with the weights that made them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def shard_path(cache_dir: str | os.PathLike, index: int) -> Path:
    return Path(cache_dir) / SHARD_PATTERN.format(index)


def shards_of_process(num_shards: int, process_index: int, num_processes: int) -> list[int]:
    """The shards one process encodes: ``i % num_processes == process_index``."""
    return [i for i in range(num_shards) if i % num_processes == process_index]


def write_shard(
    path: str | os.PathLike,
    latents: torch.Tensor,
    labels: torch.Tensor,
    indices: torch.Tensor,
    flipped: torch.Tensor,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write one shard atomically: to ``<path>.tmp`` first, then renamed (a crash never leaves a partial shard).

    The statistics of the latents as stored (after the cast to their storage dtype) go into the file's metadata
    under ``SHARD_STATISTICS_KEY`` (see :func:`read_shard_statistics`).
    """
    n = latents.shape[0]
    for name, tensor in (("labels", labels), ("indices", indices), ("flipped", flipped)):
        if tensor.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) like latents.shape[0], got {tuple(tensor.shape)}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {
        "latents": latents.contiguous(),
        "labels": labels.to(torch.int64).contiguous(),
        "indices": indices.to(torch.int64).contiguous(),
        "flipped": flipped.to(torch.uint8).contiguous(),
    }
    statistics = LatentStatistics().update(tensors["latents"])
    metadata = {**(metadata or {}), SHARD_STATISTICS_KEY: json.dumps(statistics.to_dict())}
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_shard_statistics(path: str | os.PathLike) -> LatentStatistics:
    """The latent statistics of one shard: from its metadata, or computed from its latents for a shard written
    without them (by an older version)."""
    with safe_open(str(path), framework="pt") as f:
        stored = (f.metadata() or {}).get(SHARD_STATISTICS_KEY)
        if stored is not None:
            return LatentStatistics.from_dict(json.loads(stored))
        return LatentStatistics().update(f.get_tensor("latents"))


def cache_latent_statistics(cache_dir: str | os.PathLike, num_shards: int) -> LatentStatistics:
    """The statistics over all latents of shards ``0 .. num_shards - 1`` (all must exist), combined per shard."""
    missing = [i for i in range(num_shards) if not shard_path(cache_dir, i).is_file()]
    if missing:
        raise ValueError(f"latent cache {str(cache_dir)!r} is missing shards {missing}: no statistics over all of it")
    total = LatentStatistics()
    for i in range(num_shards):
        total = total.merge(read_shard_statistics(shard_path(cache_dir, i)))
    return total


def cache_upsampled_images(cache_dir: str | os.PathLike, num_shards: int) -> int | None:
    """How many images of the cache's shards were smaller than its resolution (upsampled by the ADM crop), from the
    shards' metadata (`UPSAMPLED_KEY`); None when a shard does not record it (written by an older version)."""
    total = 0
    for i in range(num_shards):
        with safe_open(str(shard_path(cache_dir, i)), framework="pt") as f:
            stored = (f.metadata() or {}).get(UPSAMPLED_KEY)
        if stored is None:
            return None
        total += int(stored)
    return total


def write_latent_cache_metadata(cache_dir: str | os.PathLike, metadata: dict) -> Path:
    """Write ``metadata.json`` atomically, or check that an existing one describes the same cache.

    Raises ValueError naming the fields that differ (e.g. another autoencoder or resolution), so a rerun never
    mixes shards made with different settings.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / METADATA_FILE
    if path.is_file():
        existing = json.loads(path.read_text())
        # caches written before weight hashes existed have none: their weights cannot be compared
        fields = [k for k in _IDENTITY_FIELDS if k in existing or k != "autoencoder_weights_hash"]
        different = [k for k in fields if existing.get(k) != metadata.get(k)]
        if different:
            details = "; ".join(f"{k}: cache has {existing.get(k)!r}, now {metadata.get(k)!r}" for k in different)
            raise ValueError(
                f"--output_dir={str(cache_dir)!r} already holds a latent cache made with other settings ({details}); "
                "use a new --output_dir or delete the old cache"
            )
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(metadata, indent=2))
    os.replace(tmp, path)
    return path


def update_latent_cache_metadata(cache_dir: str | os.PathLike, updates: Mapping) -> Path:
    """Set fields that describe the cache's content (e.g. ``latent_std``) in an existing ``metadata.json``,
    atomically. The identity fields cannot be changed this way (that would mix shards of different settings)."""
    path = Path(cache_dir) / METADATA_FILE
    identity = sorted(set(updates) & set(_IDENTITY_FIELDS))
    if identity:
        raise ValueError(f"update_latent_cache_metadata cannot change the identity fields {identity} of a cache")
    metadata = {**json.loads(path.read_text()), **updates}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(metadata, indent=2))
    os.replace(tmp, path)
    return path


def load_latent_cache_metadata(cache_dir: str | os.PathLike) -> dict:
    """Read a cache's ``metadata.json`` (see the module docstring); clear errors for a missing or foreign folder."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise ValueError(f"latent cache {str(cache_dir)!r} is not a directory; make it with training/cache_latents.py")
    path = cache_dir / METADATA_FILE
    if not path.is_file():
        raise ValueError(
            f"latent cache {str(cache_dir)!r} has no {METADATA_FILE} (empty or not made by training/cache_latents.py)"
        )
    metadata = json.loads(path.read_text())
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"latent cache {str(cache_dir)!r} has format_version {metadata.get('format_version')!r}; this version of "
            f"dc_ae_hf reads {FORMAT_VERSION}"
        )
    return metadata


def check_cache_matches_autoencoder(
    metadata: dict, config: Mapping, vae_name: str, weights_hash: str | None = None
) -> str | None:
    """Raise ValueError when the cache was made by an autoencoder with another config than ``config`` or, when
    ``weights_hash`` (`autoencoder_weights_hash`) is given, with other weights. Returns a warning text when the
    weights cannot be compared (a cache written before weight hashes were recorded), else None."""
    cached = metadata["autoencoder"]
    current = autoencoder_config_hash(config)
    advice = "re-cache with training/cache_latents.py --vae or pass the autoencoder that made the cache"
    if cached["config_hash"] != current:
        raise ValueError(
            f"the latent cache was made by the autoencoder {cached['name_or_path']!r} (config hash "
            f"{cached['config_hash']}), but --vae={vae_name!r} has config hash {current}: latents from another "
            f"autoencoder cannot be decoded by it; {advice}"
        )
    if weights_hash is None:
        return None
    cached_weights = metadata.get("autoencoder_weights_hash")
    if cached_weights is None:
        return (
            f"the latent cache records no weights hash (written by an older dc_ae_hf), so it cannot be checked that "
            f"--vae={vae_name!r} holds the weights that made it; only its config was compared"
        )
    if cached_weights != weights_hash:
        raise ValueError(
            f"--vae={vae_name!r} is not allowed: it has the cache's architecture but other weights (weights hash "
            f"{weights_hash}; the cache was made by {cached['name_or_path']!r} with {cached_weights}, e.g. a run's "
            f"vae/ instead of its vae_ema/): its decoder would decode these latents wrongly; {advice}"
        )
    return None


class LatentCacheDataset(torch.utils.data.Dataset):
    """A map-style dataset over a latent cache: items ``{"latents": (C, h, w) float32, "labels": int64 scalar}``.

    Latents are in diffusion space (multiplied by ``metadata["scaling_factor"]``; their mean and std over the whole
    cache are ``metadata["latent_mean"]`` and ``metadata["latent_std"]``, ~1 for a well-chosen factor). All shards must exist (a cache
    still being written raises with the missing shard numbers). The labels of every sample are read once into
    ``self.labels``; latents are read lazily, one sample at a time, from memory-mapped shards. Each DataLoader
    worker opens its own file handles.
    """

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.cache_dir = Path(cache_dir)
        self.metadata = load_latent_cache_metadata(self.cache_dir)
        num_shards = int(self.metadata["num_shards"])
        missing = [i for i in range(num_shards) if not shard_path(self.cache_dir, i).is_file()]
        if missing:
            shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise ValueError(
                f"latent cache {str(self.cache_dir)!r} is incomplete: {len(missing)} of {num_shards} shards missing "
                f"({shown}); rerun training/cache_latents.py with the same arguments to finish it"
            )
        self.shard_files = [shard_path(self.cache_dir, i) for i in range(num_shards)]
        labels, self._offsets = [], [0]
        for file in self.shard_files:
            with safe_open(str(file), framework="pt") as f:
                shard_labels = f.get_tensor("labels")
            labels.append(shard_labels)
            self._offsets.append(self._offsets[-1] + shard_labels.shape[0])
        self.labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
        if len(self.labels) == 0:
            raise ValueError(f"latent cache {str(self.cache_dir)!r} holds no latents")
        self._handles: dict[int, object] = {}

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.metadata["latent_shape"])

    def __len__(self) -> int:
        return self._offsets[-1]

    def _handle(self, shard: int):
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.shard_files[shard]), framework="pt")
        return self._handles[shard]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a latent cache of {len(self)} samples")
        index %= len(self)
        shard = bisect.bisect_right(self._offsets, index) - 1
        row = index - self._offsets[shard]
        latents = self._handle(shard).get_slice("latents")[row : row + 1][0]  # (C, h, w)
        return {"latents": latents.float(), "labels": self.labels[index]}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}  # file handles do not travel to DataLoader workers; each opens its own
        return state
