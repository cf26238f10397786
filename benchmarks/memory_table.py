"""Training memory per GPU on paper, computed from the real models on the meta device (no weights, no compute).

    python benchmarks/memory_table.py            # USiT-2B / USiT-3B on f64c128 latents, the f64c128 autoencoder
    python benchmarks/memory_table.py --ema_decays 2 --gpus 8 16 64

For each model: the parameter count P of the real `from_config` model, and per GPU

- model states: fp32 parameters (4 P bytes), fp32 gradients (4 P; accelerate's bf16 autocast keeps fp32 masters),
  AdamW's two moments (8 P) and one fp32 EMA copy per decay (4 P each). DDP replicates all of them; FSDP (full
  shard) divides them by the number of GPUs and adds the largest FSDP unit (one block, `_no_split_modules`)
  gathered in bf16, twice (the unit in use and the prefetched next one);
- activations of one per-GPU batch: the bytes of every tensor autograd saves for backward, counted with
  `torch.autograd.graph.saved_tensors_hooks` during a forward on meta tensors, for the model in fp32 (what a
  fp32 run saves) and in bf16 (about what bf16 autocast saves: its matmul inputs are bf16, its norms and softmax
  fp32, so the true value lies between the two columns); with activation checkpointing per block: what stays
  saved outside the blocks plus the largest block's own activations, recomputed one block at a time in backward.

Not counted: the CUDA context and allocator fragmentation (typically 1-3 GiB per GPU), temporary buffers of
attention kernels, DDP's gradient buckets (25 MiB), the frozen autoencoder of on-the-fly encoding, LPIPS.
"""

from __future__ import annotations

import argparse
import functools

import torch
from diffusers.utils import logging as diffusers_logging
from torch import nn

from dc_ae_hf import AUTOENCODER_PRESETS, USIT_PRESETS, AutoencoderDC15, USiTTransformer2DModel
from dc_ae_hf.training.sharding import block_modules

GIB = 1024**3


def saved_activation_bytes(model: nn.Module, run) -> int:
    """Bytes of the tensors autograd saves for backward while `run(model)` executes (meta tensors): each saved
    tensor's base storage counted once, the parameters and views of them not at all (a linear layer saves its
    weight, which costs no extra memory)."""
    total = [0]
    parameters = {id(p) for p in model.parameters()}
    seen = {}  # a tensor saved by several operations occupies its memory once

    def pack(tensor):
        base = tensor._base if tensor._base is not None else tensor
        if id(tensor) not in parameters and id(base) not in parameters and id(base) not in seen:
            seen[id(base)] = base  # kept alive so that its id is not reused during the pass
            total[0] += base.numel() * base.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run(model)
    return total[0]


def largest_block(model: nn.Module) -> nn.Module:
    """The largest FSDP unit of `--fsdp`: a block of `dc_ae_hf.training.sharding.block_modules`."""
    blocks = [module for _, module in block_modules(model)]
    return max(blocks, key=lambda m: sum(p.numel() for p in m.parameters()))


def block_inputs(model: nn.Module, block: nn.Module, forward) -> tuple[tuple, dict]:
    """The positional and keyword inputs `block` receives during `forward(model)`."""
    captured = []
    handle = block.register_forward_pre_hook(lambda module, a, k: captured.append((a, k)), with_kwargs=True)
    try:
        forward(model)
    finally:
        handle.remove()
    return captured[0]


def measure(name: str, build, run, batch: str) -> dict:
    """Parameters, largest block and saved activations (fp32 / bf16, without / with checkpointing) of one model."""
    with torch.device("meta"):
        model = build().train()
    parameters = sum(p.numel() for p in model.parameters())
    block = largest_block(model)
    row = {"name": name, "batch": batch, "parameters": parameters}
    row["block_parameters"] = sum(p.numel() for p in block.parameters())
    units = [m for m in model.modules() if type(m).__name__ in set(model._no_split_modules)]
    for key, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model.to(dtype)
        forward = functools.partial(run, dtype=dtype)
        row[f"activations_{key}"] = saved_activation_bytes(model, forward)
        per_unit = []  # each unit's own saved activations, measured alone on its real inputs
        for unit in units:
            args, kwargs = block_inputs(model, unit, forward)
            per_unit.append(saved_activation_bytes(unit, functools.partial(_call, args=args, kwargs=kwargs)))
        model.enable_gradient_checkpointing()
        outside = saved_activation_bytes(model, forward)
        model.disable_gradient_checkpointing()
        row[f"activations_{key}_checkpointed"] = outside + max(per_unit)
    return row


