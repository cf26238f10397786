"""Guidance interval: transformer work and wall time of guided sampling with guidance everywhere vs on half the range.

Outside a guidance interval the official sampler uses scale 1, the conditional velocity (dc_gen/c2icore/
diffusioncore/models/base.py `use_guidance_interval`); DCAE15Pipeline then runs the conditional batch only. With an
interval covering half of the flow-time range, the fixed-grid samplers evaluate 2B samples on half the steps and B on
the other half: 1.5 B N instead of 2 B N sample evaluations, 1.33x less transformer work. This script counts the
evaluated samples (a forward pre-hook on the transformer) and times whole pipeline calls in interleaved rounds.

    python benchmarks/bench_guidance_interval.py              # USiT hidden 512, 8 layers, f64c128-shaped latents
    python benchmarks/bench_guidance_interval.py --device cuda --hidden 2048 --num_layers 28 --heads 32 --batch_size 16
"""

from __future__ import annotations

import argparse
import statistics

import torch
from timing import interleaved, load_average, median_ratio

from dc_ae_hf import AutoencoderDC15, DCAE15Pipeline, USiTTransformer2DModel


def build_pipeline(args) -> DCAE15Pipeline:
    torch.manual_seed(0)
    transformer = USiTTransformer2DModel(
        sample_size=args.latent_size,
        in_channels=args.latent_channels,
        num_layers=args.num_layers,
        num_attention_heads=args.heads,
        attention_head_dim=args.hidden // args.heads,
        num_classes=1000,
    )
    # The smallest autoencoder with this latent: only the transformer is measured (output_type="latent").
    vae = AutoencoderDC15(
        latent_channels=args.latent_channels,
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_layers_per_block=(0, 1),
        decoder_layers_per_block=(0, 1),
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_qkv_multiscales=((), ()),
        decoder_qkv_multiscales=((), ()),
        encoder_out_shortcut=False,
        decoder_in_shortcut=False,
    )
    pipe = DCAE15Pipeline(transformer.eval(), vae.eval()).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--num_layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--latent_channels", type=int, default=128)
    p.add_argument("--latent_size", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="sampler steps")
    p.add_argument("--solver", default="euler", choices=["euler", "heun2", "scheduler"])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.hidden % args.heads:
        p.error(f"--hidden {args.hidden} must be divisible by --heads {args.heads}")

    start_load = load_average()  # before this script loads the cores
    pipe = build_pipeline(args)
    noise = torch.randn(args.batch_size, args.latent_channels, args.latent_size, args.latent_size)
    common = dict(
        class_labels=list(range(args.batch_size)),
        latents=noise,
        guidance_scale=1.5,
        num_inference_steps=args.steps,
        solver=None if args.solver == "scheduler" else args.solver,
        output_type="latent",
    )
    settings = {"everywhere": {}, "half interval": {"guidance_interval": (0.5, 1.0)}}
    evaluated = {}
    for name, extra in settings.items():
        sizes = []
        hook = pipe.transformer.register_forward_pre_hook(lambda module, inputs, s=sizes: s.append(inputs[0].shape[0]))
        pipe(**common, **extra)
        hook.remove()
        evaluated[name] = (len(sizes), sum(sizes))
    times = interleaved({name: lambda e=extra: pipe(**common, **e) for name, extra in settings.items()}, args.rounds)

    print(
        f"# USiT hidden {args.hidden}, {args.num_layers} layers, latents {args.latent_channels}x{args.latent_size}"
        f"x{args.latent_size}, batch {args.batch_size}, {args.solver} {args.steps} steps, guidance 1.5, "
        f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} interleaved "
        f"rounds; at start: {start_load}"
    )
    print("| guidance | transformer calls | samples evaluated | median s | work ratio | time ratio |")
    print("|---|---|---|---|---|---|")
    base_calls, base_samples = evaluated["everywhere"]
    for name in settings:
        calls, samples = evaluated[name]
        print(
            f"| {name} | {calls} | {samples} | {statistics.median(times[name]):.3f} "
            f"| {base_samples / samples:.2f}x | {median_ratio(times, 'everywhere', name):.2f}x |"
        )
    print(f"# done; {load_average()}")


if __name__ == "__main__":
    main()
