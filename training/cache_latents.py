"""Encode an image dataset once with a frozen DC-AE into a sharded latent cache for `training/train_usit.py`.

    accelerate launch training/cache_latents.py --vae dc-ai/dc-ae-f64c128-1.5 --dataset_name ILSVRC/imagenet-1k \
        --resolution 512 --output_dir latents/in1k-512-f64c128

Images get the ADM center crop at `--resolution` (the official `DMCrop`), are encoded in `--vae_dtype` (official:
fp32) and multiplied by the autoencoder's scaling factor (official convention: latents are stored scaled).
`--random_flip` (alias `--flip`) adds the latents of the horizontally mirrored crops (the official recipe uses no
flip). Each process encodes the
shards i with i % num_processes == process_index; every shard is written atomically, and a rerun of the same command
skips the shards that already exist (resumable; a cache made with other settings is refused). The cache layout and
its reader (`LatentCacheDataset`) are in `dc_ae_hf/data/latent_cache.py`.

At the end the mean and std of all cached (scaled) latents are written to metadata.json (`latent_mean`,
`latent_std`) and printed, with a warning when the std is far from 1 (the scaling factor does not fit this
autoencoder). `--scaling_factor auto` measures the factor (1 / std, `dc_ae_hf.latents.compute_scaling_factor`) on
the first `--scaling_factor_images` images, caches with it and saves the autoencoder with it in its config to
`<output_dir>/vae` (the cache refers to that folder, so `train_usit.py` and its pipeline decode with the same factor):

    python training/cache_latents.py --vae runs/my-ae/vae_ema --train_data_dir data --resolution 256 \
        --output_dir latents/my-ae-256 --scaling_factor auto

`main` reads like the trainers': resolve (every flag, the data and the autoencoder are checked; nothing is written),
measure (the scaling factor), write (metadata.json, the shards, the statistics). The data and loader flags are the
trainers' (`dc_ae_hf/training/arguments.py`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import NamedTuple

from dc_ae_hf.checks import DTYPE_NAMES, check_int, check_number, invalid, parse_dtype
from dc_ae_hf.training.arguments import (
    add_data_source_arguments,
    add_loader_arguments,
    check_before_heavy_imports,
    check_data_and_loader_arguments,
    make_parser,
)

DEFAULT_SCALING_FACTOR_IMAGES = 1000  # --scaling_factor auto measures on this many images by default


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__.split("\n")[0])
    # --help prints every flag's default; the required flags have none (SUPPRESS: no "(default: None)").
    p.add_argument(
        "--vae", required=True, default=argparse.SUPPRESS, help="AutoencoderDC15 / AutoencoderDC folder or Hub id"
    )
    p.add_argument("--output_dir", required=True, default=argparse.SUPPRESS, help="the latent cache folder")
    data = add_data_source_arguments(p, resolution=256, label_column=True, max_images=True)
    data.add_argument(
        "--random_flip",
        "--flip",
        dest="random_flip",
        action="store_true",
        help="flip augmentation: also cache the latents of the horizontally mirrored crops (both are training "
        "examples; the official recipe uses no flip)",
    )
    add_loader_arguments(data, batch_size=32, batch_help="images per encoder call")
    g = p.add_argument_group("latents")
    g.add_argument("--shard_size", type=int, default=1024, help="source images per shard")
    g.add_argument("--latent_dtype", default="float32", choices=DTYPE_NAMES, help="storage dtype of the latents")
    g.add_argument("--vae_dtype", default="float32", choices=DTYPE_NAMES, help="encoder dtype (official: fp32)")
    g.add_argument(
        "--scaling_factor",
        metavar="auto|FLOAT",
        help="None: the autoencoder's config.scaling_factor. 'auto': measure 1 / std of the latents on the first "
        "--scaling_factor_images images (dc_ae_hf.latents.compute_scaling_factor) and cache with it; a number > 0: "
        "cache with it. With either, the autoencoder with that factor in its config is saved to <output_dir>/vae and "
        "the cache refers to it (use it as train_usit.py --vae, the default there); --vae itself is not modified",
    )
    g.add_argument(
        "--scaling_factor_images",
        type=int,
        metavar="N",
        help=f"with --scaling_factor auto: measure on the first N images (None: {DEFAULT_SCALING_FACTOR_IMAGES}, "
        "or all when the dataset has fewer; with --random_flip also their mirror images)",
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # the flags first: --help, argument errors and bad values answer before the heavy imports
    check_before_heavy_imports(check_data_and_loader_arguments, parse_args())  # (run_script below: again, in a ms)

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from dc_ae_hf.data.images import LabeledImageDataset, image_transform, load_labeled_image_dataset
from dc_ae_hf.data.latent_cache import (
    FORMAT_VERSION,
    METADATA_FILE,
    UPSAMPLED_KEY,
    autoencoder_config_hash,
    autoencoder_weights_hash,
    cache_latent_statistics,
    cache_upsampled_images,
    shard_path,
    shards_of_process,
    update_latent_cache_metadata,
    write_latent_cache_metadata,
    write_shard,
)
from dc_ae_hf.latents import compute_scaling_factor, encode_to_diffusion_space, get_scaling_factor
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.output_folders import claim_output_folder, mark_output_folder
from dc_ae_hf.training.run import run_script

# The cached (scaled) latents should have std ~1 (the scaling factor is 1 / std); outside this range: a warning.
LATENT_STD_WARNING_RANGE = (0.5, 2.0)
WRITER = "training/cache_latents.py"
SAVED_VAE_FOLDER = "vae"  # <output_dir>/vae: the autoencoder with the factor of --scaling_factor in its config


def parse_scaling_factor(value: str | None) -> str | float | None:
    """`--scaling_factor`: None (the autoencoder's), "auto" or a finite float > 0."""
    if value is None or value.strip().lower() == "auto":
        return None if value is None else "auto"
    try:
        return check_number("--scaling_factor", float(value), minimum=0, exclusive_minimum=True)
    except ValueError:  # not a number, or not a finite one > 0
        raise invalid("--scaling_factor", value, "give 'auto' or a finite number > 0") from None


class CacheSettings(NamedTuple):
    """The command line, checked (`resolve_settings`): what to encode, how, and where to."""

    vae: str  # --vae as given
    output_dir: Path
    requested_factor: str | float | None  # None: the autoencoder's config; "auto": measured; else this factor
    scaling_factor_images: int  # --scaling_factor auto measures on the first N images (at most all)
    resolution: int
    flips: tuple[bool, ...]  # (False,), or (False, True) with --random_flip
    shard_size: int
    batch_size: int
    num_workers: int
    vae_dtype: str  # torch's spelling (float32, bfloat16, float16) whichever the user typed
    latent_dtype: str
    data: dict  # the keywords of `load_labeled_image_dataset`

    @property
    def saved_vae_dir(self) -> Path:
        return self.output_dir / SAVED_VAE_FOLDER


class CacheInputs(NamedTuple):
    """The data and the autoencoder (`load_inputs`), checked against the settings."""

    dataset: datasets.Dataset
    image_column: str
    images: LabeledImageDataset  # the dataset's ADM center crops (official DMCrop, pixels in [-1, 1]) and labels
    id2label: dict[str, str] | None
    num_classes: int
    vae: AutoencoderDC15  # frozen, on the device, in --vae_dtype
    weights_hash: str  # of the weights as stored, before any dtype cast
    source_name: str  # --vae, as an absolute path when it is a folder


def _dtype_name(flag: str, value) -> str:
    """One spelling in the cache metadata whichever the user typed (fp32 / float32, bf16 / bfloat16, ...)."""
    return str(parse_dtype(flag, value)).removeprefix("torch.")


def resolve_settings(args: argparse.Namespace) -> CacheSettings:
    """Check every flag and the output folder (a new or empty folder, or a latent cache of this script, resumed;
    other settings than its own are refused when its metadata is compared); nothing is read or written."""
    check_data_and_loader_arguments(args)
    check_int("--shard_size", args.shard_size, minimum=1)
    requested_factor = parse_scaling_factor(args.scaling_factor)
    if args.scaling_factor_images is not None and requested_factor != "auto":
        why = f"it is only used with --scaling_factor auto (got --scaling_factor={args.scaling_factor!r})"
        raise invalid("--scaling_factor_images", args.scaling_factor_images, why)
    check_int("--scaling_factor_images", args.scaling_factor_images, minimum=1, optional=True)
    output_dir = claim_output_folder(
        args.output_dir, WRITER, "--output_dir", earlier_output=lambda folder: (folder / METADATA_FILE).is_file()
    )
    vae_path, saved = Path(args.vae), output_dir / SAVED_VAE_FOLDER
    if requested_factor is not None and vae_path.is_dir() and vae_path.resolve() == saved.resolve():
        why = (
            f"it is the folder --scaling_factor writes (<output_dir>/{SAVED_VAE_FOLDER}); pass the original "
            "autoencoder as --vae, or drop --scaling_factor to cache with this one's factor"
        )
        raise invalid("--vae", args.vae, why)
    data = {
        "dataset_name": args.dataset_name,
        "train_data_dir": args.train_data_dir,
        "split": args.split,
        "cache_dir": args.cache_dir,
        "dataset_config_name": args.dataset_config_name,
        "image_column": args.image_column,
        "label_column": args.label_column,
        "max_images": args.max_images,
    }
    return CacheSettings(
        vae=args.vae,
        output_dir=output_dir,
        requested_factor=requested_factor,
        scaling_factor_images=args.scaling_factor_images or DEFAULT_SCALING_FACTOR_IMAGES,
        resolution=args.resolution,
        flips=(False, True) if args.random_flip else (False,),
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        num_workers=args.dataloader_num_workers,
        vae_dtype=_dtype_name("--vae_dtype", args.vae_dtype),
        latent_dtype=_dtype_name("--latent_dtype", args.latent_dtype),
        data=data,
    )


def load_inputs(settings: CacheSettings, accelerator: Accelerator) -> CacheInputs:
    """Load the labelled images and the autoencoder (every process; the main process builds the `datasets` cache
    first) and check that the autoencoder's compression ratio divides --resolution."""
    with accelerator.main_process_first():
        dataset, image_column, id2label, num_classes = load_labeled_image_dataset(**settings.data)
    try:
        vae = AutoencoderDC15.from_pretrained(settings.vae)
    except (OSError, ValueError) as error:
        raise ValueError(f"--vae={settings.vae!r} could not be loaded as an autoencoder: {error}") from error
    f = vae.spatial_compression_ratio
    if settings.resolution % f:
        why = f"must be divisible by the autoencoder's compression ratio {f}"
        raise invalid("--resolution", settings.resolution, why)
    weights_hash = autoencoder_weights_hash(vae)
    vae.requires_grad_(False).eval().to(
        device=accelerator.device, dtype=parse_dtype("--vae_dtype", settings.vae_dtype)
    )
    vae_path = Path(settings.vae)
    source_name = str(vae_path.resolve()) if vae_path.is_dir() else settings.vae
    crops = image_transform(settings.resolution)
    images = LabeledImageDataset(dataset, crops, image_column, settings.data["label_column"])
    return CacheInputs(dataset, image_column, images, id2label, num_classes, vae, weights_hash, source_name)


def main(args: argparse.Namespace) -> dict:
    # ---- resolve: every flag, then the data and the autoencoder; nothing is written yet --------------------------
    settings = resolve_settings(args)
    accelerator = Accelerator()
    inputs = load_inputs(settings, accelerator)
    # ---- measure: the scaling factor the latents are multiplied by ------------------------------------------------
    factor_source, measurement = measure_scaling_factor(settings, inputs, accelerator)
    metadata = cache_metadata(settings, inputs, factor_source, measurement)
    # ---- write: metadata.json (and <output_dir>/vae), this process's missing shards, the statistics of all -------
    write_metadata(settings, metadata, accelerator)
    start = time.perf_counter()
    written, skipped = write_shards(settings, inputs, metadata["num_shards"], accelerator)
    accelerator.wait_for_everyone()
    statistics = {}
    if accelerator.is_main_process:  # over every shard, whichever process or earlier run wrote it
        statistics = _record_statistics(
            settings.output_dir, metadata["num_shards"], metadata["scaling_factor"], factor_source
        )
        _report_upsampled(settings.output_dir, metadata)
    summary = {
        "output_dir": str(settings.output_dir),
        "process_index": accelerator.process_index,
        "written": written,
        "skipped": skipped,
        "num_shards": metadata["num_shards"],
        "scaling_factor": metadata["scaling_factor"],
        "latent_mean": statistics.get("latent_mean"),
        "latent_std": statistics.get("latent_std"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    accelerator.print(json.dumps(summary))
    accelerator.end_training()
    return summary


def measure_scaling_factor(
    settings: CacheSettings, inputs: CacheInputs, accelerator: Accelerator
) -> tuple[str, dict | None]:
    """Set the factor the latents are multiplied by on `inputs.vae` (`encode_to_diffusion_space` applies it):
    the autoencoder's own, --scaling_factor's number, or with `auto` 1 / std of the latents of the first
    --scaling_factor_images images, measured once by the main process (a rerun of the same command reuses the
    recorded value). Returns where the factor comes from and, with `auto`, the record of its measurement."""
    if settings.requested_factor is None:
        return "the autoencoder's config", None
    if settings.requested_factor != "auto":
        inputs.vae.register_to_config(scaling_factor=settings.requested_factor)
        return "--scaling_factor", None
    count = min(settings.scaling_factor_images, len(inputs.dataset))
    measurement = {
        "source_name_or_path": inputs.source_name,
        "source_scaling_factor": get_scaling_factor(inputs.vae),
        "num_images": count,
        "flip": len(settings.flips) == 2,
        "resolution": settings.resolution,
        "vae_dtype": settings.vae_dtype,
    }
    factor = None
    if accelerator.is_main_process:
        existing = _existing_metadata(settings.output_dir)
        if existing is not None and existing.get("scaling_factor_measurement") == measurement:
            factor = float(existing["scaling_factor"])
            print(f"scaling factor {factor:.6g} as measured by the earlier run ({METADATA_FILE})")
        else:
            loader = _loader(settings, inputs, range(count))
            pixels = (batch["pixel_values"] for batch in loader)
            batches = (torch.flip(x, dims=[-1]) if flip else x for x in pixels for flip in settings.flips)
            factor = compute_scaling_factor(inputs.vae, batches)
            print(
                f"measured scaling factor {factor:.6g} = 1 / std of the latents of {count} images "
                f"(the autoencoder's config has {measurement['source_scaling_factor']:.6g})"
            )
    factor = broadcast_object_list([factor])[0]  # every process caches with the main process's measurement
    inputs.vae.register_to_config(scaling_factor=factor)
    return f"measured: 1 / std of the latents of the first {count} images", measurement


def _existing_metadata(output_dir: Path) -> dict | None:
    path = output_dir / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def cache_metadata(settings: CacheSettings, inputs: CacheInputs, factor_source: str, measurement) -> dict:
    """metadata.json: the autoencoder (with --scaling_factor: the one saved to <output_dir>/vae), the scaling
    factor and where it comes from, the crop, the latent layout and the dataset."""
    vae, f = inputs.vae, inputs.vae.spatial_compression_ratio
    autoencoder = {"name_or_path": inputs.source_name}
    if settings.requested_factor is not None:
        autoencoder = {
            "name_or_path": str(settings.saved_vae_dir.resolve()),
            "source_name_or_path": inputs.source_name,
        }
    num_images, flip, data = len(inputs.dataset), len(settings.flips) == 2, settings.data
    train_data_dir = data["train_data_dir"]
    return {
        "format_version": FORMAT_VERSION,
        "autoencoder": {
            **autoencoder,
            "class": type(vae).__name__,
            "config_hash": autoencoder_config_hash(vae.config),
            "latent_channels": vae.config.latent_channels,
            "latent_channel_choices": list(vae.latent_channel_choices),
            "spatial_compression_ratio": f,
        },
        "autoencoder_weights_hash": inputs.weights_hash,
        "scaling_factor": get_scaling_factor(vae),
        "scaling_factor_source": factor_source,
        "scaling_factor_measurement": measurement,
        "resolution": settings.resolution,
        "crop": "adm_center_crop",
        "latent_shape": [vae.config.latent_channels, settings.resolution // f, settings.resolution // f],
        "flip": flip,
        "dtype": settings.latent_dtype,
        "vae_dtype": settings.vae_dtype,
        "shard_size": settings.shard_size,
        "num_images": num_images,
        "num_latents": num_images * len(settings.flips),
        "num_shards": math.ceil(num_images / settings.shard_size),
        "num_classes": inputs.num_classes,
        "id2label": inputs.id2label,
        "dataset": {
            "dataset_name": data["dataset_name"],
            "dataset_config_name": data["dataset_config_name"],
            "train_data_dir": None if train_data_dir is None else str(Path(train_data_dir).resolve()),
            "split": data["split"],
            "image_column": inputs.image_column,
            "label_column": data["label_column"],
            "max_images": data["max_images"],
        },
    }


def write_metadata(settings: CacheSettings, metadata: dict, accelerator: Accelerator) -> None:
    """Write metadata.json, or refuse a cache made with other settings, then record this script as the folder's
    writer and, with --scaling_factor, save the autoencoder with the factor to <output_dir>/vae."""
    # Every process checks an existing metadata.json (so all fail alike on a cache made with other settings); the main
    # process writes a missing one (atomically, so the others see either no file or the whole file).
    if accelerator.is_main_process or (settings.output_dir / METADATA_FILE).is_file():
        write_latent_cache_metadata(settings.output_dir, metadata)
    if accelerator.is_main_process:
        mark_output_folder(settings.output_dir, WRITER)
    if settings.requested_factor is not None and accelerator.is_main_process:
        factor, target = metadata["scaling_factor"], settings.saved_vae_dir
        if _save_autoencoder(settings.vae, factor, target, metadata["autoencoder"]["config_hash"]):
            print(
                f"saved the autoencoder with scaling_factor={factor:.6g} to {target} (the cache refers to it: "
                f"train_usit.py --latent_cache_dir {settings.output_dir} uses it by default)"
            )
    accelerator.wait_for_everyone()


def _save_autoencoder(source: str, scaling_factor: float, target: Path, config_hash: str) -> bool:
    """Save the autoencoder `source` (fp32, as loaded) with `scaling_factor` in its config to `target`, atomically
    (temporary folder + rename); False when `target` already holds one with this config (a rerun)."""
    if (target / "config.json").is_file() and any(target.glob("diffusion_pytorch_model*")):
        if autoencoder_config_hash(AutoencoderDC15.load_config(target)) == config_hash:
            return False
    vae = AutoencoderDC15.from_pretrained(source)
    vae.register_to_config(scaling_factor=scaling_factor)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return True


def write_shards(
    settings: CacheSettings, inputs: CacheInputs, num_shards: int, accelerator: Accelerator
) -> tuple[list[int], list[int]]:
    """Encode and write the shards of this process (i % num_processes == process_index) that do not exist yet;
    returns the shards written and those skipped (finished by an earlier run)."""
    written, skipped = [], []
    shards = shards_of_process(num_shards, accelerator.process_index, accelerator.num_processes)
    for shard in tqdm(shards, desc=f"rank {accelerator.process_index}", disable=not accelerator.is_main_process):
        path = shard_path(settings.output_dir, shard)
        if path.is_file():
            skipped.append(shard)
            continue
        first = shard * settings.shard_size
        indices = range(first, min(first + settings.shard_size, len(inputs.dataset)))
        tensors, upsampled = encode_images(settings, inputs, indices, accelerator.device)
        write_shard(path, **tensors, metadata={"shard": str(shard), UPSAMPLED_KEY: str(upsampled)})  # + statistics
        written.append(shard)
    return written, skipped


@torch.no_grad()
def encode_images(settings: CacheSettings, inputs: CacheInputs, indices: range, device) -> dict[str, torch.Tensor]:
    """The latents (times the scaling factor) of the images `indices`, then with --random_flip those of their mirror
    images, with their labels, source indices and flip flags: the tensors of one shard; and how many of the images
    were smaller than --resolution (upsampled by the ADM crop)."""
    parts = {"latents": [], "labels": [], "indices": [], "flipped": []}
    upsampled = 0  # images smaller than --resolution (the ADM crop enlarges them)
    for first, batch in zip(range(0, len(indices), settings.batch_size), _loader(settings, inputs, indices)):
        labels = batch["labels"]  # (B,)
        batch_indices = torch.as_tensor(indices[first : first + len(labels)])  # the loader keeps their order
        upsampled += int(batch["upsampled"].sum())
        pixels = batch["pixel_values"].to(device, parse_dtype("--vae_dtype", settings.vae_dtype))  # (B, 3, R, R)
        for flip in settings.flips:
            x = torch.flip(pixels, dims=[-1]) if flip else pixels
            latents = encode_to_diffusion_space(inputs.vae, x)  # (B, C, R/f, R/f), times the scaling factor
            parts["latents"].append(latents.float().cpu().to(parse_dtype("--latent_dtype", settings.latent_dtype)))
            parts["labels"].append(labels)
            parts["indices"].append(batch_indices)
            parts["flipped"].append(torch.full_like(labels, int(flip)))
    # originals first, then their mirror images (one list entry per (batch, flip) above)
    flips = len(settings.flips)
    order = sorted(range(len(parts["latents"])), key=lambda k: (k % flips, k // flips))
    return {name: torch.cat([values[k] for k in order]) for name, values in parts.items()}, upsampled


def _loader(settings: CacheSettings, inputs: CacheInputs, indices: range) -> torch.utils.data.DataLoader:
    """Batches ``{"pixel_values", "labels", "upsampled"}`` of the images `indices` (`inputs.images`), in order."""
    rows = torch.utils.data.Subset(inputs.images, list(indices))
    return torch.utils.data.DataLoader(rows, batch_size=settings.batch_size, num_workers=settings.num_workers)


def _record_statistics(output_dir: Path, num_shards: int, factor: float, factor_source: str) -> dict:
    """Combine the per-shard statistics, write latent_mean / latent_std to metadata.json, print them and warn once
    when the std is outside LATENT_STD_WARNING_RANGE (main process)."""
    combined = cache_latent_statistics(output_dir, num_shards)
    mean, std = combined.mean, combined.std
    unit_factor = factor / std if std > 0 and math.isfinite(std) else None  # std of z * factor / std is 1
    fields = {"latent_mean": mean, "latent_std": std, "scaling_factor_for_unit_std": unit_factor}
    update_latent_cache_metadata(output_dir, fields)
    print(
        f"latents of the cache (diffusion space, {combined.count} values): mean {mean:.4f}, std {std:.4f} (scaling "
        f"factor {factor:.6g})"
    )
    low, high = LATENT_STD_WARNING_RANGE
    if not low <= std <= high:
        if unit_factor is None:
            better, or_flag = "undefined (std 0 or not finite)", ""
        else:
            better, or_flag = (
                f"{unit_factor:.6g} (= {factor:.6g} / {std:.4g})",
                f", or --scaling_factor {unit_factor:.6g}",
            )
        warnings.warn(
            f"the cached latents in {output_dir} have std {std:.4g} (mean {mean:.4g}), outside "
            f"LATENT_STD_WARNING_RANGE [{low}, {high}]: the diffusion model expects unit-variance latents. They were "
            f"multiplied by scaling_factor={factor:.6g} ({factor_source}); the factor that gives std 1 is {better}. "
            "Fix: re-cache into a new --output_dir with --scaling_factor auto (measures 1 / std, caches with it and "
            f"saves the autoencoder with that factor to <output_dir>/vae for train_usit.py and the pipeline){or_flag}",
            UserWarning,
            stacklevel=2,
        )
    return {"latent_count": combined.count, "latent_mean": mean, "latent_std": std}


def _report_upsampled(output_dir: Path, metadata: dict) -> None:
    """Say once how many images were smaller than --resolution (kept, upsampled by the ADM center crop as the
    official DMCrop does) and record the count in metadata.json (main process)."""
    upsampled = cache_upsampled_images(output_dir, metadata["num_shards"])
    if upsampled is None:  # shards of an older version do not record it
        return
    update_latent_cache_metadata(output_dir, {"upsampled_images": upsampled})
    print(
        f"{upsampled} of {metadata['num_images']} images ({upsampled / metadata['num_images']:.1%}) were smaller than "
        f"--resolution={metadata['resolution']} and were upsampled by the ADM center crop"
    )


if __name__ == "__main__":
    run_script(main, parse_args)
