"""USiT training throughput (img/s) with the real training step of `training/train_usit.py`.

Two comparisons, each a ratio of two measurements taken here in interleaved steps (A, B, then B, A, ...; see
`benchmarks/timing.py`), reported as the median of the per-step ratios:

1. data: latents read from a latent cache (`training/cache_latents.py` + `LatentCacheDataset`) vs images decoded,
   ADM center-cropped and encoded on the fly by a frozen autoencoder (a DC-AE-1.5-f32c128 architecture at reduced
   width, random weights);
2. latent shape at equal model size: f64c128-shaped latents (8x8x128, 64 tokens) vs f32c32-shaped (16x16x32, 256
   tokens), synthetic latents in memory (the paper, Table 4: USiT-2B on H100, 450 vs 112 img/s = 4x).

A step is: next batch from the DataLoader (+ encoding), augmented flow-matching loss (`flow_matching_loss`, one pass
per drawn c'), backward, AdamW, EMA update. Throughput = batch size / median step time after warm-up steps.

    python benchmarks/bench_train_usit.py --quick        # under a minute on a 2-core CPU
    python benchmarks/bench_train_usit.py --device cuda --hidden 1152 --num_layers 28 --heads 16 --batch_size 64 \
        --resolution 512 --ae_width_divisor 1
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch
from accelerate.state import AcceleratorState, GradientState
from timing import interleaved, load_average, median_ratio

from dc_ae_hf.data.images import LabeledImageDataset, image_transform, load_labeled_image_dataset
from dc_ae_hf.data.latent_cache import LatentCacheDataset
from dc_ae_hf.data.shapes import export_imagefolder
from dc_ae_hf.latents import encode_to_diffusion_space
from dc_ae_hf.models.autoencoder_dc15 import AUTOENCODER_PRESETS, AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.training.ema import ExponentialWarmupEMAModel
from dc_ae_hf.training.flow_matching import flow_matching_loss
from dc_ae_hf.training.optimization import compile_blocks
from dc_ae_hf.training.randomness import LatentChannelSampler

REPO_ROOT = Path(__file__).resolve().parents[1]


def build_usit(channels: int, size: int, args) -> USiTTransformer2DModel:
    torch.manual_seed(0)
    model = USiTTransformer2DModel(
        sample_size=size,
        in_channels=channels,
        num_layers=args.num_layers,
        num_attention_heads=args.heads,
        attention_head_dim=args.hidden // args.heads,
        num_classes=10,
    )
    if args.compile:  # as train_usit.py --compile
        compile_blocks(model, args.compile_backend)
    return model.to(args.device).train()


def train_step(model, batches, encode, args, choices):
    """One training step of `model` on the next batch of `batches` (an iterator), as a closure."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.99, 0.99))
    ema = ExponentialWarmupEMAModel(model.parameters(), decay=0.9999)
    sampler = LatentChannelSampler(choices, num_samples=args.num_channel_samples)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.bf16)

    def step():
        latents, labels = encode(next(batches))  # (B, C, h, w), (B,)
        with autocast:
            loss, _ = flow_matching_loss(model, latents, labels, sampler())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(model.parameters())

    return step


def compare(steps: dict, args) -> dict:
    """img/s of each training step (median over interleaved steps) and the median per-step ratio first / second."""
    times = interleaved(steps, args.steps, args.device, warmup=args.warmup)
    first, second = list(steps)
    result = {name: args.batch_size / statistics.median(times[name]) for name in steps}
    result["ratio"] = median_ratio(times, second, first)
    return result


def cycle(loader):
    while True:
        yield from loader


