"""Evaluate an autoencoder's reconstructions per latent-channel prefix: PSNR, SSIM, LPIPS and rFID.

    python training/evaluate_dc_ae.py --pretrained_model_name_or_path runs/phase3/vae_ema \
        --dataset_name ILSVRC/imagenet-1k --split validation --resolution 512 --lpips_net alex \
        --inception_weights_path weights-inception-2015-12-05-6726825d.pth --output_json eval.json

Images are ADM center-cropped to `--resolution` (the official protocol, docs/training.md "Evaluation"). Each batch
is encoded once and decoded from the first c' channels for every `--latent_channels` value (default: the model's
structured prefixes). Without `--split`, the dataset's "validation" split is evaluated, or its only split when it
has one (an imagefolder without split folders is a single "train" split). Writes `--output_json` ({c': {metric:
value}} plus the settings) and prints a markdown table (also written to `--output_markdown`). The data and loader
flags are the trainers' (`dc_ae_hf/training/arguments.py`); the older spellings `--data_dir`, `--num_images`,
`--num_workers`, `--dtype` and `--output_md` still work.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from dc_ae_hf.checks import DTYPE_NAMES, check_channel_prefixes, invalid, parse_dtype
from dc_ae_hf.training.arguments import (
    add_data_source_arguments,
    add_loader_arguments,
    check_before_heavy_imports,
    check_data_and_loader_arguments,
    make_parser,
)


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__.split("\n")[0])
    # --help prints every flag's default; the required flags have none (SUPPRESS: no "(default: None)").
    p.add_argument(
        "--pretrained_model_name_or_path",
        required=True,
        default=argparse.SUPPRESS,
        help="save_pretrained folder or Hub id",
    )
    p.add_argument("--subfolder", help="e.g. 'vae' inside a training output or pipeline folder")
    p.add_argument(
        "--vae_dtype",
        "--dtype",
        dest="vae_dtype",
        default="fp32",
        choices=DTYPE_NAMES,
        help="autoencoder dtype, either spelling (official: fp32)",
    )
    p.add_argument(
        "--latent_channels", type=int, nargs="+", help="prefixes c' (None: the model's latent_channel_choices)"
    )
    data = add_data_source_arguments(
        p,
        resolution=512,
        split=None,
        split_help="dataset split; None: 'validation' if the dataset has one, else its only split (an imagefolder "
        "without split folders: 'train')",
        max_images=True,
    )
    data.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it")
    add_loader_arguments(data, batch_size=16, batch_help="images per batch")
    p.add_argument(
        "--lpips_net",
        default="alex",
        choices=["alex", "vgg", "squeeze", "none"],
        help="LPIPS trunk; official protocol: alex (torchmetrics' default trunk); none skips LPIPS",
    )
    p.add_argument(
        "--inception_weights_path", help="torch-fidelity Inception weights; computes rFID when given (None: no rFID)"
    )
    p.add_argument("--compute_rfid", action="store_true", help="rFID with weights from $TORCH_HOME (downloads)")
    p.add_argument("--device", help="torch device (None: cuda if available, else cpu)")
    p.add_argument("--output_json", required=True, default=argparse.SUPPRESS, help="the results file to write")
    p.add_argument(
        "--output_markdown",
        "--output_md",
        dest="output_markdown",
        help="also write the table here (None: only print it)",
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # the flags first: --help, argument errors and bad values answer before the heavy imports
    check_before_heavy_imports(check_data_and_loader_arguments, parse_args())  # (run_script below: again, in a ms)

import datasets
import torch
from tqdm.auto import tqdm

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
from dc_ae_hf.training.run import run_script

# The split evaluated when --split is not given: the first of these the dataset has, else its only split.
DEFAULT_SPLITS = ("validation",)


def resolve_split(args: argparse.Namespace) -> str:
    """``--split``, or the split to evaluate when it is not given (see :data:`DEFAULT_SPLITS`).

    The split names come from the dataset's builder (the data files of an imagefolder, the card of a Hub dataset)
    without preparing any split. When they cannot be read (e.g. a Hub dataset offline), "validation" is used and
    loading reports what is wrong.
    """
    if args.split is not None:
        return args.split
    if args.train_data_dir is not None:
        path, kwargs = "imagefolder", {"data_dir": str(args.train_data_dir)}
    else:
        path, kwargs = args.dataset_name, {"config_name": args.dataset_config_name}
    try:
        splits = datasets.get_dataset_split_names(path, cache_dir=args.cache_dir, **kwargs)
    except (OSError, ValueError):  # incl. datasets' ConnectionError (offline) and FileNotFoundError
        return DEFAULT_SPLITS[0]
    for split in DEFAULT_SPLITS:
        if split in splits:
            return split
    if len(splits) == 1:
        return splits[0]
    raise invalid("--split", None, f"the dataset has the splits {list(splits)}; name the one to evaluate")


def main(args: argparse.Namespace) -> dict:
    check_data_and_loader_arguments(args)
    dtype = parse_dtype("--vae_dtype", args.vae_dtype)
    split = resolve_split(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    vae = AutoencoderDC15.from_pretrained(
        args.pretrained_model_name_or_path, subfolder=args.subfolder, torch_dtype=dtype
    )
    vae = vae.to(device).eval()
    f = vae.spatial_compression_ratio
    if args.resolution % f:
        raise invalid("--resolution", args.resolution, f"must be divisible by the ratio {f}")
    channels = args.latent_channels or list(vae.latent_channel_choices)
    check_channel_prefixes("--latent_channels", channels, vae.config.latent_channels)
    for c in channels:  # the model's rule: a DC-AE 1.0 model (latent shortcuts) decodes the full latent only
        vae.check_prefix(c, "--latent_channels")

    dataset = load_image_dataset(
        dataset_name=args.dataset_name,
        train_data_dir=args.train_data_dir,
        split=split,
        streaming=args.streaming,
        cache_dir=args.cache_dir,
        dataset_config_name=args.dataset_config_name,
    )
    if args.max_images is not None:
        dataset = dataset.take(args.max_images)
    wrap = TransformedIterableImageDataset if args.streaming else TransformedImageDataset
    dataset = wrap(dataset, image_transform(args.resolution, center_crop=True), image_column=args.image_column)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.dataloader_num_workers, collate_fn=collate_images
    )
    if not args.streaming:
        num_batches = len(loader)
    else:  # a stream's length is known only when it is cut
        num_batches = math.ceil(args.max_images / args.batch_size) if args.max_images is not None else None
    lpips_model = None if args.lpips_net == "none" else load_lpips(args.lpips_net, device)
    compute_rfid = args.compute_rfid or args.inception_weights_path is not None

    start = time.perf_counter()
    results = evaluate_autoencoder(
        vae,
        tqdm(loader, total=num_batches, desc=f"evaluating {split}", unit="batch"),
        latent_channels_list=channels,
        lpips_model=lpips_model,
        compute_rfid=compute_rfid,
        inception_weights_path=args.inception_weights_path,
        device=device,
        progress=True,  # the rFID stage runs after the pass above: its own bar
    )
    table = format_markdown_table(results)
    report = {
        "model": args.pretrained_model_name_or_path,
        "subfolder": args.subfolder,
        "data": args.dataset_name or args.train_data_dir,
        "split": split,
        "num_images": len(dataset) if not args.streaming else args.max_images,
        "resolution": args.resolution,
        "lpips_net": args.lpips_net,
        "rfid": compute_rfid,
        "dtype": args.vae_dtype,
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
    run_script(main, parse_args)
