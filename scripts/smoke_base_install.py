"""Smoke test of the base install (`pip install dc-ae-hf`, no extras): import, build, save, load and sample.

Run by `.ci/run` (`make smoke-base`) in a virtual environment that has only the install_requires and torch. Prints
one line per check and exits non-zero on the first failure. Run it from anywhere: it imports the installed package.
"""

from __future__ import annotations

import importlib
import importlib.util
import tempfile
from importlib import resources
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler

import dc_ae_hf
from dc_ae_hf import AutoencoderDC15, DCAE15Pipeline, USiTTransformer2DModel

# Modules of the package that need the `train` extra, and a package of that extra they import.
OPTIONAL_MODULES = {
    "dc_ae_hf.data.images": "datasets",
    "dc_ae_hf.metrics.inception": "torch_fidelity",
    "dc_ae_hf.metrics.image": "torchmetrics",
    "dc_ae_hf.training.diffusion": "datasets",
    "dc_ae_hf.testing": "torch_fidelity",
}


def check(name: str, condition: bool, detail: str = "") -> None:
    if not condition:
        raise SystemExit(f"FAIL {name} {detail}")
    print(f"ok   {name} {detail}".rstrip())


def tiny_pipeline() -> DCAE15Pipeline:
    torch.manual_seed(0)
    vae = AutoencoderDC15(
        latent_channels=8,
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_block_out_channels=(8, 16),
        decoder_block_out_channels=(8, 16),
        encoder_layers_per_block=(0, 1),
        decoder_layers_per_block=(0, 1),
        encoder_qkv_multiscales=((), ()),
        decoder_qkv_multiscales=((), ()),
        encoder_out_shortcut=False,
        decoder_in_shortcut=False,
        decoder_conv_act_fn="silu",
        scaling_factor=0.5,
        latent_channel_choices=(4, 8),
    )
    transformer = USiTTransformer2DModel(
        sample_size=4, in_channels=8, num_layers=2, num_attention_heads=2, attention_head_dim=8, num_classes=3
    )
    return DCAE15Pipeline(transformer.eval(), vae.eval(), id2label={0: "zero", 1: "one", 2: "two"})


def main() -> None:
    check("import dc_ae_hf", True, f"{dc_ae_hf.__version__} from {Path(dc_ae_hf.__file__).parent}")
    for module, package in OPTIONAL_MODULES.items():
        if importlib.util.find_spec(package) is not None:
            print(f"note {module}: {package} is installed here, so its missing-extra error is not checked")
            continue
        try:
            importlib.import_module(module)
        except ImportError as error:
            check(f"import {module} names the extra", "dc-ae-hf[train]" in str(error), f"({error})")
        else:
            raise SystemExit(f"FAIL import {module} succeeded without {package}")
    if importlib.util.find_spec("datasets") is None:  # the shapes render without it; building a dataset needs it
        from dc_ae_hf.data import make_shapes_dataset, render_shape_image

        check("render_shape_image without datasets", render_shape_image(0)[0].size == (32, 32))
        try:
            make_shapes_dataset(2)
        except ImportError as error:
            check("make_shapes_dataset names the extra", "dc-ae-hf[train]" in str(error), f"({error})")
        else:
            raise SystemExit("FAIL make_shapes_dataset succeeded without datasets")

    with tempfile.TemporaryDirectory() as folder:
        tiny_pipeline().save_pretrained(folder)
        pipe = DCAE15Pipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    check("save_pretrained -> from_pretrained", pipe.scheduler is None and isinstance(pipe.vae, AutoencoderDC15))
    noise = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    common = dict(class_labels=["one", 2], latents=noise, guidance_scale=2.0, output_type="pt")
    results = {}
    for solver in (None, "euler", "heun2", "dopri5"):
        images = pipe(solver=solver, num_inference_steps=4, **common).images
        ok = images.shape == (2, 3, 8, 8) and bool(torch.isfinite(images).all())
        check(f"sample solver={solver or 'scheduler (default)'}", ok, f"{tuple(images.shape)}")
        results[solver] = images
    # diffusers' flow-match Euler on the official grid is the official euler (the default sampler is UniPC)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler()
    euler = pipe(num_inference_steps=4, time_grid="uniform", **common).images
    pipe.scheduler = None
    diff = (euler - results["euler"]).abs().max().item()
    check(
        "FlowMatchEulerDiscreteScheduler on the official grid == official euler", diff < 1e-5, f"max diff {diff:.1e}"
    )
    prefix = pipe([0], latent_channels=4, num_inference_steps=2, output_type="pt").images
    check("sample in a channel prefix", prefix.shape == (1, 3, 8, 8))

    # the code of a self-contained folder is generated from the installed modules; plain diffusers loads it
    with tempfile.TemporaryDirectory() as folder:
        tiny_pipeline().save_pretrained(folder, self_contained=True)
        remote = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
        remote.set_progress_bar_config(disable=True)
        images = remote(solver="euler", num_inference_steps=4, **common).images
    diff = (images - results["euler"]).abs().max().item()
    ok = type(remote).__module__.startswith("diffusers_modules") and diff < 1e-5
    check("self-contained folder: plain diffusers samples the same", ok, f"max diff {diff:.1e}")

    toy = resources.files("dc_ae_hf") / "assets" / "toy-dcae15-shapes"
    with resources.as_file(toy) as toy_path:
        bundled = DCAE15Pipeline.from_pretrained(toy_path)
    bundled.set_progress_bar_config(disable=True)
    grid = bundled(["circle", "square"], num_inference_steps=4, solver="euler", output_type="pil").images
    check("bundled toy pipeline samples", len(grid) == 2 and grid[0].size[0] > 0, f"{grid[0].size}")

    from dc_ae_hf.convert.cli import build_parser

    check(
        "converter CLI parses",
        build_parser().parse_args(["autoencoder", "--checkpoint", "x", "--output", "y"]) is not None,
    )
    print("base install: all checks passed")


if __name__ == "__main__":
    main()
