"""USiT throughput: f64c128-shaped vs f32c32-shaped latents, and SDPA vs attention written the obvious way.

Every number is measured in this process, in interleaved rounds of all four variants (`benchmarks/timing.py`), and
printed as a ratio against a peer measured alongside it (median of the per-round ratios):
- img/s for a forward pass and for a full training step (forward + backward + AdamW step);
- achieved GFLOP/s (FLOPs counted by `torch.utils.flop_counter.FlopCounterMode`) against the dense-matmul peak of
  this machine, measured first with a square matmul of the model's width;
- 8x8x128 tokens (DC-AE-1.5-f64c128 at 512 px, 64 tokens) vs 16x16x32 (DC-AE-f32c32 at 512 px, 256 tokens) at the
  same model size (the paper reports 4x training throughput for f64 on H100, Table 4);
- our `USiTTransformer2DModel` (PyTorch SDPA) vs the same weights with attention as explicit
  softmax(q k^T / sqrt(d)) v matmuls.

    python benchmarks/bench_usit.py --quick          # about a minute on a 2-core CPU
    python benchmarks/bench_usit.py --device cuda --hidden 1152 --num_layers 28 --batch_size 64 --dtype bf16
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics

import torch
import torch.nn.functional as F
from timing import gemm_gflops, interleaved, load_average, median_ratio
from torch.utils.flop_counter import FlopCounterMode

from dc_ae_hf import USiTTransformer2DModel
from dc_ae_hf.checks import DTYPES as DTYPES_BY_NAME
from dc_ae_hf.models.transformer_usit import USiTAttention

DTYPES = {name: DTYPES_BY_NAME[name] for name in ("fp32", "bf16")}  # the dtypes measured here


class ObviousAttention(USiTAttention):
    """The same attention, written without SDPA: materialised scores and an explicit softmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, N, N)
        out = scores.softmax(dim=-1) @ v  # (B, H, N, Dh)
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


def with_obvious_attention(model: USiTTransformer2DModel) -> USiTTransformer2DModel:
    obvious = copy.deepcopy(model)
    for module in obvious.modules():
        for name, child in module.named_children():
            if type(child) is USiTAttention:
                replacement = ObviousAttention(child.to_out.out_features, child.num_heads, child.head_dim)
                replacement.load_state_dict(child.state_dict())
                setattr(module, name, replacement.to(next(child.parameters())))
    return obvious


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def make_steps(model, shape, batch_size, dtype, device):
    """(forward, train_step, train_flops_fn) closures on one fixed batch."""
    channels, size = shape
    x = torch.randn(batch_size, channels, size, size, device=device, dtype=dtype)
    t = torch.rand(batch_size, device=device, dtype=dtype)
    y = torch.randint(0, model.config.num_classes, (batch_size,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.99, 0.99))

    def forward():
        with torch.no_grad():
            model(x, t, y)

    def train_step():
        loss = F.mse_loss(model(x, t, y).sample.float(), x.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def train_flops():
        model(x, t, y).sample.float().pow(2).mean().backward()
        optimizer.zero_grad(set_to_none=True)

    return forward, train_step, train_flops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="batch 8, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.repeats = 8, 2
    if args.hidden % args.heads:
        parser.error(f"--hidden {args.hidden} must be divisible by --heads {args.heads}")
    dtype = DTYPES[args.dtype]

    torch.manual_seed(0)
    peak = gemm_gflops(2048, dtype, args.device)
    print(
        f"# USiT hidden {args.hidden}, {args.num_layers} layers, {args.heads} heads, batch {args.batch_size}, "
        f"{args.dtype} on {args.device} (torch {torch.__version__}, {torch.get_num_threads()} threads), "
        f"{args.repeats} interleaved rounds; GEMM 2048^3 {peak:.0f} GFLOP/s; {load_average()}"
    )
    print(
        "| latent | tokens | attention | fwd img/s | train img/s | fwd GFLOP/s (% of GEMM) | train GFLOP/s (% of GEMM) |"
    )
    print("|---|---|---|---|---|---|---|")
    latents = {"f64c128 8x8x128": (128, 8), "f32c32 16x16x32": (32, 16)}
    variants = {}
    for name, (channels, size) in latents.items():
        model = USiTTransformer2DModel(
            sample_size=size,
            in_channels=channels,
            num_layers=args.num_layers,
            num_attention_heads=args.heads,
            attention_head_dim=args.hidden // args.heads,
            num_classes=1000,
        ).to(args.device, dtype)
        for attention, variant in (("SDPA (ours)", model), ("obvious", with_obvious_attention(model))):
            variants[name, attention] = (
                variant,
                *make_steps(variant, (channels, size), args.batch_size, dtype, args.device),
            )
    for variant, *_ in variants.values():
        variant.eval()
    fwd = interleaved({key: steps[1] for key, steps in variants.items()}, args.repeats, args.device)
    for variant, *_ in variants.values():
        variant.train()
    train = interleaved({key: steps[2] for key, steps in variants.items()}, args.repeats, args.device)
    for key, (variant, forward, _, train_flops) in variants.items():
        variant.eval()
        fwd_gflops = count_flops(forward) / statistics.median(fwd[key]) / 1e9
        variant.train()
        train_gflops = count_flops(train_flops) / statistics.median(train[key]) / 1e9
        name, attention = key
        size = latents[name][1]
        print(
            f"| {name} | {size * size} | {attention} | {args.batch_size / statistics.median(fwd[key]):.1f} "
            f"| {args.batch_size / statistics.median(train[key]):.1f} "
            f"| {fwd_gflops:.0f} ({100 * fwd_gflops / peak:.0f}%) "
            f"| {train_gflops:.0f} ({100 * train_gflops / peak:.0f}%) |",
            flush=True,
        )
    f64, f32 = ("f64c128 8x8x128", "SDPA (ours)"), ("f32c32 16x16x32", "SDPA (ours)")
    print(
        f"\nf64c128 / f32c32 throughput (median per-round ratio): training {median_ratio(train, f32, f64):.2f}x, "
        f"forward {median_ratio(fwd, f32, f64):.2f}x (paper, USiT-2B on H100: 450 / 112 = 4.0x)"
    )
    for name in latents:
        ours, obvious = (name, "SDPA (ours)"), (name, "obvious")
        print(
            f"SDPA / obvious attention, {name}: training {median_ratio(train, obvious, ours):.2f}x, "
            f"forward {median_ratio(fwd, obvious, ours):.2f}x"
        )
    print(f"# done; {load_average()}")


if __name__ == "__main__":
    main()
