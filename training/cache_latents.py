"""Encode an image dataset once with a frozen DC-AE into a sharded latent cache for `training/train_usit.py`.

    accelerate launch training/cache_latents.py --vae dc-ai/dc-ae-f64c128-1.5 --dataset_name ILSVRC/imagenet-1k \
        --resolution 512 --output_dir latents/in1k-512-f64c128

Images get the ADM center crop at `--resolution` (the official `DMCrop`), are encoded in `--vae_dtype` (official:
fp32) and multiplied by the autoencoder's scaling factor (official convention: latents are stored scaled). `--flip`
adds the latents of the horizontally mirrored crops (the official recipe uses no flip). Each process encodes the
shards i with i % num_processes == process_index; every shard is written atomically, and a rerun of the same command
skips the shards that already exist (resumable; a cache made with other settings is refused). The cache layout and
its reader (`LatentCacheDataset`) are in `dc_ae_hf/data/latent_cache.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from dc_ae_hf.data.images import image_transform
from dc_ae_hf.data.latent_cache import (
    FORMAT_VERSION,
    autoencoder_config_hash,
    shard_path,
    shards_of_process,
    write_latent_cache_metadata,
    write_shard,
)
from dc_ae_hf.diffusion_training import load_labeled_image_dataset
from dc_ae_hf.latents import encode_to_diffusion_space, get_scaling_factor
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vae", required=True, help="AutoencoderDC15 / AutoencoderDC folder or Hub id")
    p.add_argument("--dataset_name", help="Hub dataset id")
    p.add_argument("--dataset_config_name")
    p.add_argument("--train_data_dir", help="imagefolder directory (class folders become labels)")
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
    return p.parse_args(argv)


class _CroppedImages(torch.utils.data.Dataset):
    """Rows ``indices`` of a `datasets.Dataset` as (center-cropped pixels in [-1, 1], label, index)."""

    def __init__(self, dataset, indices, transform, image_column, label_column):
        self.dataset, self.indices, self.transform = dataset, indices, transform
        self.image_column, self.label_column = image_column, label_column

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        row = self.dataset[self.indices[i]]
        return self.transform(row[self.image_column]), int(row[self.label_column]), self.indices[i]


def main(args: argparse.Namespace) -> dict:
    for flag in ("resolution", "shard_size", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag}={getattr(args, flag)!r} is not allowed: must be >= 1")
    accelerator = Accelerator()
    with accelerator.main_process_first():  # the main process builds the `datasets` cache once
        dataset, image_column, id2label, num_classes = load_labeled_image_dataset(
            args.dataset_name, args.train_data_dir, args.split, args.cache_dir, args.dataset_config_name,
            args.image_column, args.label_column, args.max_images,
        )  # fmt: skip
    try:
        vae = AutoencoderDC15.from_pretrained(args.vae)
    except (OSError, ValueError) as error:
        raise ValueError(f"--vae={args.vae!r} could not be loaded as an autoencoder: {error}") from error
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
    vae_path = Path(args.vae)
    metadata = {
        "format_version": FORMAT_VERSION,
        "autoencoder": {
            "name_or_path": str(vae_path.resolve()) if vae_path.is_dir() else args.vae,
            "class": type(vae).__name__,
            "config_hash": autoencoder_config_hash(vae.config),
            "latent_channels": vae.config.latent_channels,
            "latent_channel_choices": list(vae.latent_channel_choices),
            "spatial_compression_ratio": f,
        },
        "scaling_factor": get_scaling_factor(vae),
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
    output_dir = Path(args.output_dir)
    # Every process checks an existing metadata.json (so all fail alike on a cache made with other settings); the main
    # process writes a missing one (atomically, so the others see either no file or the whole file).
    if accelerator.is_main_process or (output_dir / "metadata.json").is_file():
        write_latent_cache_metadata(output_dir, metadata)
    accelerator.wait_for_everyone()

    transform = image_transform(args.resolution)  # ADM center crop (official DMCrop), pixels in [-1, 1]
    my_shards = shards_of_process(num_shards, accelerator.process_index, accelerator.num_processes)
    written, skipped = [], []
    start = time.perf_counter()
    for shard in tqdm(my_shards, desc=f"rank {accelerator.process_index}", disable=not accelerator.is_main_process):
        if shard_path(output_dir, shard).is_file():  # finished by an earlier run
            skipped.append(shard)
            continue
        indices = list(range(shard * args.shard_size, min((shard + 1) * args.shard_size, num_images)))
        images = _CroppedImages(dataset, indices, transform, image_column, args.label_column)
        loader = torch.utils.data.DataLoader(images, batch_size=args.batch_size,
                                             num_workers=args.dataloader_num_workers)  # fmt: skip
        parts = {"latents": [], "labels": [], "indices": [], "flipped": []}
        flips = [False, True] if args.flip else [False]
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
        write_shard(shard_path(output_dir, shard), **tensors, metadata={"shard": str(shard)})
        written.append(shard)
    accelerator.wait_for_everyone()
    summary = {
        "output_dir": str(output_dir),
        "process_index": accelerator.process_index,
        "written": written,
        "skipped": skipped,
        "num_shards": num_shards,
        "seconds": round(time.perf_counter() - start, 3),
    }
    accelerator.print(json.dumps(summary))
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main(parse_args())