def data_comparison(args, workdir: Path) -> dict[str, float]:
    """Cached latents vs encoding on the fly, same images, same USiT."""
    num_images = args.batch_size * (args.warmup + args.steps)
    export_imagefolder(workdir / "images", num_images, seed=0, resolution=args.resolution)
    config = dict(AUTOENCODER_PRESETS["dc-ae-1.5-f32c128"])
    for key in ("encoder_block_out_channels", "decoder_block_out_channels"):
        config[key] = tuple(w // args.ae_width_divisor for w in config[key])
    torch.manual_seed(0)
    AutoencoderDC15(**config).save_pretrained(workdir / "vae")
    vae = AutoencoderDC15.from_pretrained(workdir / "vae").to(args.device).eval().requires_grad_(False)

    spec = importlib.util.spec_from_file_location("cache_latents", REPO_ROOT / "training" / "cache_latents.py")
    cache_latents = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache_latents)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    start = time.perf_counter()
    cache_latents.main(
        cache_latents.parse_args(
            [
                "--vae",
                str(workdir / "vae"),
                "--train_data_dir",
                str(workdir / "images"),
                "--resolution",
                str(args.resolution),
                "--output_dir",
                str(workdir / "cache"),
                "--batch_size",
                str(args.batch_size),
                "--cache_dir",
                str(workdir / "hf_cache"),
            ]
        )
    )
    cache_seconds = time.perf_counter() - start

    cache = LatentCacheDataset(workdir / "cache")
    c, h, _ = cache.latent_shape
    choices = list(vae.latent_channel_choices)
    loader = torch.utils.data.DataLoader(cache, batch_size=args.batch_size, shuffle=True, drop_last=True)
    cached = train_step(
        build_usit(c, h, args),
        cycle(loader),
        lambda b: (b["latents"].to(args.device), b["labels"].to(args.device)),
        args,
        choices,
    )

    dataset, image_column, _, _ = load_labeled_image_dataset(
        train_data_dir=workdir / "images", cache_dir=workdir / "hf_cache"
    )
    images = LabeledImageDataset(dataset, image_transform(args.resolution), image_column)
    loader = torch.utils.data.DataLoader(images, batch_size=args.batch_size, shuffle=True, drop_last=True)

    def encode(batch):
        with torch.no_grad():
            latents = encode_to_diffusion_space(vae, batch["pixel_values"].to(args.device))
        return latents, batch["labels"].to(args.device)

    on_the_fly = train_step(build_usit(c, h, args), cycle(loader), encode, args, choices)
    result = compare({"cached": cached, "on_the_fly": on_the_fly}, args)
    return {**result, "latent": f"{h}x{h}x{c}", "cache_seconds": cache_seconds, "num_images": num_images}


