"""Sample a PNG grid of class-conditional images with a DCAE15Pipeline (local folder or Hub repo id).

    python examples/sample.py --model path/to/pipeline --class_labels "golden retriever" 207 "white wolf" \
        --guidance_scale 1.5 --solver dopri5 --output grid.png

With `--num_images_per_class N` (N > 1) the grid has one row per class label, N samples in each.
"""

import argparse
import math
from pathlib import Path

from dc_ae_hf.checks import check_image_output, check_int, check_number, exit_on_user_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pipeline folder (save_pretrained) or Hub repo id")
    parser.add_argument("--class_labels", nargs="+", required=True, help="class ids or names (quote multi-word names)")
    parser.add_argument("--guidance_scale", type=float, default=1.5)
    parser.add_argument(
        "--num_inference_steps",
        type=int,
        default=None,
        help="steps (ignored by dopri5); default: 24 with the default UniPC scheduler, else 50",
    )
    parser.add_argument("--solver", choices=["scheduler", "euler", "heun2", "dopri5"], default="scheduler")
    parser.add_argument("--latent_channels", type=int, default=None, help="sample in the first c' latent channels")
    parser.add_argument(
        "--num_images_per_class",
        type=int,
        default=1,
        help="samples per class label; above 1 the grid has one row per label (default 1: a near-square grid)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="samples.png")
    parser.add_argument("--upscale", type=int, default=1, help="enlarge each image this many times (nearest)")
    parser.add_argument("--device", help="torch device (None: cuda if available, else cpu)")
    return parser.parse_args(argv)


def check_arguments(args: argparse.Namespace) -> None:
    """The values that need no model (ValueError naming the flag); the pipeline checks the rest against itself."""
    check_image_output("--output", args.output)
    check_int("--upscale", args.upscale, minimum=1)
    check_int("--num_images_per_class", args.num_images_per_class, minimum=1)
    check_int("--num_inference_steps", args.num_inference_steps, minimum=1, optional=True)
    check_int("--latent_channels", args.latent_channels, minimum=1, optional=True)
    check_number("--guidance_scale", args.guidance_scale)


if __name__ == "__main__":  # the flags and their values first: errors answer before the heavy imports
    exit_on_user_error(check_arguments, parse_args())  # (main below does it again, in a millisecond)

import torch
from diffusers.utils import make_image_grid
from PIL import Image

from dc_ae_hf.checks import check_device
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline


def make_grid(images: list[Image.Image]) -> Image.Image:
    """A near-square grid of any number of images (diffusers' `make_image_grid` needs rows x cols == len(images))."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, image in enumerate(images):
        grid.paste(image, ((i % cols) * w, (i // cols) * h))
    return grid


def main(argv: list[str] | None = None) -> None:
    """Run the script; a user error (bad argument, unknown class name, missing model folder) prints one line
    `error: ...` on stderr and exits with status 2 (`DC_AE_HF_TRACEBACK=1` keeps the traceback)."""
    exit_on_user_error(run, parse_args(argv))


def run(args: argparse.Namespace) -> None:
    check_arguments(args)
    device = check_device("--device", args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe = DCAE15Pipeline.from_pretrained(args.model).to(device)
    labels = [int(label) if label.isdigit() else label for label in args.class_labels]
    labels = [label for label in labels for _ in range(args.num_images_per_class)]  # class-major: a row per class
    images = pipe(
        labels,
        guidance_scale=args.guidance_scale,
        num_inference_steps=args.num_inference_steps,
        solver=None if args.solver == "scheduler" else args.solver,
        latent_channels=args.latent_channels,
        generator=torch.Generator("cpu").manual_seed(args.seed),
    ).images
    if args.upscale > 1:  # e.g. the 32 px toy model, for viewing
        images = [
            image.resize((image.width * args.upscale, image.height * args.upscale), Image.NEAREST) for image in images
        ]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    if args.num_images_per_class > 1:
        grid = make_image_grid(images, rows=len(args.class_labels), cols=args.num_images_per_class)
    else:
        grid = make_grid(images)
    grid.save(args.output)
    print(f"wrote {len(images)} samples to {args.output}")


if __name__ == "__main__":
    main()
