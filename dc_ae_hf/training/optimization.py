"""The optimiser and LR schedule of both trainers (`OptimizerSettings`: their flags, `dc_ae_hf.training.arguments`),
and `compile_blocks` (`--compile`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.optimization import get_scheduler

__all__ = ["OptimizerSettings", "compile_blocks", "make_adamw", "make_lr_scheduler"]


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW and its LR schedule (each field is the trainers' flag of that name)."""

    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    lr_scheduler: str = "constant"  # a diffusers.optimization.get_scheduler name
    lr_warmup_steps: int = 0
    max_train_steps: int = 1


def compile_blocks(model: torch.nn.Module, backend: str = "inductor") -> list[str]:
    """`torch.compile` each block of `model` in place (`nn.Module.compile`, so parameter names, checkpoints and
    `save_pretrained` are unchanged): the outermost modules whose class is in the model's `_no_split_modules` (the
    units FSDP shards too). Compiling blocks rather than the whole model keeps the graphs small, compiles one block
    kind once, and leaves the training loop's Python (prefix slicing, label dropout) outside. Returns their names."""
    from dc_ae_hf.training.sharding import block_modules  # torch.distributed only when compiling

    chosen = block_modules(model)
    for _, module in chosen:
        module.compile(backend=backend)
    return [name for name, _ in chosen]


def make_adamw(
    parameters, settings: OptimizerSettings, lr: float | None = None, betas: tuple[float, float] | None = None
) -> torch.optim.AdamW:
    """AdamW with the settings' learning rate, betas, weight decay and epsilon (lr and betas may be overridden, e.g.
    for a discriminator). `parameters` may be parameter groups with their own weight decay."""
    return torch.optim.AdamW(
        parameters,
        lr=settings.learning_rate if lr is None else lr,
        betas=(settings.adam_beta1, settings.adam_beta2) if betas is None else betas,
        weight_decay=settings.adam_weight_decay,
        eps=settings.adam_epsilon,
    )


def make_lr_scheduler(settings: OptimizerSettings, optimizer: torch.optim.Optimizer, num_processes: int):
    """diffusers `get_scheduler(lr_scheduler)` with `lr_warmup_steps` over `max_train_steps`. accelerate steps a
    prepared scheduler once per process and step, so the step counts are scaled by the number of processes."""
    return get_scheduler(
        settings.lr_scheduler,
        optimizer,
        num_warmup_steps=settings.lr_warmup_steps * num_processes,
        num_training_steps=settings.max_train_steps * num_processes,
    )
