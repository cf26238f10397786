"""The optimiser and LR schedule of both trainers, built from the shared flags (`dc_ae_hf.training.arguments`)."""

from __future__ import annotations

import argparse

import torch
from diffusers.optimization import get_scheduler

__all__ = ["compile_blocks", "make_adamw", "make_lr_scheduler"]


def compile_blocks(model: torch.nn.Module, backend: str = "inductor") -> list[str]:
    """`torch.compile` each block of `model` in place (`nn.Module.compile`, so parameter names, checkpoints and
    `save_pretrained` are unchanged): the outermost modules whose class is in the model's `_no_split_modules` (the
    units FSDP shards too). Compiling blocks rather than the whole model keeps the graphs small, compiles one block
    kind once, and leaves the training loop's Python (prefix slicing, label dropout) outside. Returns their names."""
    from dc_ae_hf.training.sharding import block_modules

    chosen = block_modules(model)
    for _, module in chosen:
        module.compile(backend=backend)
    return [name for name, _ in chosen]


def make_adamw(parameters, args: argparse.Namespace, lr: float | None = None, betas=None) -> torch.optim.AdamW:
    """AdamW with `--learning_rate`, `--adam_beta1/2`, `--adam_weight_decay`, `--adam_epsilon` (lr and betas may be
    overridden, e.g. for a discriminator). `parameters` may be parameter groups with their own weight decay."""
    return torch.optim.AdamW(
        parameters,
        lr=args.learning_rate if lr is None else lr,
        betas=(args.adam_beta1, args.adam_beta2) if betas is None else betas,
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )


def make_lr_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, num_processes: int):
    """diffusers `get_scheduler(--lr_scheduler)` with `--lr_warmup_steps` over `--max_train_steps`. accelerate steps
    a prepared scheduler once per process and step, so the step counts are scaled by the number of processes."""
    return get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=args.max_train_steps * num_processes,
    )
