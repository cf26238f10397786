"""Augmented diffusion training at the cost of plain training: the time of one training step (forward + backward) of
the flow-matching loss with a prefix per sample in one pass, against a plain full-latent step and the official
schedule (one pass per drawn prefix, here k = 2 with the full latent).

    python benchmarks/bench_per_sample.py                      # USiT hidden 512, 8 layers, f64c128-shaped latents
    python benchmarks/bench_per_sample.py --device cuda --hidden 2048 --num_layers 28 --heads 32 --batch_size 64

The per-sample step masks the input channels >= c'_i and the loss beyond them; the network does exactly the work of
a plain step, so the ratio per-sample / plain should stay near 1 (the mask and the per-sample reduction are cheap),
while the official k = 2 costs about the passes it runs (a full pass plus one on c' channels, whose cost depends on
c' only through the patch embedding and the output projection).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from timing import interleaved, load_average, median_ratio

from dc_ae_hf import USiTTransformer2DModel
from dc_ae_hf.training.flow_matching import flow_matching_loss
from dc_ae_hf.training.randomness import LatentChannelSampler


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--num_layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--latent_channels", type=int, default=128)
    p.add_argument("--latent_size", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.hidden % args.heads:
        p.error(f"--hidden {args.hidden} must be divisible by --heads {args.heads}")

    start_load = load_average()  # before this script loads the cores
    torch.manual_seed(0)
    c = args.latent_channels
    model = USiTTransformer2DModel(
        sample_size=args.latent_size,
        in_channels=c,
        num_layers=args.num_layers,
        num_attention_heads=args.heads,
        attention_head_dim=args.hidden // args.heads,
        num_classes=1000,
    ).to(args.device)
    model.train()
    latents = torch.randn(args.batch_size, c, args.latent_size, args.latent_size, device=args.device)
    labels = torch.randint(1000, (args.batch_size,), device=args.device)
    choices = list(range(c // 8, c + 1, c // 8))  # 8 prefixes, as a structured f64c128 autoencoder's 16..128
    sampler = LatentChannelSampler(choices, num_samples=2, always_include_full=True)
    per_sample = LatentChannelSampler(choices, always_include_full=True)
    steps = iter(range(1, 10**9))

    def step(channels) -> None:
        model.zero_grad(set_to_none=True)
        loss, _ = flow_matching_loss(model, latents, labels, channels)
        loss.backward()

    candidates = {
        "plain (full latent, 1 pass)": lambda: step([c]),
        "per_sample (1 pass, half full)": lambda: step(per_sample.per_sample(next(steps), args.batch_size)),
        "per_pass k=2 + full (official)": lambda: step(sampler(next(steps))),
    }
    times = interleaved(candidates, args.rounds, device=args.device)

    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"# USiT hidden {args.hidden}, {args.num_layers} layers ({parameters:.1f}M), latents {c}x{args.latent_size}x"
        f"{args.latent_size}, batch {args.batch_size}, prefixes {choices}, one forward + backward per call, "
        f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} interleaved "
        f"rounds; at start: {start_load}"
    )
    print("| training step | median s | time / plain |")
    print("|---|---|---|")
    base = "plain (full latent, 1 pass)"
    for name in candidates:
        print(f"| {name} | {statistics.median(times[name]):.3f} | {median_ratio(times, name, base):.2f}x |")
    print(f"# done; {load_average()}")


if __name__ == "__main__":
    main()
