"""Command-line flags shared by the trainers, declared once with one meaning each.

`train_dc_ae.py` and `train_usit.py` build their parsers from these groups and add only what is theirs; a flag
that exists in both means the same thing in both (only some defaults differ, e.g. the official optimiser of each).
`check_shared_arguments` validates the shared flags in one place, before anything is loaded or written.

The other scripts under `training/` take their data and loader flags from the same declarations
(`add_data_source_arguments`, `add_loader_arguments`; checked by `check_data_source_arguments` and
`check_loader_arguments`), so one spelling means one thing everywhere; older spellings stay as aliases.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dc_ae_hf.checks import check_int, check_number, exit_with_error, invalid

T = TypeVar("T")

__all__ = [
    "add_channel_arguments",
    "add_data_source_arguments",
    "add_image_data_arguments",
    "add_loader_arguments",
    "add_optimization_arguments",
    "add_run_arguments",
    "check_data_source_arguments",
    "check_loader_arguments",
    "check_shared_arguments",
    "from_flags",
    "make_parser",
    "optional_float",
]


class _EmaDecays(argparse.Action):
    """`--ema_decay D [D ...]`: every decay in `args.ema_decays`, the first (the EMA that validation and the exported
    model use, unless a trainer's own flag picks another) also in `args.ema_decay`."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.ema_decays = list(values)
        namespace.ema_decay = values[0]


def make_parser(description: str) -> argparse.ArgumentParser:
    """An `ArgumentParser` whose `--help` shows every default."""
    return argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def optional_float(text: str) -> float | None:
    """argparse type: a float, or None for "none"."""
    return None if text.strip().lower() == "none" else float(text)


def from_flags(settings_class: type[T], args: argparse.Namespace, **values) -> T:
    """The flags turned into a library's settings object (a dataclass such as `RunSettings`): each field takes the
    flag of its name, unless `values` gives it. This is where the flags stop: the library never reads `args`."""
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings_class) if f.name not in values}
    return settings_class(**flags, **values)


def add_channel_arguments(parser: argparse.ArgumentParser, title: str, default_note: str):
    """c' of each step: `--latent_channel_choices`, `--num_channel_samples`, `--always_include_full`."""
    group = parser.add_argument_group(title)
    group.add_argument("--latent_channel_choices", type=int, nargs="+", help=f"prefixes c' ({default_note})")
    group.add_argument("--num_channel_samples", type=int, default=1, help="prefixes drawn per optimisation step (k)")
    group.add_argument("--always_include_full", action="store_true", help="one of them is always the full latent")
    return group


