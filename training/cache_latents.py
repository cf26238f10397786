"""Encode an image dataset once with a frozen DC-AE into a sharded latent cache for `training/train_usit.py`.

    accelerate launch training/cache_latents.py --vae dc-ai/dc-ae-f64c128-1.5 --dataset_name ILSVRC/imagenet-1k \
        --resolution 512 --output_dir latents/in1k-512-f64c128

Images get the ADM center crop at `--resolution` (the official `DMCrop`), are encoded in `--vae_dtype` (official:
fp32) and multiplied by the autoencoder's scaling factor (official convention: latents are stored scaled). `--flip`
adds the latents of the horizontally mirrored crops (the official recipe uses no flip). Each process encodes the
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

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from dc_ae_hf.checks import DTYPES
from dc_ae_hf.data.images import (
    decode_dataset_image,
    image_transform,
    load_labeled_image_dataset_from_flags,
    undecoded_image_column,
)
from dc_ae_hf.data.latent_cache import (
    FORMAT_VERSION,
    METADATA_FILE,
    autoencoder_config_hash,
    autoencoder_weights_hash,
    cache_latent_statistics,
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
DEFAULT_SCALING_FACTOR_IMAGES = 1000  # --scaling_factor auto measures on this many images by default
WRITER = "training/cache_latents.py"
SAVED_VAE_FOLDER = "vae"  # <output_dir>/vae: the autoencoder with the factor of --scaling_factor in its config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--vae", required=True, help="AutoencoderDC15 / AutoencoderDC folder or Hub id")
    p.add_argument("--dataset_name", help="Hub dataset id")
    p.add_argument("--dataset_config_name")
    p.add_argument(
        "--train_data_dir", "--data_dir", dest="train_data_dir", help="imagefolder directory (class folders: labels)"
    )
    p.add_argument("--split", default="train")
    p.add_argument("--image_column", help="default: the dataset's first image column")
    p.add_argument("--label_column", default="label")
    p.add_argument("--cache_dir", help="Hugging Face datasets cache")
    p.add_argument("--max_images", type=int, help="cache only the first N images")
    p.add_argument("--output_dir", required=True, help="the latent cache folder")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--flip", action="store_true", help="also cache the horizontally flipped crops")
    p.add_argument("--shard_size", type=int, default=1024, help="source images per shard")
    p.add_argument("--batch_size", type=int, default=32, help="images per encoder call")
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    p.add_argument("--latent_dtype", default="float32", choices=sorted(DTYPES), help="storage dtype of the latents")
    p.add_argument("--vae_dtype", default="float32", choices=sorted(DTYPES), help="encoder dtype (official: fp32)")
    p.add_argument(
        "--scaling_factor",
        metavar="auto|FLOAT",
        help="default: the autoencoder's config.scaling_factor. 'auto': measure 1 / std of the latents on the first "
        "--scaling_factor_images images (dc_ae_hf.latents.compute_scaling_factor) and cache with it; a number > 0: "
        "cache with it. With either, the autoencoder with that factor in its config is saved to <output_dir>/vae and "
        "the cache refers to it (use it as train_usit.py --vae, the default there); --vae itself is not modified",
    )
    p.add_argument(
        "--scaling_factor_images",
        type=int,
        metavar="N",
        help=f"with --scaling_factor auto: measure on the first N images (default {DEFAULT_SCALING_FACTOR_IMAGES}, "
        "or all when the dataset has fewer; with --flip also their mirror images)",
    )
    args = p.parse_args(argv)
    # one spelling in the cache metadata whichever the user typed (fp32 / float32, bf16 / bfloat16, ...)
    args.latent_dtype = str(DTYPES[args.latent_dtype]).removeprefix("torch.")
    args.vae_dtype = str(DTYPES[args.vae_dtype]).removeprefix("torch.")
    return args


def parse_scaling_factor(value: str | None) -> str | float | None:
    """`--scaling_factor`: None (the autoencoder's), "auto" or a finite float > 0."""
    if value is None or value.strip().lower() == "auto":
        return None if value is None else "auto"
    try:
        factor = float(value)
    except ValueError:
        factor = None
    if factor is None or not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"--scaling_factor={value!r} is not allowed: give 'auto' or a finite number > 0")
    return factor