def shape_comparison(args) -> dict[str, float]:
    """f64c128-shaped vs f32c32-shaped latents at equal model size (synthetic latents in memory)."""
    steps, params = {}, {}
    for name, (channels, size) in {"f64c128": (128, 8), "f32c32": (32, 16)}.items():
        generator = torch.Generator().manual_seed(0)
        latents = torch.randn(args.batch_size, channels, size, size, generator=generator).to(args.device)
        labels = torch.randint(0, 10, (args.batch_size,), generator=generator).to(args.device)
        batches = iter(lambda batch={"latents": latents, "labels": labels}: batch, None)  # the same batch forever
        choices = list(range(channels // 8, channels + 1, channels // 8))  # 8 structured prefixes
        model = build_usit(channels, size, args)
        steps[name] = train_step(model, batches, lambda b: (b["latents"], b["labels"]), args, choices)
        params[name + "_params"] = sum(p.numel() for p in model.parameters())
    return {**compare(steps, args), **params}


def fsdp_comparison(args) -> dict[str, float]:
    """The trainers' FSDP2 path (`train_usit.py --fsdp`: `shard_model`, sharded AdamW and EMA) on one process vs the
    plain model, f64c128-shaped latents. One process shards over a group of one: this times FSDP's own overhead
    (DTensor parameters, the units' gather and reduce hooks, bf16 parameter casts), not communication."""
    import socket

    import torch.distributed as dist

    from dc_ae_hf.training.sharding import shard_model

    if not dist.is_initialized():
        with socket.socket() as probe:  # a free local port for the group of one
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(args.batch_size, 128, 8, 8, generator=generator).to(args.device)
    labels = torch.randint(0, 10, (args.batch_size,), generator=generator).to(args.device)
    choices = list(range(16, 129, 16))
    steps = {}
    for name in ("fsdp", "plain"):
        model = build_usit(128, 8, args)
        if name == "fsdp":
            shard_model(model, torch.device(args.device), "bf16" if args.bf16 else None)
        batches = iter(lambda batch={"latents": latents, "labels": labels}: batch, None)
        steps[name] = train_step(model, batches, lambda b: (b["latents"], b["labels"]), args, choices)
    result = compare(steps, args)
    dist.destroy_process_group()
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--num_layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_channel_samples", type=int, default=1, help="c' passes per step")
    p.add_argument("--resolution", type=int, default=256, help="images of the cached vs on-the-fly comparison")
    p.add_argument("--ae_width_divisor", type=int, default=4, help="autoencoder widths / this (1: full size)")
    p.add_argument("--steps", type=int, default=6, help="timed steps of each side (interleaved)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (as --mixed_precision bf16)")
    p.add_argument("--compile", action="store_true", help="torch.compile every block, as train_usit.py --compile")
    p.add_argument("--compile_backend", default="inductor")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num_threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="batch 8, 128 px, autoencoder width / 8, 3 timed steps")
    p.add_argument("--fsdp", action="store_true", help="only: FSDP2 on one process vs the plain model (f64c128)")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.resolution, args.ae_width_divisor, args.steps, args.warmup = 8, 128, 8, 3, 1
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)  # entry-script global setting
    if args.hidden % args.heads:
        p.error(f"--hidden {args.hidden} must be divisible by --heads {args.heads}")

    if args.fsdp:
        fsdp = fsdp_comparison(args)
        print(
            f"\n# USiT hidden {args.hidden}, {args.num_layers} layers, f64c128 8x8x128, batch {args.batch_size}, "
            f"{'bf16' if args.bf16 else 'fp32'} on {args.device} (torch {torch.__version__}); median of {args.steps} "
            f"interleaved steps; {load_average()}\n"
        )
        print("| setting | train img/s | ratio |\n|---|---|---|")
        print(f"| FSDP2 (fully_shard per block, one process) | {fsdp['fsdp']:.1f} | {fsdp['ratio']:.2f}x |")
        print(f"| plain model | {fsdp['plain']:.1f} | 1.00x |")
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = data_comparison(args, Path(tmp))
    shapes = shape_comparison(args)
    print(
        f"\n# USiT hidden {args.hidden}, {args.num_layers} layers, {args.heads} heads; batch {args.batch_size}; "
        f"{args.num_channel_samples} c' pass(es) per step; {'bf16' if args.bf16 else 'fp32'} on {args.device}"
        f"{f', blocks compiled ({args.compile_backend})' if args.compile else ''} "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads); median of {args.steps} interleaved "
        f"steps; {load_average()}\n"
    )
    print("| comparison | setting | train img/s | ratio |")
    print("|---|---|---|---|")
    ae = f"DC-AE-1.5-f32c128 widths / {args.ae_width_divisor}, {args.resolution} px -> {data['latent']}"
    print(f"| data | cached latents ({data['latent']}) | {data['cached']:.1f} | {data['ratio']:.2f}x |")
    print(f"| data | on the fly (PNG decode + center crop + encode, {ae}) | {data['on_the_fly']:.1f} | 1.00x |")
    print(
        f"| latent shape | f64c128-shaped 8x8x128 (64 tokens, {shapes['f64c128_params'] / 1e6:.2f}M params) | "
        f"{shapes['f64c128']:.1f} | {shapes['ratio']:.2f}x |"
    )
    print(
        f"| latent shape | f32c32-shaped 16x16x32 (256 tokens, {shapes['f32c32_params'] / 1e6:.2f}M params) | "
        f"{shapes['f32c32']:.1f} | 1.00x |"
    )
    print(
        f"\nCaching {data['num_images']} images took {data['cache_seconds']:.1f} s (once, before training). "
        "Paper (Table 4, USiT-2B, H100): f64c128 450 img/s vs f32c32 112 img/s = 4.0x."
    )


if __name__ == "__main__":
    main()