def add_data_source_arguments(
    parser: argparse.ArgumentParser,
    resolution: int = 256,
    *,
    split: str | None = "train",
    split_help: str = "dataset split",
    label_column: bool = False,
    max_images: bool = False,
):
    """Where the images come from and their ADM center crop, for every script that reads images: a Hub dataset
    (`--dataset_name`) or an imagefolder (`--train_data_dir`, alias `--data_dir`), `--split`, `--image_column`,
    `--cache_dir`, `--resolution`; with `label_column` also `--label_column`, with `max_images` also `--max_images`.
    `check_data_source_arguments` checks them."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset_name", help="Hub dataset id (or a local dataset folder)")
    group.add_argument("--dataset_config_name", help="configuration of --dataset_name")
    group.add_argument(
        "--train_data_dir", "--data_dir", dest="train_data_dir", help="imagefolder directory (class folders: labels)"
    )
    group.add_argument("--split", default=split, help=split_help)
    group.add_argument("--image_column", help="default: the dataset's first image column")
    if label_column:
        group.add_argument("--label_column", default="label", help="class ids (ints >= 0) or a ClassLabel")
    group.add_argument("--cache_dir", help="Hugging Face datasets cache (None: the datasets default)")
    group.add_argument("--resolution", type=int, default=resolution, help="ADM center crop size (px)")
    if max_images:
        group.add_argument(
            "--max_images", "--num_images", dest="max_images", type=int, help="use only the first N images (None: all)"
        )
    return group


def add_loader_arguments(group, batch_size: int, batch_help: str):
    """The data loader of a script that does not train: `--batch_size` (images per model call; the trainers'
    per-process batch is `--train_batch_size`) and `--dataloader_num_workers`."""
    group.add_argument("--batch_size", type=int, default=batch_size, help=batch_help)
    _add_dataloader_num_workers(group)
    return group


def _add_dataloader_num_workers(group) -> None:
    group.add_argument(
        "--dataloader_num_workers",
        "--num_workers",
        dest="dataloader_num_workers",
        type=int,
        default=0,
        help="data loader worker processes (0: load in the main process)",
    )


def add_image_data_arguments(parser: argparse.ArgumentParser, resolution: int = 256):
    """Image data: a Hub dataset (`--dataset_name`) or an imagefolder (`--train_data_dir`, alias `--data_dir`)."""
    group = add_data_source_arguments(parser, resolution)
    group.add_argument("--random_flip", action="store_true", help="random horizontal flips (official: off)")
    group.add_argument("--train_batch_size", type=int, default=32, help="per process")
    _add_dataloader_num_workers(group)
    return group


def add_optimization_arguments(
    parser: argparse.ArgumentParser,
    *,
    learning_rate: float,
    betas: tuple[float, float],
    lr_scheduler: str,
    lr_warmup_steps: int,
    max_grad_norm: float | None,
    max_train_steps: int,
    ema_decay: float = 0.9999,
    title: str = "optimisation",
):
    """AdamW, the LR schedule (diffusers `get_scheduler`), clipping, accumulation, precision, steps, EMA, seed."""
    group = parser.add_argument_group(title)
    group.add_argument("--learning_rate", type=float, default=learning_rate)
    group.add_argument("--adam_beta1", type=float, default=betas[0])
    group.add_argument("--adam_beta2", type=float, default=betas[1])
    group.add_argument("--adam_weight_decay", type=float, default=0.0)
    group.add_argument("--adam_epsilon", type=float, default=1e-8)
    group.add_argument("--lr_scheduler", default=lr_scheduler, help="diffusers.optimization.get_scheduler name")
    group.add_argument("--lr_warmup_steps", type=int, default=lr_warmup_steps)
    group.add_argument(
        "--max_grad_norm", type=optional_float, default=max_grad_norm, help="clip gradients to this norm; none: off"
    )
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], help="default: the accelerate config")
    group.add_argument("--max_train_steps", type=int, default=max_train_steps)
    group.add_argument(
        "--ema_decay",
        type=float,
        nargs="+",
        action=_EmaDecays,
        default=ema_decay,
        help="one or several EMA decays kept at once (official: several); the first is validated and exported",
    )
    parser.set_defaults(ema_decays=[ema_decay])
    group.add_argument("--seed", type=int, default=0)
    group.add_argument(
        "--compile", action="store_true", help="torch.compile every block of the model in place (keys unchanged)"
    )
    group.add_argument(
        "--compile_backend", default="inductor", help="torch.compile backend ('eager': graph capture, no codegen)"
    )
    group.add_argument(
        "--fsdp",
        action="store_true",
        help="FSDP2: shard parameters, gradients, optimizer states and EMAs over the processes (fully_shard per "
        "block); launch with training/configs/fsdp2.yaml or any multi-process config",
    )
    return group


def add_run_arguments(parser: argparse.ArgumentParser, output_dir: str, checkpointing_steps: int, every: int):
    """Output folder, checkpoints and resuming, validation cadence, logging, Hub and self-contained exports, dry
    run."""
    group = parser.add_argument_group("checkpoints, validation, logging")
    group.add_argument("--output_dir", default=output_dir, help="a new folder, or this trainer's run (resumed)")
    group.add_argument("--checkpointing_steps", type=int, default=checkpointing_steps)
    group.add_argument(
        "--checkpointing_minutes",
        type=float,
        help="also write a checkpoint when this many minutes have passed since the last one (wall clock)",
    )
    group.add_argument(
        "--checkpoints_total_limit", type=int, help="keep the newest N (each deletion is logged); default: keep all"
    )
    group.add_argument(
        "--resume_from_checkpoint", help="'latest' (also when omitted: re-running resumes), 'none' or a checkpoint"
    )
    group.add_argument(
        "--resume_mismatch_ok",
        action="store_true",
        help="resume although settings that change the model, objective or data order differ from the checkpoint's",
    )
    group.add_argument("--validation_steps", type=int, default=every)
    group.add_argument("--logging_steps", type=int, default=10, help="log the mean losses every N steps")
    group.add_argument("--report_to", default="tensorboard", choices=["tensorboard", "wandb", "none"])
    group.add_argument("--logging_dir", default="logs", help="relative to --output_dir")
    group.add_argument("--push_to_hub", action="store_true")
    group.add_argument("--hub_model_id", help="default: the name of --output_dir")
    group.add_argument(
        "--self_contained",
        action="store_true",
        help="write the exported folders (train_dc_ae.py: vae/ and its EMAs; train_usit.py: pipeline/) with their "
        "code, generated from dc_ae_hf: plain diffusers loads them with trust_remote_code=True, no dc_ae_hf needed",
    )
    group.add_argument("--dry_run", action="store_true", help="print the resolved configuration (JSON) and exit")
    return group


def check_shared_arguments(args: argparse.Namespace) -> None:
    """Validate the shared flags (ValueError/TypeError naming the flag, the value and what is allowed)."""
    for flag in ("max_train_steps", "checkpointing_steps", "validation_steps", "logging_steps", "train_batch_size"):
        check_int(f"--{flag}", getattr(args, flag), minimum=1)
    check_int("--gradient_accumulation_steps", args.gradient_accumulation_steps, minimum=1)
    check_int("--num_channel_samples", args.num_channel_samples, minimum=1)
    check_int("--resolution", args.resolution, minimum=1)
    for flag in ("lr_warmup_steps", "dataloader_num_workers"):
        check_int(f"--{flag}", getattr(args, flag), minimum=0)
    check_int("--checkpoints_total_limit", args.checkpoints_total_limit, minimum=1, optional=True)
    if args.checkpointing_minutes is not None:
        check_number("--checkpointing_minutes", args.checkpointing_minutes, minimum=0, exclusive_minimum=True)
    check_number("--learning_rate", args.learning_rate, minimum=0, exclusive_minimum=True)
    check_number("--adam_weight_decay", args.adam_weight_decay, minimum=0)
    if args.max_grad_norm is not None and not args.max_grad_norm > 0:
        raise invalid("--max_grad_norm", args.max_grad_norm, "must be > 0 (or none: no clipping)")
    bad = [d for d in args.ema_decays if not 0 < d < 1]
    if bad or len(set(args.ema_decays)) != len(args.ema_decays):
        raise invalid("--ema_decay", args.ema_decays, "each decay must be in (0, 1), and each given once")
    if args.fsdp and args.mixed_precision == "fp16":
        raise invalid("--mixed_precision", "fp16", "--fsdp trains in bf16 or fp32 (no fp16 loss scaling): use bf16")
    if args.compile:  # an unknown backend would fail only at the first forward, after the run has started
        from torch._dynamo import list_backends

        backends = list_backends(exclude_tags=())
        if args.compile_backend not in backends:
            raise invalid("--compile_backend", args.compile_backend, f"choose one of torch's {sorted(backends)}")
    if args.report_to != "none" and importlib.util.find_spec(args.report_to) is None:
        raise invalid("--report_to", args.report_to, f"the {args.report_to} package is not installed (or use none)")
    _warn_on_a_warm_up_longer_than_the_run(args)


def check_data_source_arguments(args: argparse.Namespace) -> None:
    """The flags of `add_data_source_arguments`, before any data is read: exactly one source, an imagefolder that
    exists, `--resolution` >= 1 and `--max_images` >= 1 where the script has it."""
    if (args.dataset_name is None) == (args.train_data_dir is None):
        raise invalid(
            "--train_data_dir",
            args.train_data_dir,
            f"give exactly one of --dataset_name (a Hub dataset; got {args.dataset_name!r}) and --train_data_dir "
            "(an imagefolder)",
        )
    if args.train_data_dir is not None and not Path(args.train_data_dir).is_dir():
        raise invalid("--train_data_dir", str(args.train_data_dir), "must be a directory (an imagefolder)")
    check_int("--resolution", args.resolution, minimum=1)
    check_int("--max_images", getattr(args, "max_images", None), minimum=1, optional=True)


def check_loader_arguments(args: argparse.Namespace) -> None:
    """The flags of `add_loader_arguments`: `--batch_size` >= 1, `--dataloader_num_workers` >= 0."""
    check_int("--batch_size", args.batch_size, minimum=1)
    check_int("--dataloader_num_workers", args.dataloader_num_workers, minimum=0)


def _warn_on_a_warm_up_longer_than_the_run(args: argparse.Namespace) -> None:
    """Legal, but with the official warm-up (USiT: 5000 steps) a short run silently trains at a fraction of the
    learning rate: a UserWarning when the LR never gets within 5% of --learning_rate."""
    if args.lr_scheduler == "constant" or args.lr_warmup_steps <= 0:
        return
    fraction = args.max_train_steps / args.lr_warmup_steps
    if fraction < 0.95:
        warnings.warn(
            f"--lr_warmup_steps={args.lr_warmup_steps} is longer than --max_train_steps={args.max_train_steps}: the "
            f"learning rate peaks at {args.learning_rate * fraction:.3g}, {fraction:.0%} of --learning_rate="
            f"{args.learning_rate}; for a short run pass e.g. --lr_warmup_steps {max(1, args.max_train_steps // 20)}",
            UserWarning,
            stacklevel=3,
        )


def check_data_and_loader_arguments(args: argparse.Namespace) -> None:
    """`check_data_source_arguments` and `check_loader_arguments`: the flag checks of the scripts that read images
    without training (the cache, the autoencoder evaluation, the reference statistics)."""
    check_data_source_arguments(args)
    check_loader_arguments(args)


def check_before_heavy_imports(check: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """Run a script's checks that need no model (`check(args)`, e.g. `check_shared_arguments`) before its heavy
    imports, so that a bad value answers at once, as `--help` does: a ValueError or TypeError ends the script with
    one line `error: ...` (on the first process of a launch only) and status 2, as `run_script` would later.
    Warnings are left to the same check in `main`, which runs it again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            check(args)
        except (ValueError, TypeError) as error:
            if os.environ.get("DC_AE_HF_TRACEBACK") == "1":
                raise
            exit_with_error(error, show=os.environ.get("RANK", "0") == "0")