def _existing_metadata(output_dir: Path) -> dict | None:
    path = output_dir / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


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


class _CroppedImages(torch.utils.data.Dataset):
    """Rows ``indices`` of a `datasets.Dataset` as (center-cropped pixels in [-1, 1], label, index)."""

    def __init__(self, dataset, indices, transform, image_column, label_column):
        # decoded here (not by `datasets`) so that an unreadable file is reported by name
        self.dataset, self.indices, self.transform = undecoded_image_column(dataset, image_column), indices, transform
        self.image_column, self.label_column = image_column, label_column

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        row = self.dataset[index]
        image = decode_dataset_image(
            row[self.image_column], f"row {index} of the dataset's {self.image_column!r} column"
        )
        return self.transform(image), int(row[self.label_column]), index


def main(args: argparse.Namespace) -> dict:
    for flag in ("resolution", "shard_size", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag}={getattr(args, flag)!r} is not allowed: must be >= 1")
    requested_factor = parse_scaling_factor(args.scaling_factor)
    if args.scaling_factor_images is not None:
        if requested_factor != "auto":
            raise ValueError(
                f"--scaling_factor_images={args.scaling_factor_images} is only used with --scaling_factor auto "
                f"(got --scaling_factor={args.scaling_factor!r})"
            )
        if args.scaling_factor_images < 1:
            raise ValueError(f"--scaling_factor_images={args.scaling_factor_images} is not allowed: must be >= 1")
    # a new or empty folder, or a latent cache of this script (resumed; other settings are refused below)
    output_dir = claim_output_folder(
        args.output_dir, WRITER, "--output_dir", earlier_output=lambda folder: (folder / METADATA_FILE).is_file()
    )
    vae_path = Path(args.vae)
    saved_vae_dir = output_dir / SAVED_VAE_FOLDER
    if requested_factor is not None and vae_path.is_dir() and vae_path.resolve() == saved_vae_dir.resolve():
        raise ValueError(
            f"--vae={args.vae!r} is the folder --scaling_factor writes (<output_dir>/{SAVED_VAE_FOLDER}); pass the "
            "original autoencoder as --vae, or drop --scaling_factor to cache with this one's factor"
        )
    accelerator = Accelerator()
    with accelerator.main_process_first():  # the main process builds the `datasets` cache once
        dataset, image_column, id2label, num_classes = load_labeled_image_dataset_from_flags(args)
    try:
        vae = AutoencoderDC15.from_pretrained(args.vae)
    except (OSError, ValueError) as error:
        raise ValueError(f"--vae={args.vae!r} could not be loaded as an autoencoder: {error}") from error
    weights_hash = autoencoder_weights_hash(vae)  # of the weights as stored, before any dtype cast
    vae.requires_grad_(False).eval().to(accelerator.device)
    if args.vae_dtype != "float32":
        vae.to(DTYPES[args.vae_dtype])
    f = vae.spatial_compression_ratio
    if args.resolution % f:
        raise ValueError(
            f"--resolution={args.resolution} must be divisible by the autoencoder's compression ratio {f}"
        )

    num_images = len(dataset)
    num_shards = math.ceil(num_images / args.shard_size)
    transform = image_transform(args.resolution)  # ADM center crop (official DMCrop), pixels in [-1, 1]
    flips = [False, True] if args.flip else [False]
    source_name = str(vae_path.resolve()) if vae_path.is_dir() else args.vae
    source_factor = get_scaling_factor(vae)
    autoencoder = {"name_or_path": source_name}
    measurement = None
    if requested_factor is None:
        factor_source = "the autoencoder's config"
    elif requested_factor == "auto":
        count = min(args.scaling_factor_images or DEFAULT_SCALING_FACTOR_IMAGES, num_images)
        measurement = {
            "source_name_or_path": source_name,
            "source_scaling_factor": source_factor,
            "num_images": count,
            "flip": args.flip,
            "resolution": args.resolution,
            "vae_dtype": args.vae_dtype,
        }
        factor_source = f"measured: 1 / std of the latents of the first {count} images"
        factor = None
        if accelerator.is_main_process:  # measures once; a rerun of the same command reuses the recorded factor
            existing = _existing_metadata(output_dir)
            if existing is not None and existing.get("scaling_factor_measurement") == measurement:
                factor = float(existing["scaling_factor"])
                accelerator.print(f"scaling factor {factor:.6g} as measured by the earlier run ({METADATA_FILE})")
            else:
                crops = _CroppedImages(dataset, list(range(count)), transform, image_column, args.label_column)
                loader = torch.utils.data.DataLoader(
                    crops, batch_size=args.batch_size, num_workers=args.dataloader_num_workers
                )
                batches = (torch.flip(x, dims=[-1]) if flipped else x for x, _, _ in loader for flipped in flips)
                factor = compute_scaling_factor(vae, batches)
                accelerator.print(
                    f"measured scaling factor {factor:.6g} = 1 / std of the latents of {count} images "
                    f"(the autoencoder's config has {source_factor:.6g})"
                )
        factor = broadcast_object_list([factor])[0]  # every process caches with the main process's measurement
    else:
        factor, factor_source = requested_factor, "--scaling_factor"
    if requested_factor is not None:
        vae.register_to_config(scaling_factor=factor)  # encode_to_diffusion_space multiplies by it
        autoencoder = {"name_or_path": str(saved_vae_dir.resolve()), "source_name_or_path": source_name}
    metadata = {
        "format_version": FORMAT_VERSION,
        "autoencoder": {
            **autoencoder,
            "class": type(vae).__name__,
            "config_hash": autoencoder_config_hash(vae.config),
            "latent_channels": vae.config.latent_channels,
            "latent_channel_choices": list(vae.latent_channel_choices),
            "spatial_compression_ratio": f,
        },
        "autoencoder_weights_hash": weights_hash,
        "scaling_factor": get_scaling_factor(vae),
        "scaling_factor_source": factor_source,
        "scaling_factor_measurement": measurement,
        "resolution": args.resolution,
        "crop": "adm_center_crop",
        "latent_shape": [vae.config.latent_channels, args.resolution // f, args.resolution // f],
        "flip": args.flip,
        "dtype": args.latent_dtype,
        "vae_dtype": args.vae_dtype,
        "shard_size": args.shard_size,
        "num_images": num_images,
        "num_latents": num_images * (2 if args.flip else 1),
        "num_shards": num_shards,
        "num_classes": num_classes,
        "id2label": id2label,
        "dataset": {
            "dataset_name": args.dataset_name,
            "dataset_config_name": args.dataset_config_name,
            "train_data_dir": None if args.train_data_dir is None else str(Path(args.train_data_dir).resolve()),
            "split": args.split,
            "image_column": image_column,
            "label_column": args.label_column,
            "max_images": args.max_images,
        },
    }
    # Every process checks an existing metadata.json (so all fail alike on a cache made with other settings); the main
    # process writes a missing one (atomically, so the others see either no file or the whole file).
    if accelerator.is_main_process or (output_dir / "metadata.json").is_file():
        write_latent_cache_metadata(output_dir, metadata)
    if accelerator.is_main_process:
        mark_output_folder(output_dir, WRITER)
    if requested_factor is not None and accelerator.is_main_process:
        if _save_autoencoder(
            args.vae, metadata["scaling_factor"], saved_vae_dir, metadata["autoencoder"]["config_hash"]
        ):
            accelerator.print(
                f"saved the autoencoder with scaling_factor={metadata['scaling_factor']:.6g} to {saved_vae_dir} "
                f"(the cache refers to it: train_usit.py --latent_cache_dir {output_dir} uses it by default)"
            )
    accelerator.wait_for_everyone()

    my_shards = shards_of_process(num_shards, accelerator.process_index, accelerator.num_processes)
    written, skipped = [], []
    start = time.perf_counter()
    for shard in tqdm(my_shards, desc=f"rank {accelerator.process_index}", disable=not accelerator.is_main_process):
        if shard_path(output_dir, shard).is_file():  # finished by an earlier run
            skipped.append(shard)
            continue
        indices = list(range(shard * args.shard_size, min((shard + 1) * args.shard_size, num_images)))
        images = _CroppedImages(dataset, indices, transform, image_column, args.label_column)
        loader = torch.utils.data.DataLoader(
            images, batch_size=args.batch_size, num_workers=args.dataloader_num_workers
        )
        parts = {"latents": [], "labels": [], "indices": [], "flipped": []}
        with torch.no_grad():
            for pixels, labels, batch_indices in loader:
                pixels = pixels.to(accelerator.device, DTYPES[args.vae_dtype])  # (B, 3, R, R)
                for flipped in flips:
                    x = torch.flip(pixels, dims=[-1]) if flipped else pixels
                    latents = encode_to_diffusion_space(vae, x)  # (B, C, R/f, R/f), times the scaling factor
                    parts["latents"].append(latents.float().cpu().to(DTYPES[args.latent_dtype]))
                    parts["labels"].append(labels)
                    parts["indices"].append(batch_indices)
                    parts["flipped"].append(torch.full_like(labels, int(flipped)))
        # originals first, then their mirror images (one list entry per (batch, flip) above)
        order = sorted(range(len(parts["latents"])), key=lambda k: (k % len(flips), k // len(flips)))
        tensors = {name: torch.cat([values[k] for k in order]) for name, values in parts.items()}
        write_shard(shard_path(output_dir, shard), **tensors, metadata={"shard": str(shard)})  # + statistics
        written.append(shard)
    accelerator.wait_for_everyone()
    statistics = {}
    if accelerator.is_main_process:  # over every shard, whichever process or earlier run wrote it
        statistics = _record_statistics(output_dir, num_shards, metadata["scaling_factor"], factor_source)
        accelerator.print(
            f"latents of the cache (diffusion space, {statistics['latent_count']} values): mean "
            f"{statistics['latent_mean']:.4f}, std {statistics['latent_std']:.4f} (scaling factor "
            f"{metadata['scaling_factor']:.6g})"
        )
    summary = {
        "output_dir": str(output_dir),
        "process_index": accelerator.process_index,
        "written": written,
        "skipped": skipped,
        "num_shards": num_shards,
        "scaling_factor": metadata["scaling_factor"],
        "latent_mean": statistics.get("latent_mean"),
        "latent_std": statistics.get("latent_std"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    accelerator.print(json.dumps(summary))
    accelerator.end_training()
    return summary


def _record_statistics(output_dir: Path, num_shards: int, factor: float, factor_source: str) -> dict:
    """Combine the per-shard statistics, write latent_mean / latent_std to metadata.json and warn once when the std
    is outside LATENT_STD_WARNING_RANGE."""
    combined = cache_latent_statistics(output_dir, num_shards)
    mean, std = combined.mean, combined.std
    unit_factor = factor / std if std > 0 and math.isfinite(std) else None  # std of z * factor / std is 1
    fields = {"latent_mean": mean, "latent_std": std, "scaling_factor_for_unit_std": unit_factor}
    update_latent_cache_metadata(output_dir, fields)
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


if __name__ == "__main__":
    run_script(main, parse_args)