def _call(module: nn.Module, args: tuple, kwargs: dict):
    return module(*args, **kwargs)


def model_states(parameters: int, block_parameters: int, ema_decays: int, gpus: int | None) -> float:
    """Bytes per GPU of parameters, gradients, AdamW moments and EMAs: DDP (gpus None) or FSDP over `gpus`."""
    per_parameter = 4 + 4 + 8 + 4 * ema_decays
    if gpus is None:
        return per_parameter * parameters
    return per_parameter * parameters / gpus + 2 * 2 * block_parameters


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpus", type=int, nargs="+", default=[8, 16, 64])
    p.add_argument("--ema_decays", type=int, default=1, help="EMA copies kept (--ema_decay with several values)")
    p.add_argument("--usit_batch", type=int, default=32, help="per GPU (paper: 1024 over 16 GPUs = 64; 32 shown)")
    p.add_argument("--ae_batch", type=int, default=8, help="per GPU, 256 px crops (DC-AE phase 1)")
    args = p.parse_args(argv)
    diffusers_logging.set_verbosity_error()  # casting the meta models to bf16 is deliberate here

    def usit(preset):
        config = {**USIT_PRESETS[preset], "in_channels": 128, "sample_size": 8}
        return lambda: USiTTransformer2DModel.from_config(config)

    def run_usit(model, dtype=torch.float32):
        with torch.device("meta"):
            x = torch.randn(args.usit_batch, 128, 8, 8, dtype=dtype)
            t, y = torch.rand(args.usit_batch, dtype=dtype), torch.randint(1000, (args.usit_batch,))
        return model(x, t, y).sample

    def run_ae(model, dtype=torch.float32):
        with torch.device("meta"):
            x = torch.randn(args.ae_batch, 3, 256, 256, dtype=dtype)
        return model(x).sample

    rows = [
        measure("USiT-2B (f64c128, 8x8x128)", usit("usit-2b"), run_usit, f"{args.usit_batch} latents"),
        measure("USiT-3B (f64c128, 8x8x128)", usit("usit-3b"), run_usit, f"{args.usit_batch} latents"),
        measure(
            "DC-AE 1.5 f64c128 autoencoder",
            lambda: AutoencoderDC15.from_config(AUTOENCODER_PRESETS["dc-ae-1.5-f64c128"]),
            run_ae,
            f"{args.ae_batch} x 256 px",
        ),
    ]
    print(
        f"# per-GPU training memory in GiB, computed by benchmarks/memory_table.py (torch {torch.__version__}); "
        f"{args.ema_decays} EMA decay(s); model states = fp32 params + grads + AdamW + EMA"
    )
    gpu_columns = " | ".join(f"FSDP {g} GPUs" for g in args.gpus)
    print(
        f"| model | parameters | batch per GPU | model states: DDP | {gpu_columns} | activations fp32 / bf16 | "
        "checkpointed fp32 / bf16 |"
    )
    print("|---" * (6 + len(args.gpus)) + "|")
    for row in rows:
        states = [
            model_states(row["parameters"], row["block_parameters"], args.ema_decays, g) for g in [None, *args.gpus]
        ]
        cells = " | ".join(f"{s / GIB:.1f}" for s in states)
        print(
            f"| {row['name']} | {row['parameters'] / 1e9:.2f}B | {row['batch']} | {cells} | "
            f"{row['activations_fp32'] / GIB:.1f} / {row['activations_bf16'] / GIB:.1f} | "
            f"{row['activations_fp32_checkpointed'] / GIB:.1f} / {row['activations_bf16_checkpointed'] / GIB:.1f} |"
        )


if __name__ == "__main__":
    main()
