"""FID reference statistics (`mu`, `sigma` of Inception pool3 features, optionally FD-DINOv2 statistics) of an image
dataset, ADM center-cropped, as an `.npz` for `training/evaluate_usit.py --reference`.

    python training/make_reference_statistics.py --dataset_name ILSVRC/imagenet-1k --split train --resolution 512 \
        --inception_weights_path weights-inception-2015-12-05-6726825d.pth --output imagenet_train_512.npz

The official reference is the whole ImageNet *train* split at 512 px with the ADM center crop
(`applications/dc_ae/generate_reference.py` of DC-Gen); the statistics here come from `compute_reference_statistics`
(torch-fidelity's Inception, float64 mean and N - 1 covariance, the official `.npz` keys). The data flags are the
trainers' (`dc_ae_hf/training/arguments.py`); `--fid_feature_layer` is `evaluate_usit.py`'s. The older spellings
`--data_dir`, `--num_images` and `--feature_layer` still work.
"""

from __future__ import annotations

import argparse

from dc_ae_hf.choices import INCEPTION_FEATURE_LAYERS
from dc_ae_hf.training.arguments import (
    add_data_source_arguments,
    check_before_heavy_imports,
    check_data_source_arguments,
    make_parser,
)


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(" ".join(__doc__.split("\n\n")[0].split()))
    # --help prints every flag's default; the required flags have none (SUPPRESS: no "(default: None)").
    add_data_source_arguments(
        p, resolution=512, split_help="dataset split (the official reference: ImageNet train)", max_images=True
    )
    p.add_argument("--inception_weights_path", help="torch-fidelity Inception weights (needed offline)")
    p.add_argument("--dinov2", help="also store FD-DINOv2 statistics of this DINOv2 model (Hub id or folder)")
    p.add_argument(
        "--fid_feature_layer",
        "--feature_layer",
        dest="fid_feature_layer",
        default="2048",
        choices=INCEPTION_FEATURE_LAYERS,
        help="Inception layer: 2048 (pool3) is the FID standard; evaluate_usit.py --fid_feature_layer must match",
    )
    p.add_argument("--batch_size", type=int, default=64, help="images per Inception / DINOv2 batch")
    p.add_argument("--device", help="torch device (None: cuda if available, else cpu)")
    p.add_argument("--save_cpu_ram", action="store_true", help="torch-fidelity: no data loader worker processes")
    p.add_argument("--output", required=True, default=argparse.SUPPRESS, help="the .npz file to write")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # the flags first: --help, argument errors and bad values answer before the heavy imports
    check_before_heavy_imports(check_data_source_arguments, parse_args())  # (run_script below: again, in a ms)

import numpy as np
import torch
from torch.utils.data import Dataset

from dc_ae_hf.checks import check_int, invalid
from dc_ae_hf.data.images import (
    center_crop_arr,
    decode_dataset_image,
    find_image_column,
    load_image_dataset,
    undecoded_image_column,
)
from dc_ae_hf.metrics.inception import compute_reference_statistics
from dc_ae_hf.training.run import run_script


class CenterCroppedUInt8(Dataset):
    """Images of a `datasets.Dataset` after the ADM center crop, as uint8 (3, R, R) tensors.

    Decoded with `decode_dataset_image` (`to_rgb`'s conversion rules): a corrupt image names its file.
    """

    def __init__(self, dataset, image_column: str, resolution: int) -> None:
        self.dataset = undecoded_image_column(dataset, image_column)
        self.image_column, self.resolution = image_column, resolution

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        where = f"row {int(index)} of the dataset's {self.image_column!r} column"
        image = decode_dataset_image(self.dataset[int(index)][self.image_column], where)
        return torch.from_numpy(np.array(center_crop_arr(image, self.resolution))).permute(2, 0, 1)


def main(args: argparse.Namespace) -> str:
    check_int("--max_images", args.max_images, minimum=2, optional=True)  # a covariance needs 2 images
    check_data_source_arguments(args)
    check_int("--batch_size", args.batch_size, minimum=1)
    if not str(args.output).endswith(".npz"):
        raise invalid("--output", args.output, "must be an .npz file")
    dataset = load_image_dataset(
        args.dataset_name,
        args.train_data_dir,
        args.split,
        cache_dir=args.cache_dir,
        dataset_config_name=args.dataset_config_name,
    )
    if args.max_images is not None:
        dataset = dataset.select(range(min(args.max_images, len(dataset))))
    if len(dataset) < 2:
        raise invalid("--split", args.split, f"it holds {len(dataset)} image(s); reference statistics need at least 2")
    images = CenterCroppedUInt8(dataset, find_image_column(dataset, args.image_column), args.resolution)
    path = compute_reference_statistics(
        images,
        args.output,
        inception_weights_path=args.inception_weights_path,
        dinov2=args.dinov2,
        feature_layer=args.fid_feature_layer,
        batch_size=args.batch_size,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        save_cpu_ram=args.save_cpu_ram,
    )
    print(f"wrote {path} ({len(images)} images at {args.resolution} px)")
    return path


if __name__ == "__main__":
    run_script(main, parse_args)
