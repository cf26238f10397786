"""The paper's pictures of a structured latent space, for any DC-AE and any images.

Writes three PNGs to --output_dir:
- `latent_mean.png` (paper Fig. 2): each image next to the channel-wise mean of its latent;
- `latent_channels.png` (paper Fig. 9/10): every latent channel of the first image, in channel order;
- `prefix_reconstructions.png` (paper Fig. 3): reconstructions from growing channel prefixes.

    python examples/visualize_latents.py                                   # built-in toy AE on built-in shapes
    python examples/visualize_latents.py --vae path/or/hub-id --images cat.png dog.png --resolution 512
    python examples/visualize_latents.py --vae <pipeline folder or Hub id> --vae_subfolder vae --resolution 512
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dc_ae_hf.checks import check_int, exit_on_user_error, invalid

DEFAULT_VAE = Path(__file__).resolve().parents[1] / "dc_ae_hf" / "assets" / "toy-dcae15-shapes" / "vae"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", default=str(DEFAULT_VAE), help="AutoencoderDC15 folder or Hub id")
    parser.add_argument("--vae_subfolder", help="e.g. 'vae' when --vae is a pipeline folder or pipeline Hub id")
    parser.add_argument("--images", nargs="*", default=[], help="image files (default: built-in shapes)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--channels", type=int, nargs="*", default=None, help="prefixes c' for the Fig. 3 grid")
    parser.add_argument("--output_dir", default="outputs/visualize_latents")
    parser.add_argument("--cell_size", type=int, default=96, help="pixels per picture in the output")
    parser.add_argument("--device", help="torch device (None: cuda if available, else cpu)")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """The values that need no model (ValueError naming the flag); --resolution and --channels are checked against
    the autoencoder once it is loaded."""
    check_int("--resolution", args.resolution, minimum=1)
    check_int("--cell_size", args.cell_size, minimum=1)
    for c in args.channels or []:
        check_int("--channels", c, minimum=1)
    for image in args.images:
        if not Path(image).is_file():
            raise invalid("--images", image, "must be image files; this one does not exist")


if __name__ == "__main__":  # the flags and their values first: errors answer before the heavy imports
    exit_on_user_error(check_arguments, build_parser().parse_args())  # (main below does it again, in a millisecond)

import torch
from PIL import Image
from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

from dc_ae_hf import AutoencoderDC15
from dc_ae_hf.checks import check_device
from dc_ae_hf.data.images import load_image
from dc_ae_hf.data.shapes import MAX_RESOLUTION, MIN_RESOLUTION, render_shape_image
from dc_ae_hf.visualization import latent_channels_picture, latent_mean_picture, prefix_reconstruction_grid


def load_images(paths: list[str], resolution: int) -> torch.Tensor:
    """Images as (N, 3, R, R) in [-1, 1]: files (resized + center-cropped) or, without paths, 4 built-in shapes
    (rendered at up to the generator's largest size and resized, so any resolution works)."""
    if not paths:
        size = max(MIN_RESOLUTION, min(MAX_RESOLUTION, resolution - resolution % 8))  # sizes the generator draws
        rendered = [render_shape_image(i, seed=1234, resolution=size)[0] for i in (1, 3, 6, 8)]
        pictures = [p.resize((resolution, resolution), Image.BICUBIC) for p in rendered]
    else:
        pictures = [center_crop(resize(load_image(p), resolution), resolution) for p in paths]
    return torch.stack([pil_to_tensor(p).float() / 127.5 - 1 for p in pictures])


def main(argv: list[str] | None = None) -> None:
    """Run the script; a user error (bad argument, missing model folder or image) prints one line `error: ...` on
    stderr and exits with status 2 (`DC_AE_HF_TRACEBACK=1` keeps the traceback)."""
    exit_on_user_error(run, argv)


def run(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    check_arguments(args)
    device = check_device("--device", args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    vae = AutoencoderDC15.from_pretrained(args.vae, subfolder=args.vae_subfolder).eval().to(device)
    f = vae.spatial_compression_ratio
    if args.resolution % f:
        raise invalid(
            "--resolution", args.resolution, f"must be a multiple of the autoencoder's compression ratio {f}"
        )
    images = load_images(args.images, args.resolution)
    choices = list(vae.latent_channel_choices)
    channels = args.channels or sorted({choices[round(i * (len(choices) - 1) / 5)] for i in range(6)})
    for c in channels:  # the model's rule: 1..C, and the full latent only for a DC-AE 1.0 model
        vae.check_prefix(c, "--channels")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = args.cell_size
    with torch.no_grad():
        latent = vae.encode(images.to(device)).latent.cpu()  # (N, C, h, w)

    latent_mean_picture(images, latent, size).save(out / "latent_mean.png")
    latent_channels_picture(latent[0], size // 2).save(out / "latent_channels.png")
    grid = prefix_reconstruction_grid(vae, images, channels)
    grid.resize((grid.width * size // args.resolution, grid.height * size // args.resolution), Image.NEAREST).save(
        out / "prefix_reconstructions.png"
    )
    print(f"columns of prefix_reconstructions.png: original, then c' = {channels}")
    print(f"wrote {out / 'latent_mean.png'}, {out / 'latent_channels.png'}, {out / 'prefix_reconstructions.png'}")


if __name__ == "__main__":
    main()
