"""USiT throughput: f64c128-shaped vs f32c32-shaped latents, and SDPA vs attention written the obvious way.

Every number is measured in this process and printed as a ratio against a peer measured alongside it:
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
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dc_ae_hf import USiTTransformer2DModel
from dc_ae_hf.models.transformer_usit import USiTAttention

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


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


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_gflops(width: int, dtype: torch.dtype, device: str, repeats: int) -> float:
    n = max(1024, width * 4)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, repeats, device)
    return 2 * n**3 / seconds / 1e9


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measure(model, shape, batch_size, dtype, device, repeats) -> dict[str, float]:
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

    model.eval()
    fwd_s = timed(forward, repeats, device)
    fwd_flops = count_flops(forward)
    model.train()
    train_s = timed(train_step, repeats, device)
    train_flops = count_flops(lambda: model(x, t, y).sample.float().pow(2).mean().backward())
    optimizer.zero_grad(set_to_none=True)
    return {
        "fwd_img_s": batch_size / fwd_s,
        "train_img_s": batch_size / train_s,
        "fwd_gflops": fwd_flops / fwd_s / 1e9,
        "train_gflops": train_flops / train_s / 1e9,
    }


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
    peak = matmul_peak_gflops(args.hidden, dtype, args.device, args.repeats)
    print(f"# USiT hidden {args.hidden}, {args.num_layers} layers, {args.heads} heads, batch {args.batch_size}, "
          f"{args.dtype} on {args.device} (torch {torch.__version__}, {torch.get_num_threads()} threads); "
          f"dense matmul peak {peak:.0f} GFLOP/s")  # fmt: skip
    print("| latent | tokens | attention | fwd img/s | train img/s | fwd GFLOP/s (% peak) | train GFLOP/s (% peak) |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for name, (channels, size) in {"f64c128 8x8x128": (128, 8), "f32c32 16x16x32": (32, 16)}.items():
        model = USiTTransformer2DModel(
            sample_size=size,
            in_channels=channels,
            num_layers=args.num_layers,
            num_attention_heads=args.heads,
            attention_head_dim=args.hidden // args.heads,
            num_classes=1000,
        ).to(args.device, dtype)
        for attention, variant in (("SDPA (ours)", model), ("obvious", with_obvious_attention(model))):
            r = measure(variant, (channels, size), args.batch_size, dtype, args.device, args.repeats)
            results[name, attention] = r
            print(f"| {name} | {size * size} | {attention} | {r['fwd_img_s']:.1f} | {r['train_img_s']:.1f} "
                  f"| {r['fwd_gflops']:.0f} ({100 * r['fwd_gflops'] / peak:.0f}%) "
                  f"| {r['train_gflops']:.0f} ({100 * r['train_gflops'] / peak:.0f}%) |", flush=True)  # fmt: skip
    f64, f32 = results["f64c128 8x8x128", "SDPA (ours)"], results["f32c32 16x16x32", "SDPA (ours)"]
    print(f"\nf64c128 / f32c32 training throughput: {f64['train_img_s'] / f32['train_img_s']:.2f}x "
          f"(forward {f64['fwd_img_s'] / f32['fwd_img_s']:.2f}x; paper, USiT-2B on H100: 450 / 112 = 4.0x)")  # fmt: skip
    for name in ("f64c128 8x8x128", "f32c32 16x16x32"):
        ours, obvious = results[name, "SDPA (ours)"], results[name, "obvious"]
        print(f"SDPA / obvious attention, {name}: training {ours['train_img_s'] / obvious['train_img_s']:.2f}x, "
              f"forward {ours['fwd_img_s'] / obvious['fwd_img_s']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
