"""Evaluate an autoencoder's reconstructions per latent-channel prefix: PSNR, SSIM, LPIPS and rFID.

    python training/evaluate_dc_ae.py --pretrained_model_name_or_path runs/phase3/vae_ema \
        --dataset_name ILSVRC/imagenet-1k --split validation --resolution 512 --lpips_net alex \
        --inception_weights_path weights-inception-2015-12-05-6726825d.pth --output_json eval.json

Images are ADM center-cropped to `--resolution` (the official protocol, docs/training.md "Evaluation"). Each batch
is encoded once and decoded from the first c' channels for every `--latent_channels` value (default: the model's
structured prefixes). Writes `--output_json` ({c': {metric: value}} plus the settings) and prints a markdown table
(also written to `--output_markdown`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dc_ae_hf.data.images import (
    TransformedImageDataset,
    TransformedIterableImageDataset,
    collate_images,
    image_transform,
    load_image_dataset,
)
from dc_ae_hf.metrics.autoencoder import evaluate_autoencoder, format_markdown_table
from dc_ae_hf.metrics.lpips import load_lpips
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.training_utils import check_channel_choices

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrained_model_name_or_path", required=True, help="save_pretrained folder or Hub id")
    p.add_argument("--subfolder", help="e.g. 'vae' inside a training output or pipeline folder")
    p.add_argument("--dataset_name", help="Hub dataset id")
    p.add_argument("--dataset_config_name")
    p.add_argument("--data_dir", help="imagefolder directory")
    p.add_argument("--split", default="validation")
    p.add_argument("--image_column")
    p.add_argument("--streaming", action="store_true")
    p.add_argument("--cache_dir")
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--num_images", type=int, help="evaluate only the first N images (default: all)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--latent_channels", type=int, nargs="+", help="prefixes c' (default: the model's choices)")
    p.add_argument("--lpips_net", default="alex", choices=["alex", "vgg", "squeeze", "none"],
                   help="official protocol: alex (torchmetrics' default trunk); none skips LPIPS")  # fmt: skip
    p.add_argument("--inception_weights_path", help="torch-fidelity Inception weights; computes rFID when given")
    p.add_argument("--compute_rfid", action="store_true", help="rFID with weights from $TORCH_HOME (downloads)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(_DTYPES), help="autoencoder dtype (official: fp32)")
    p.add_argument("--output_json", required=True)
    p.add_argument("--output_markdown", help="also write the table here")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    if (args.dataset_name is None) == (args.data_dir is None):
        raise ValueError(
            f"give exactly one of --dataset_name and --data_dir, got {args.dataset_name!r} and {args.data_dir!r}"
        )
    for flag in ("resolution", "batch_size", "num_images"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag}={value} is not allowed: must be >= 1")
    vae = AutoencoderDC15.from_pretrained(
        args.pretrained_model_name_or_path, subfolder=args.subfolder, torch_dtype=_DTYPES[args.dtype]
    )
    vae = vae.to(args.device).eval()
    f = vae.spatial_compression_ratio
    if args.resolution % f:
        raise ValueError(f"--resolution={args.resolution} is not allowed: must be divisible by the ratio {f}")
    channels = args.latent_channels or list(vae.latent_channel_choices)
    check_channel_choices(channels, vae.config.latent_channels, "--latent_channels")

    dataset = load_image_dataset(
        dataset_name=args.dataset_name,
        train_data_dir=args.data_dir,
        split=args.split,
        streaming=args.streaming,
        cache_dir=args.cache_dir,
        dataset_config_name=args.dataset_config_name,
    )
    if args.num_images is not None:
        dataset = dataset.take(args.num_images)
    wrap = TransformedIterableImageDataset if args.streaming else TransformedImageDataset
    dataset = wrap(dataset, image_transform(args.resolution, center_crop=True), image_column=args.image_column)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=collate_images
    )
    lpips_model = None if args.lpips_net == "none" else load_lpips(args.lpips_net, args.device)
    compute_rfid = args.compute_rfid or args.inception_weights_path is not None

    start = time.perf_counter()
    results = evaluate_autoencoder(
        vae,
        loader,
        latent_channels_list=channels,
        lpips_model=lpips_model,
        compute_rfid=compute_rfid,
        inception_weights_path=args.inception_weights_path,
        device=args.device,
    )
    table = format_markdown_table(results)
    report = {
        "model": args.pretrained_model_name_or_path,
        "subfolder": args.subfolder,
        "data": args.dataset_name or args.data_dir,
        "split": args.split,
        "num_images": len(dataset) if not args.streaming else args.num_images,
        "resolution": args.resolution,
        "lpips_net": args.lpips_net,
        "rfid": compute_rfid,
        "dtype": args.dtype,
        "seconds": round(time.perf_counter() - start, 2),
        "results": {str(c): row for c, row in results.items()},
    }
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(report, indent=2))
    if args.output_markdown:
        Path(args.output_markdown).write_text(table + "\n")
    print(table)
    return report


if __name__ == "__main__":
    main(parse_args())
