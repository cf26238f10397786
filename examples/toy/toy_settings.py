"""What the toy recipe trains, and with which budget: paths, model configs, the diffusion runs and the modes.

This module is data only (constants, the frozen `ModeSettings` of the smoke, quick and full modes, the channel
sweep's `SweepSettings`, `SweepAutoencoder`, `SweepRun` and their lists, the regime modes' `RegimeSettings` and the
built-in default's `DefaultSettings`); the other modules of the recipe read it:

- `toy_scheduler.py` runs the training subprocesses, `toy_stages.py` builds their command lines,
- `toy_evaluation.py` measures the results, `report/` writes tables, plots, markdown and the bundle,
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


def autoencoder_config(spatial_compression: int = 8, deep_width: int = 128) -> dict:
    """`AUTOENCODER_CONFIG` (f8) or, for f16 / f32 (the regime modes), the same design with one / two more stages
    of width `deep_width` after a stage of 128 (each stage after the first halves the resolution; the deeper stages
    work on 4x4 and 2x2 maps at 64 px, so they are cheap): f16 = [16, 32, 64, 128, w], f32 = [16, 32, 64, 128, w,
    w]."""
    check_int("deep_width", deep_width, minimum=1)
    if spatial_compression == 8:
        if deep_width != 128:
            raise invalid("deep_width", deep_width, "f8 has no deeper stages (keep 128)")
        return dict(AUTOENCODER_CONFIG)
    extra = {16: 1, 32: 2}.get(spatial_compression)
    if extra is None:
        raise invalid("spatial_compression", spatial_compression, "choose 8, 16 or 32")
    widths = [16, 32, 64, 128, *[deep_width] * extra]
    layers = [0, *[1] * (3 + extra)]
    return {
        **AUTOENCODER_CONFIG,
        "encoder_block_out_channels": widths,
        "decoder_block_out_channels": widths,
        "encoder_layers_per_block": layers,
        "decoder_layers_per_block": layers,
        "encoder_qkv_multiscales": [[]] * len(widths),
        "decoder_qkv_multiscales": [[]] * len(widths),
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

# the counts every mode has (`_check_budget` wants them >= 1); the smoke, quick and full modes add the fine-tunes'
_BUDGET_FIELDS = (
    "ae_steps",
    "ae_batch_size",
    "usit_steps",
    "usit_batch_size",
    "num_samples",
    "sample_steps",
    "classifier_steps",
)
_POSITIVE_FIELDS = (*_BUDGET_FIELDS, "finetune_steps")


def _check_seeds(name: str, seeds) -> None:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (tuple, list)) or not seeds:
        raise invalid(name, seeds, "must be a non-empty tuple of ints >= 0")
    for seed in seeds:
        check_int(name, seed, minimum=0)


def _check_budget(settings, positive: tuple[str, ...], min_checkpoints: int = 1) -> None:
    """The checks every mode's settings share (ValueError / TypeError naming the field): both image sets hold at
    least one image per class, the fields of `positive` are ints >= 1, `usit_checkpoints` is in
    [`min_checkpoints`, `usit_steps`] and the learning rates are finite numbers > 0."""
    for name in ("num_train_images", "num_heldout_images"):
        # the evaluation takes class-balanced subsets and one held-out image per class for the grids
        check_int(name, getattr(settings, name), minimum=len(SHAPE_CLASSES))
    for name in positive:
        check_int(name, getattr(settings, name), minimum=1)
    check_int("usit_checkpoints", settings.usit_checkpoints, minimum=min_checkpoints, maximum=settings.usit_steps)
    for name in ("ae_learning_rate", "usit_learning_rate"):
        check_number(name, getattr(settings, name), minimum=0, exclusive_minimum=True)


def _check_even_checkpoints(settings) -> None:
    """`usit_checkpoints` even and dividing `usit_steps`: a per_pass run (2 passes per step) then has a checkpoint at
    half the steps, where its passes equal the one-pass runs' final ones (the equal-compute comparison)."""
    if settings.usit_checkpoints % 2 or settings.usit_steps % settings.usit_checkpoints:
        raise invalid(
            "usit_checkpoints",
            settings.usit_checkpoints,
            f"must be even and divide usit_steps={settings.usit_steps} (per_pass runs are compared at half the steps)",
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
        _check_budget(self, _POSITIVE_FIELDS)
        check_channel_prefixes("finetune_channels", self.finetune_channels, LATENT_CHANNELS)
        _check_seeds("seeds", self.seeds)


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


# The channel sweep (`--mode sweep`, `sweep-smoke`): the paper's regime of many latent channels at the toy's 4x4
# latent size. Fig. 1b: plain autoencoders of the same architecture with c channels for every c of the sweep, and
# a structured one (Eq. 1) at the largest c (and optionally others); the plain diffusion objective on every plain
# autoencoder; at the largest c the 2x2 of Table 5 (structured or plain latent x augmented or plain objective),
# with augmentation both as the official schedule (`per_pass`) and as one pass (`per_sample`).
SWEEP_PREFIX_STEP = 8  # the structured autoencoders' prefixes c' = 8, 16, ..., c (paper: 16, 20, ..., c)
SWEEP_OBJECTIVES = ("plain", "per_pass", "per_sample")
SWEEP_OBJECTIVE_LABELS = {
    "plain": "plain objective (--no_augmented)",
    "per_pass": f"augmented, per_pass (k = {AUGMENTED_PASSES}, full + one prefix)",
    "per_sample": "augmented, per_sample (one pass, full latent on half the batch)",
}


def sweep_prefixes(latent_channels: int) -> list[int]:
    """The prefixes c' of a structured sweep autoencoder (and of augmented diffusion on any sweep latent):
    `SWEEP_PREFIX_STEP`, 2 x `SWEEP_PREFIX_STEP`, ..., `latent_channels` (a multiple of `SWEEP_PREFIX_STEP`)."""
    check_int("latent_channels", latent_channels, minimum=SWEEP_PREFIX_STEP)
    if latent_channels % SWEEP_PREFIX_STEP:
        raise invalid("latent_channels", latent_channels, f"must be a multiple of {SWEEP_PREFIX_STEP}")
    return list(range(SWEEP_PREFIX_STEP, latent_channels + 1, SWEEP_PREFIX_STEP))


def sweep_passes_per_step(objective: str) -> int:
    """Forward/backward passes of the transformer per optimisation step (the compute of a step): the official
    augmented schedule (`per_pass`) runs `AUGMENTED_PASSES` passes over the batch, `per_sample` and `plain` one."""
    if objective not in SWEEP_OBJECTIVES:
        raise invalid("objective", objective, f"choose one of {list(SWEEP_OBJECTIVES)}")
    return AUGMENTED_PASSES if objective == "per_pass" else 1


@dataclass(frozen=True)
class SweepAutoencoder:
    """One autoencoder of the sweep (or of the regime modes): `autoencoder_config(spatial_compression,
    deep_width)` with `latent_channels` channels, trained with random prefixes c' from `sweep_prefixes` (`structured`, paper Eq. 1)
    or on the full latent only (plain). The sweep's are all f8 (`AUTOENCODER_CONFIG`)."""

    latent_channels: int
    structured: bool
    spatial_compression: int = 8
    deep_width: int = 128

    def __post_init__(self) -> None:
        check_int("latent_channels", self.latent_channels, minimum=1)
        autoencoder_config(self.spatial_compression, self.deep_width)  # checks the compression and width
        if self.structured:
            sweep_prefixes(self.latent_channels)  # checks that the prefixes exist
            if self.latent_channels == SWEEP_PREFIX_STEP:
                raise invalid("latent_channels", self.latent_channels, "a structured autoencoder needs 2+ prefixes")

    @property
    def kind(self) -> str:
        return "struct" if self.structured else "plain"

    @property
    def latent(self) -> str:
        """Its latent without the kind: `c64` for the sweep's f8, else e.g. `f32c128`."""
        f = self.spatial_compression
        return f"c{self.latent_channels}" if f == 8 else f"f{f}c{self.latent_channels}"

    @property
    def name(self) -> str:
        """Its folder under the output dir, e.g. `ae_plain_c64`, `ae_struct_c128`, `ae_plain_f16c32`."""
        return f"ae_{self.kind}_{self.latent}"

    @property
    def config(self) -> dict:
        """Its model config (what `configs/<name>.json` holds)."""
        return {
            **autoencoder_config(self.spatial_compression, self.deep_width),
            "latent_channels": self.latent_channels,
            "latent_channel_choices": self.channel_choices,
        }

    @property
    def channel_choices(self) -> list[int]:
        return sweep_prefixes(self.latent_channels) if self.structured else [self.latent_channels]


@dataclass(frozen=True)
class SweepRun:
    """One diffusion run of the sweep: USiT on `autoencoder`'s latents with `objective` (`SWEEP_OBJECTIVES`) and
    `seed`. The augmented objectives draw c' from `sweep_prefixes` of the latent, structured or not."""

    autoencoder: SweepAutoencoder
    objective: str
    seed: int

    def __post_init__(self) -> None:
        sweep_passes_per_step(self.objective)  # checks the objective
        check_int("seed", self.seed, minimum=0)
        if self.objective != "plain":
            sweep_prefixes(self.autoencoder.latent_channels)

    @property
    def name(self) -> str:
        """The run without its seed, e.g. `struct_c128_per_pass`, `plain_f16c32_plain` (the `run` of its rows)."""
        return f"{self.autoencoder.kind}_{self.autoencoder.latent}_{self.objective}"

    @property
    def passes_per_step(self) -> int:
        return sweep_passes_per_step(self.objective)

    def folder(self, out: Path) -> Path:
        return usit_run_dir(out, self.name, self.seed)


def sweep_cache_dir(out: Path, autoencoder: SweepAutoencoder) -> Path:
    """The latent cache of a sweep autoencoder, `<out>/latents_<name>`; its `vae/` subfolder is the autoencoder with
    the scaling factor measured by `training/cache_latents.py --scaling_factor auto` (what its diffusion runs and
    their pipelines decode with)."""
    return out / f"latents_{autoencoder.name}"


@dataclass(frozen=True)
class SweepSettings:
    """Budget of a channel-sweep mode. Steps are optimisation steps; `usit_checkpoints` evenly spaced evaluations.

    `plain_channels`: the c of the plain autoencoders (Fig. 1b), each trained with the same data, steps and seed;
    `structured_channels`: the structured ones, whose largest c must be the largest plain c (Table 5's latent
    size). `seeds`: the seeds of the Table 5 cells (at the largest c); `channel_seeds`: those of the plain-objective
    runs on the smaller plain autoencoders. The scaling factor of every autoencoder is measured on all training
    images (`sweep_cache_dir`; the full and quick modes measure on the first 1000, which are of the first classes
    only: the imagefolder is sorted by class).

    Checked on construction (ValueError / TypeError naming the field): counts are positive ints, the channel lists
    strictly increasing multiples of `SWEEP_PREFIX_STEP`, `usit_checkpoints` even and dividing `usit_steps` (so a
    per_pass run has a checkpoint at half the steps, where its passes equal the one-pass runs' final passes: the
    equal-compute comparison), seeds ints >= 0, learning rates finite and > 0.
    """

    num_train_images: int
    num_heldout_images: int
    plain_channels: tuple[int, ...]
    structured_channels: tuple[int, ...]
    ae_steps: int
    ae_batch_size: int
    usit_steps: int
    usit_checkpoints: int
    usit_batch_size: int
    seeds: tuple[int, ...]
    channel_seeds: tuple[int, ...]
    num_samples: int
    sample_steps: int
    classifier_steps: int
    ae_learning_rate: float = 1e-3
    usit_learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        _check_budget(self, _BUDGET_FIELDS, min_checkpoints=2)
        _check_even_checkpoints(self)
        for name in ("plain_channels", "structured_channels"):
            channels = getattr(self, name)
            if isinstance(channels, (str, bytes)) or not isinstance(channels, (tuple, list)) or not channels:
                raise invalid(name, channels, "must be a non-empty tuple of channel counts")
            check_channel_prefixes(name, channels, increasing=True)
            for c in channels:
                sweep_prefixes(c)
        if self.structured_channels[-1] != self.plain_channels[-1]:
            raise invalid(
                "structured_channels",
                self.structured_channels,
                f"the largest must equal the largest plain_channels {self.plain_channels[-1]} (Table 5's latent)",
            )
        _check_seeds("seeds", self.seeds)
        _check_seeds("channel_seeds", self.channel_seeds)

    @property
    def largest_channels(self) -> int:
        return self.plain_channels[-1]


def sweep_autoencoders(settings: SweepSettings) -> list[SweepAutoencoder]:
    """The sweep's autoencoders, largest c first (Table 5's latents are needed first): for each c the structured one
    (when c is in `structured_channels`), then the plain one. For `RegimeSettings`: `RegimeSettings.autoencoders`."""
    if isinstance(settings, RegimeSettings):
        return settings.autoencoders()
    autoencoders = []
    for c in sorted(set(settings.plain_channels) | set(settings.structured_channels), reverse=True):
        if c in settings.structured_channels:
            autoencoders.append(SweepAutoencoder(c, structured=True))
        if c in settings.plain_channels:
            autoencoders.append(SweepAutoencoder(c, structured=False))
    return autoencoders


def sweep_runs(settings: SweepSettings) -> list[SweepRun]:
    """The sweep's diffusion runs, most expensive first (the job pool starts them in this order):

    - Table 5 at the largest c, for every seed of `seeds`: {structured, plain} latent x {per_pass, per_sample,
      plain} objective (6 cells per seed; the plain-latent plain-objective cell is also Fig. 1b's largest c);
    - Fig. 1b: the plain objective on every smaller plain autoencoder, for every seed of `channel_seeds`.

    For `RegimeSettings`: `RegimeSettings.runs` (the arms (i)-(v) for every seed).
    """
    if isinstance(settings, RegimeSettings):
        return settings.runs()
    largest = settings.largest_channels
    runs = []
    for objective in ("per_pass", "per_sample", "plain"):
        for seed in settings.seeds:
            for structured in (True, False):
                runs.append(SweepRun(SweepAutoencoder(largest, structured), objective, seed))
    for c in sorted(settings.plain_channels[:-1], reverse=True):
        for seed in settings.channel_seeds:
            runs.append(SweepRun(SweepAutoencoder(c, structured=False), "plain", seed))
    return runs


# Budget of `--mode sweep` (examples/toy/measure_sweep.py, `--recorded` prints it; how each cost was measured:
# RECORDED_COSTS there): 7 autoencoders of 2000 steps (~6.5 min each), 7 caches, 20 diffusion runs of 2400 steps
# (per_pass ~12.5 min, the others 5-7.5 min), 2 jobs at a time on the 2 cores: ~1 h 43 min; then the evaluation
# in the recipe's process: 80 checkpoints x 2 guidance scales x 500 samples (~21 min), the classifier (~3 min) and
# 44 prefix reconstructions of the 1000 held-out images (~8 min). Estimated total: ~2 h 15 min (8124 s) on an
# otherwise idle machine; other work on it slows every stage (the evaluation most: it uses both cores).
SWEEP_MODES: dict[str, SweepSettings] = {
    "sweep-smoke": SweepSettings(
        num_train_images=80,
        num_heldout_images=20,
        plain_channels=(8, 32),
        structured_channels=(32,),
        ae_steps=3,
        ae_batch_size=8,
        usit_steps=4,
        usit_checkpoints=2,
        usit_batch_size=8,
        seeds=(0,),
        channel_seeds=(0,),
        num_samples=20,
        sample_steps=2,
        classifier_steps=5,
    ),
    "sweep": SweepSettings(
        num_train_images=4000,
        num_heldout_images=1000,
        plain_channels=(8, 16, 32, 64, 128),
        structured_channels=(64, 128),
        ae_steps=2000,
        ae_batch_size=32,
        usit_steps=2400,
        usit_checkpoints=4,
        usit_batch_size=64,
        seeds=(0, 1),
        channel_seeds=(0, 1),
        num_samples=500,
        sample_steps=20,
        classifier_steps=1000,
    ),
}


# The paper's regime (`--mode regime`, `regime-smoke`; issue #20): two latents of equal size at high spatial
# compression, the high-compression one with 4x the channels and a quarter of the tokens (at 64 px: f16c32 = 4x4x32
# against f32c128 = 2x2x128, 512 values for 12288 pixel values, 24x; the paper's DC-AE-f32c32 against
# DC-AE-1.5-f64c128 at 512 px), and five diffusion arms, each with every seed:
#   (i)   the baseline latent (f16c32, plain autoencoder), plain objective;
#   (ii)  the high-channel latent (f32c128), plain autoencoder, plain objective;
#   (iii) the high-channel latent, structured autoencoder (Eq. 1), plain objective;
#   (iv)  structured, augmented training as in the paper (Eq. 2, per_pass: full latent + one prefix, 2 passes);
#   (v)   structured, one-pass per_sample augmentation.
# Every USiT is the same model (`REGIME_USIT_CONFIG`), at least twice as wide as the channels it denoises; compute
# is counted as passes x latent tokens (arm (i) has 4x the tokens of the others, so ~4x the cost of a step).
REGIME_ARMS = ("i", "ii", "iii", "iv", "v")
REGIME_ARM_LABELS = {
    "i": "(i) baseline latent, plain AE, plain objective",
    "ii": "(ii) high-channel latent, plain AE, plain objective",
    "iii": "(iii) high-channel latent, structured AE (Eq. 1), plain objective",
    "iv": "(iv) structured + augmented training, per_pass (Eq. 1 + Eq. 2)",
    "v": "(v) structured + one-pass per_sample augmentation",
}
# num_layers 4 (2 in, 1 mid, 2 out), 4 heads of 64: hidden 256 = 2 x 128 channels; the same model for every arm.
REGIME_USIT_CONFIG = {**USIT_CONFIG, "attention_head_dim": 64}
REGIME_MIN_COMPRESSION = 16  # pixel values / latent values, at least (the issue: ">= 16x in values")


def usit_hidden_size(config: dict) -> int:
    """The transformer width of a USiT config: heads x head dim."""
    return config["num_attention_heads"] * config["attention_head_dim"]


@dataclass(frozen=True)
class RegimeSettings:
    """Budget of a regime mode (the paper's regime: `REGIME_ARMS` on two latents of equal size).

    `baseline_latent` and `high_latent` are (spatial compression f, channels c) of the baseline (arm (i)) and the
    high-channel latent (arms (ii)-(v)) at `resolution` px; `ae_deep_width` the width of the autoencoders' stages
    beyond f8 (`autoencoder_config`); `ae_full_latent_every_step` trains the structured one on the full latent and
    one random prefix in every step. Steps are optimisation steps, the same for every arm;
    `usit_checkpoints` evenly spaced evaluations, a multiple of 4: arm (i) (4x the tokens) then has a checkpoint at
    a quarter of the steps and a per_pass run (2 passes) at half, where their compute equals the one-pass runs'
    final compute. Every arm runs with every seed of `seeds`; the autoencoders with seed 0. `smoke`: a reduced run
    (the smoke test, the pilot) that may have one seed.

    Checked on construction (ValueError / TypeError naming the field): the counts as in every mode; both latents
    fit the resolution and have the same number of values, at least `REGIME_MIN_COMPRESSION` times fewer than the
    pixels; the high-channel latent has 4x the channels (so a quarter of the tokens) and prefixes (`sweep_prefixes`);
    `REGIME_USIT_CONFIG` is at least twice as wide as its channels; at least 2 seeds unless `smoke`.
    """

    resolution: int
    num_train_images: int
    num_heldout_images: int
    ae_steps: int
    ae_batch_size: int
    usit_steps: int
    usit_checkpoints: int
    usit_batch_size: int
    seeds: tuple[int, ...]
    num_samples: int
    sample_steps: int
    classifier_steps: int
    baseline_latent: tuple[int, int] = (16, 32)
    high_latent: tuple[int, int] = (32, 128)
    ae_deep_width: int = 128
    ae_learning_rate: float = 1e-3
    usit_learning_rate: float = 1e-3
    smoke: bool = False
    # the structured autoencoder reconstructs from the full latent and one random prefix in every step (official
    # `always_sample_max_channel`, dc_gen/aecore/trainer.py): one uniform prefix of 16 per step left its full latent
    # 4 dB behind the plain one after 3000 steps (results/regime/pilot.md, section 5)
    ae_full_latent_every_step: bool = True

    def __post_init__(self) -> None:
        _check_budget(self, _BUDGET_FIELDS, min_checkpoints=4)
        if self.usit_checkpoints % 4 or self.usit_steps % self.usit_checkpoints:
            raise invalid(
                "usit_checkpoints",
                self.usit_checkpoints,
                f"must be a multiple of 4 dividing usit_steps={self.usit_steps} (arm (i) is compared at a quarter "
                "of the steps, per_pass at half: equal compute)",
            )
        _check_seeds("seeds", self.seeds)
        if len(self.seeds) < 2 and not self.smoke:
            raise invalid("seeds", self.seeds, "the regime's arms need at least 2 seeds")
        check_int("resolution", self.resolution, minimum=16)
        for name in ("baseline_latent", "high_latent"):
            f, c = getattr(self, name)
            autoencoder_config(f)
            check_int(f"{name} channels", c, minimum=1)
            if self.resolution % f:
                raise invalid(name, getattr(self, name), f"f must divide the resolution {self.resolution}")
        values = {name: self.latent_values(getattr(self, name)) for name in ("baseline_latent", "high_latent")}
        if values["baseline_latent"] != values["high_latent"]:
            raise invalid("high_latent", self.high_latent, f"must have as many values as the baseline ({values})")
        if self.high_latent[1] != 4 * self.baseline_latent[1]:
            raise invalid("high_latent", self.high_latent, "must have 4x the baseline's channels")
        compression = 3 * self.resolution**2 / values["high_latent"]
        if compression < REGIME_MIN_COMPRESSION:
            raise invalid("resolution", self.resolution, f"the latents compress {compression:g}x, need >= 16x")
        sweep_prefixes(self.high_latent[1])
        if usit_hidden_size(REGIME_USIT_CONFIG) < 2 * self.high_latent[1]:
            raise invalid("REGIME_USIT_CONFIG", REGIME_USIT_CONFIG, "must be >= 2x as wide as the latent channels")

    def latent_values(self, latent: tuple[int, int]) -> int:
        f, c = latent
        return (self.resolution // f) ** 2 * c

    @property
    def compression(self) -> float:
        """Pixel values per latent value (both latents)."""
        return 3 * self.resolution**2 / self.latent_values(self.high_latent)

    @property
    def largest_channels(self) -> int:
        """The high-channel latent's c (every prefix of its plain autoencoder is evaluated, as in the sweep)."""
        return self.high_latent[1]

    def tokens(self, autoencoder: SweepAutoencoder) -> int:
        """Latent tokens per image of a transformer on `autoencoder`'s latents (patch size 1): (resolution / f)^2."""
        return (self.resolution // autoencoder.spatial_compression) ** 2

    def autoencoders(self) -> list[SweepAutoencoder]:
        """The structured and the plain high-channel autoencoder, then the plain baseline one."""
        (fb, cb), (fh, ch) = self.baseline_latent, self.high_latent
        width = self.ae_deep_width
        return [
            SweepAutoencoder(ch, structured=True, spatial_compression=fh, deep_width=width),
            SweepAutoencoder(ch, structured=False, spatial_compression=fh, deep_width=width),
            SweepAutoencoder(cb, structured=False, spatial_compression=fb, deep_width=width),
        ]

    def arm(self, arm: str, seed: int) -> SweepRun:
        """The diffusion run of arm `arm` (`REGIME_ARMS`) with `seed`."""
        struct_high, plain_high, plain_base = self.autoencoders()
        cells = {
            "i": (plain_base, "plain"),
            "ii": (plain_high, "plain"),
            "iii": (struct_high, "plain"),
            "iv": (struct_high, "per_pass"),
            "v": (struct_high, "per_sample"),
        }
        if arm not in cells:
            raise invalid("arm", arm, f"choose one of {list(REGIME_ARMS)}")
        return SweepRun(*cells[arm], seed)

    def runs(self) -> list[SweepRun]:
        """Every arm for every seed, most expensive first (the job pool starts them in this order): (i) (4x the
        tokens), (iv) (2 passes), then (ii), (iii), (v)."""
        return [self.arm(arm, seed) for arm in ("i", "iv", "ii", "iii", "v") for seed in self.seeds]

    def arm_of(self, run_name: str) -> str:
        """The arm (`REGIME_ARMS`) of a run name (`SweepRun.name`)."""
        for arm in REGIME_ARMS:
            if self.arm(arm, self.seeds[0]).name == run_name:
                return arm
        raise invalid("run_name", run_name, "is not a run of this regime mode")


# Budget of `--mode regime` (`python -m examples.toy.measure_regime --recorded examples/toy/results/regime/budget.json`
# prints it; how each cost was measured: its docstring and results/regime/pilot.md): 3 autoencoders of 3000 steps
# (~0.9-1.0 s per step at 64 px), 10 diffusion runs of 6000 steps (arm (i) ~0.68 s per step, (iv) ~0.47, the others
# ~0.25), 2 jobs at a time: ~4.6 h; then 80 checkpoints x 2 guidance scales x 400 samples (~1.2 h), the classifier
# (~0.3 h) and the reconstruction table (~0.3 h). Estimated total: ~6.4 h on an otherwise idle 2-core machine.


def resolution_of(settings) -> int:
    """The image size of a mode: `RegimeSettings.resolution`, `RESOLUTION` (32 px) for every other mode."""
    return settings.resolution if isinstance(settings, RegimeSettings) else RESOLUTION


def usit_config_of(settings) -> dict:
    """The USiT config of a sweep or regime mode: `REGIME_USIT_CONFIG` for `RegimeSettings`, else `USIT_CONFIG`."""
    return REGIME_USIT_CONFIG if isinstance(settings, RegimeSettings) else USIT_CONFIG


REGIME_MODES: dict[str, RegimeSettings] = {
    "regime-smoke": RegimeSettings(
        resolution=64,
        num_train_images=40,
        num_heldout_images=20,
        ae_steps=2,
        ae_batch_size=8,
        usit_steps=4,
        usit_checkpoints=4,
        usit_batch_size=8,
        seeds=(0,),
        num_samples=20,
        sample_steps=2,
        classifier_steps=5,
        smoke=True,
    ),
    "regime": RegimeSettings(  # how this budget was chosen: examples/toy/results/regime/pilot.md
        resolution=64,
        num_train_images=4000,
        num_heldout_images=500,
        ae_steps=3000,
        ae_batch_size=32,
        usit_steps=6000,
        usit_checkpoints=8,
        usit_batch_size=64,
        seeds=(0, 1),
        num_samples=400,
        sample_steps=20,
        classifier_steps=2000,
    ),
}


# The built-in default (`--mode default`, `default-smoke`): the pipeline bundled as dc_ae_hf/assets/toy-dcae15-shapes.
# One structured autoencoder (Eq. 1, `CHANNEL_CHOICES`) and one longer diffusion run of a larger USiT with the plain
# objective (`--no_augmented`: the full latent only, which is all the demo samples; chosen by the pilot in
# examples/toy/results/default/pilot.md over one-pass augmented training, 0.320 against 0.237 at 4000 steps),
# evaluated at every checkpoint by a classifier trained for longer than in the other modes (its held-out accuracy on
# real images is reported beside every number).
DEFAULT_RUN = "struct_plain"  # the `run` of the evaluation rows; folder `usit/struct_plain_seed<seed>`
# num_layers 6 = 3 in-blocks, 1 mid-block, 3 out-blocks, hidden 128 (4 heads of 32): ~1.5M parameters; one
# training step at batch 64 takes ~2.2x the time of one of USIT_CONFIG's (4.2 vs 9.5 steps/s on the 2 cores).
DEFAULT_USIT_CONFIG = {**USIT_CONFIG, "num_layers": 6, "attention_head_dim": 32}


@dataclass(frozen=True)
class DefaultSettings:
    """Budget of a built-in-default mode. Steps are optimisation steps; `usit_checkpoints` evenly spaced
    evaluations; `seed` seeds the diffusion run (the autoencoder uses seed 0 as in every mode); `target_accuracy`
    is the guided (CFG 3) class accuracy the bundled pipeline is meant to reach, stated in its card either way;
    `usit_warmup_steps` fixes the diffusion run's LR and EMA warm-up (default: 5% of `usit_steps`), so a run can be
    lengthened by resuming it (a resume refuses a changed warm-up).

    Checked on construction (ValueError / TypeError naming the field): counts are positive ints, the image sets
    hold at least one image per class, at most one checkpoint per step, the seed an int >= 0, the learning rates
    finite numbers > 0, the target in (0, 1] and the warm-up, when given, in [1, `usit_steps`].
    """

    num_train_images: int
    num_heldout_images: int
    ae_steps: int
    ae_batch_size: int
    usit_steps: int
    usit_checkpoints: int
    usit_batch_size: int
    seed: int
    num_samples: int
    sample_steps: int
    classifier_steps: int
    ae_learning_rate: float = 1e-3
    usit_learning_rate: float = 1e-3
    target_accuracy: float = 0.8
    usit_warmup_steps: int | None = None  # LR and EMA warm-up of the diffusion run; None: 5% of it (as every mode)

    def __post_init__(self) -> None:
        _check_budget(self, _BUDGET_FIELDS)
        check_int("seed", self.seed, minimum=0)
        if self.usit_warmup_steps is not None:
            check_int("usit_warmup_steps", self.usit_warmup_steps, minimum=1, maximum=self.usit_steps)
        check_number("target_accuracy", self.target_accuracy, minimum=0, exclusive_minimum=True, maximum=1)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds of its diffusion runs (one), as the other modes name them."""
        return (self.seed,)


# Budget of `--mode default` on the 2-core CPU: data 31 s, the autoencoder 640 s (3000 steps) and its cache 67 s
# (measured on 2026-12-01, results of that run in git history), 32000 diffusion steps 5354 s (~6 steps/s on one
# pinned core, `taskset -c 1`, in two pieces of 24000 and 8000 steps, both while other work used the other core at
# times: an estimate; 2026-12-07, examples/toy/results/default/), then in the recipe's process the reconstruction ~60 s, the
# classifier ~440 s (4000 steps) and 16 checkpoints x 2 guidance scales x 500 samples ~390 s: ~2 hours.
DEFAULT_MODES: dict[str, DefaultSettings] = {
    "default-smoke": DefaultSettings(
        num_train_images=80,
        num_heldout_images=20,
        ae_steps=3,
        ae_batch_size=8,
        usit_steps=4,
        usit_checkpoints=2,
        usit_batch_size=8,
        seed=0,
        num_samples=20,
        sample_steps=2,
        classifier_steps=5,
    ),
    "default": DefaultSettings(
        num_train_images=20000,
        num_heldout_images=1000,
        ae_steps=3000,
        ae_batch_size=32,
        usit_steps=32000,
        usit_checkpoints=16,
        usit_batch_size=64,
        seed=0,
        num_samples=500,
        sample_steps=20,
        classifier_steps=4000,
        usit_warmup_steps=1200,  # 5% of the 24000-step run that this one continued (exactly: same warm-up)
    ),
}
