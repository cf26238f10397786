"""What the toy recipe trains, and with which budget: paths, model configs, the diffusion runs and the three modes.

This module is data only (constants and the frozen `ModeSettings` of each mode); the other modules of the recipe
read it:

- `toy_scheduler.py` runs the training subprocesses, `toy_stages.py` builds their command lines,
- `toy_evaluation.py` measures the results, `toy_report.py` writes tables, plots, markdown and the bundle,
- `run_recipe.py` is the entry point that runs them in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dc_ae_hf.checks import check_channel_prefixes, check_int, check_number, invalid
from dc_ae_hf.data.shapes import SHAPE_CLASSES

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINING = REPO_ROOT / "training"  # the project's training scripts, run as subprocesses
RESOLUTION = 32
LATENT_CHANNELS = 32
CHANNEL_CHOICES = [4, 8, 12, 16, 20, 24, 28, 32]  # the structured autoencoder's prefixes c' (paper Eq. 1)
AUTOENCODERS = ("ae_struct", "ae_plain")  # structured (random prefixes c') and plain (full latent only)
RUNS = ("struct_aug", "struct_plain", "plain_plain")  # (autoencoder)_(diffusion objective)
RUN_LABELS = {
    "struct_aug": "structured AE + augmented diffusion (Eq. 1 + Eq. 2)",
    "struct_plain": "structured AE + plain diffusion (Eq. 1 only)",
    "plain_plain": "plain AE + plain diffusion (baseline)",
}
AUGMENTED_PASSES = 2  # --num_channel_samples 2: the full latent (--always_include_full) plus one random prefix
# Samples are evaluated without guidance and with CFG 3 (the paper reports both): at this scale the unguided class
# accuracy stays low for a long time while the guided one separates the runs.
EVAL_GUIDANCE_SCALES = (1.0, 3.0)
GRID_CHANNELS = [4, 8, 16, 24, 32]  # the columns of the prefix reconstruction grids

# f8 (3 down stages), 4x4x32 latents at 32 px; ResBlocks only, no latent-level shortcuts (DC-AE 1.5 design).
AUTOENCODER_CONFIG = {
    "latent_channels": LATENT_CHANNELS,
    "encoder_block_types": "ResBlock",
    "decoder_block_types": "ResBlock",
    "encoder_block_out_channels": [16, 32, 64, 64],
    "decoder_block_out_channels": [16, 32, 64, 64],
    "encoder_layers_per_block": [0, 1, 1, 1],
    "decoder_layers_per_block": [0, 1, 1, 1],
    "encoder_qkv_multiscales": [[], [], [], []],
    "decoder_qkv_multiscales": [[], [], [], []],
    "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu",
    "decoder_conv_act_fn": "silu",
    "encoder_out_shortcut": False,
    "decoder_in_shortcut": False,
    "scaling_factor": 1.0,
}
# num_layers 4 = 2 in-blocks, 1 mid-block, 2 out-blocks (U-ViT long skips), hidden 96: ~0.6M parameters;
# 16 latent tokens (4x4, patch 1) + label + time tokens.
USIT_CONFIG = {
    "num_layers": 4,
    "num_attention_heads": 4,
    "attention_head_dim": 24,
    "mlp_ratio": 4.0,
    "class_dropout_prob": 0.1,
    "patch_size": 1,
}

_POSITIVE_FIELDS = (
    "ae_steps",
    "ae_batch_size",
    "finetune_steps",
    "usit_steps",
    "usit_batch_size",
    "num_samples",
    "sample_steps",
    "classifier_steps",
)


@dataclass(frozen=True)
class ModeSettings:
    """Budget of one mode. Steps are optimisation steps; `usit_checkpoints` evenly spaced evaluations.

    Checked on construction (ValueError / TypeError naming the field): counts are positive ints, the image sets
    hold at least one image per class, `finetune_channels` are prefixes in 1..LATENT_CHANNELS, `seeds` are ints
    >= 0, at most one checkpoint per step, and the learning rates are finite numbers > 0.
    """

    num_train_images: int
    num_heldout_images: int
    ae_steps: int
    ae_batch_size: int
    finetune_steps: int
    finetune_channels: tuple[int, ...]
    usit_steps: int
    usit_checkpoints: int
    usit_batch_size: int
    seeds: tuple[int, ...]
    num_samples: int
    sample_steps: int
    classifier_steps: int
    ae_learning_rate: float = 1e-3
    usit_learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("num_train_images", "num_heldout_images"):
            # the evaluation takes class-balanced subsets and one held-out image per class for the grids
            check_int(name, getattr(self, name), minimum=len(SHAPE_CLASSES))
        for name in _POSITIVE_FIELDS:
            check_int(name, getattr(self, name), minimum=1)
        check_int("usit_checkpoints", self.usit_checkpoints, minimum=1, maximum=self.usit_steps)
        check_channel_prefixes("finetune_channels", self.finetune_channels, LATENT_CHANNELS)
        if isinstance(self.seeds, (str, bytes)) or not isinstance(self.seeds, (tuple, list)) or not self.seeds:
            raise invalid("seeds", self.seeds, "must be a non-empty tuple of ints >= 0")
        for seed in self.seeds:
            check_int("seeds", seed, minimum=0)
        for name in ("ae_learning_rate", "usit_learning_rate"):
            check_number(name, getattr(self, name), minimum=0, exclusive_minimum=True)


MODES: dict[str, ModeSettings] = {
    "smoke": ModeSettings(
        num_train_images=80,
        num_heldout_images=20,
        ae_steps=3,
        ae_batch_size=8,
        finetune_steps=2,
        finetune_channels=(8,),
        usit_steps=4,
        usit_checkpoints=2,
        usit_batch_size=8,
        seeds=(0,),
        num_samples=20,
        sample_steps=2,
        classifier_steps=5,
    ),
    "quick": ModeSettings(
        num_train_images=2000,
        num_heldout_images=500,
        ae_steps=1500,
        ae_batch_size=32,
        finetune_steps=300,
        finetune_channels=(4, 8, 16),
        usit_steps=2000,
        usit_checkpoints=4,
        usit_batch_size=64,
        seeds=(0,),
        num_samples=500,
        sample_steps=20,
        classifier_steps=600,
    ),
    "full": ModeSettings(
        num_train_images=4000,
        num_heldout_images=1000,
        ae_steps=3000,
        ae_batch_size=32,
        finetune_steps=500,
        finetune_channels=(4, 8, 16, 24),
        usit_steps=6000,
        usit_checkpoints=6,
        usit_batch_size=64,
        seeds=(0, 1),
        num_samples=500,
        sample_steps=20,
        classifier_steps=1000,
    ),
}


def run_autoencoder(run: str) -> str:
    """The autoencoder whose latents a diffusion run trains on: `ae_struct` for `struct_*`, else `ae_plain`."""
    if run not in RUNS:
        raise invalid("run", run, f"choose one of {list(RUNS)}")
    return "ae_struct" if run.startswith("struct") else "ae_plain"


def passes_per_step(run: str) -> int:
    """Forward/backward passes per optimisation step of a diffusion run (its compute per step)."""
    if run not in RUNS:
        raise invalid("run", run, f"choose one of {list(RUNS)}")
    return AUGMENTED_PASSES if run == "struct_aug" else 1


def usit_run_dir(out: Path, run: str, seed: int) -> Path:
    """The output folder of one diffusion run: `<out>/usit/<run>_seed<seed>`."""
    return out / "usit" / f"{run}_seed{seed}"
