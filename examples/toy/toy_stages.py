"""The recipe's stages before the evaluation: data, model configs, the trainer jobs and the diffusion autoencoders.

Layout of `<output_dir>` (every stage is skipped when its final output exists):

- `data/train`, `data/heldout`: shapes imagefolders (`<split>/train/<class>/<index>.png`), seeds 0 and 1.
- `configs/ae_struct.json`, `configs/ae_plain.json`, `configs/usit.json`: the model configs of the trainers.
- `ae_struct/`, `ae_plain/`: `training/train_dc_ae.py` runs (L1 only; structured: random prefixes c' from
  `CHANNEL_CHOICES`, plain: the full latent only); `<ae>/vae_ema` is the EMA autoencoder, `<ae>/vae_diffusion`
  the same with its measured scaling factor (`write_diffusion_vae`).
- `ae_plain_ft_c<c'>/`: the plain AE's decoder fine-tuned for the first c' channels, encoder frozen (Fig. 3).
- `latents_<ae>/`: `training/cache_latents.py` caches of the training images.
- `usit/<run>_seed<seed>/`: `training/train_usit.py` runs (`toy_settings.RUNS`), with `checkpoint-<step>/` folders
  and the final `pipeline/`.

The channel sweep (`--mode sweep`, `sweep_jobs`: one pool, each cache after its autoencoder, each run after its
cache) writes `configs/<ae>.json`, `<ae>/` (e.g. `ae_plain_c64`, `ae_struct_c128`), `latents_<ae>/` with
`latents_<ae>/vae` (the autoencoder with the scaling factor that `cache_latents.py --scaling_factor auto` measured
on all training images) and `usit/<run>_seed<seed>/` (e.g. `struct_c128_per_pass_seed0`).

The job builders return `toy_scheduler.Job`s whose command lines call the trainers with their documented flags.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from dc_ae_hf.checks import invalid
from dc_ae_hf.data.latent_cache import shard_path
from dc_ae_hf.data.shapes import export_imagefolder
from dc_ae_hf.latents import compute_scaling_factor
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from examples.toy.toy_scheduler import Job, Timings, run_jobs
from examples.toy.toy_settings import (
    AUGMENTED_PASSES,
    AUTOENCODER_CONFIG,
    AUTOENCODERS,
    CHANNEL_CHOICES,
    DEFAULT_RUN,
    LATENT_CHANNELS,
    REPO_ROOT,
    RESOLUTION,
    RUNS,
    SWEEP_OBJECTIVES,
    TRAINING,
    USIT_CONFIG,
    DefaultSettings,
    ModeSettings,
    RegimeSettings,
    SweepSettings,
    resolution_of,
    run_autoencoder,
    sweep_autoencoders,
    sweep_cache_dir,
    sweep_prefixes,
    sweep_runs,
    usit_config_of,
    usit_run_dir,
)

SCALING_FACTOR_IMAGES = 1000  # training images the scaling factor is measured on
# images per latent-cache shard (`cache_latents.py`'s default, named here so that a job can find its last shard)
CACHE_SHARD_SIZE = 1024


def data_exists(out: Path) -> bool:
    """Whether both imagefolders have been written (the held-out set is written last)."""
    return (out / "data" / "heldout" / "train").exists()


def write_data(out: Path, settings: ModeSettings | SweepSettings | RegimeSettings | DefaultSettings) -> None:
    """The shapes dataset at the mode's resolution (`resolution_of`: `RESOLUTION` but for the regime modes): a
    training set (seed 0) and a held-out set (seed 1)."""
    for split, count, seed in (
        ("train", settings.num_train_images, 0),
        ("heldout", settings.num_heldout_images, 1),
    ):
        if not (out / "data" / split / "train").exists():
            export_imagefolder(out / "data" / split, count, seed=seed, resolution=resolution_of(settings))


def write_configs(out: Path, usit_config: Mapping[str, object] = USIT_CONFIG) -> None:
    """The trainers' model configs: both autoencoders (`AUTOENCODER_CONFIG` with their prefixes) and the USiT
    (`usit_config`: `USIT_CONFIG`, or `DEFAULT_USIT_CONFIG` for the built-in default)."""
    (out / "configs").mkdir(parents=True, exist_ok=True)
    for name, choices in (("ae_struct", CHANNEL_CHOICES), ("ae_plain", [LATENT_CHANNELS])):
        config = {**AUTOENCODER_CONFIG, "latent_channel_choices": choices}
        (out / "configs" / f"{name}.json").write_text(json.dumps(config, indent=1))
    (out / "configs" / "usit.json").write_text(json.dumps(dict(usit_config), indent=1))


def trainer_environment() -> dict[str, str]:
    """Environment of the trainer subprocesses: offline Hub, and this checkout first on PYTHONPATH."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {"HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath}


def run_trainer_jobs(jobs: list[Job], out: Path, max_parallel: int, timings: Timings) -> None:
    """Run trainer jobs (`toy_scheduler.run_jobs`): `max_parallel` at a time, logs in `<out>/logs`, from the
    checkout's root with the trainers' environment (`trainer_environment`)."""
    run_jobs(jobs, out / "logs", max_parallel, timings, cwd=REPO_ROOT, environment=trainer_environment())


def trainer_command(script: str, options: Mapping[str, object]) -> list[str]:
    """`python training/<script>` with `options` as flags, in order: ``True`` gives a bare flag (``--use_ema``), a
    list or tuple its items after the flag (``--latent_channel_choices 4 8``), anything else ``str(value)``."""
    command = [sys.executable, str(TRAINING / script)]
    for flag, value in options.items():
        if not flag.startswith("--"):
            raise ValueError(f"option names are command-line flags starting with '--', got {flag!r}")
        if value is True:
            command.append(flag)
        elif value is None or value is False:
            raise TypeError(f"{flag}={value!r}: give True for a bare flag and leave out a flag that is not set")
        elif isinstance(value, (list, tuple)):
            command += [flag, *(str(item) for item in value)]
        else:
            command += [flag, str(value)]
    return command


def _l1_training(
    out: Path, settings: ModeSettings | SweepSettings | RegimeSettings | DefaultSettings
) -> dict[str, object]:
    """Data and loss flags shared by every autoencoder run (L1 only: no perceptual weights offline)."""
    return {
        "--train_data_dir": out / "data" / "train",
        "--resolution": resolution_of(settings),
        "--train_batch_size": settings.ae_batch_size,
        "--lpips_weight": 0,
        "--l1_weight": 1,
    }


def _autoencoder_job(
    out: Path,
    settings: ModeSettings | SweepSettings | RegimeSettings | DefaultSettings,
    name: str,
    choices: list[int],
    full_latent_every_step: bool = False,
) -> Job:
    """One autoencoder run from `configs/<name>.json` into `<out>/<name>`: L1, AdamW with a cosine LR after a short
    warm-up, EMA 0.999, seed 0, prefixes c' drawn from `choices` (one per step; with `full_latent_every_step`, the
    full latent and one drawn prefix)."""
    full = {"--num_channel_samples": 2, "--always_include_full": True} if full_latent_every_step else {}
    options = {
        "--model_config": out / "configs" / f"{name}.json",
        "--latent_channel_choices": choices,
        **full,
        "--max_train_steps": settings.ae_steps,
        "--output_dir": out / name,
        **_l1_training(out, settings),
        "--learning_rate": settings.ae_learning_rate,
        "--lr_scheduler": "cosine",
        "--lr_warmup_steps": min(100, settings.ae_steps // 10),
        "--use_ema": True,
        "--ema_decay": 0.999,
        "--seed": 0,
        "--num_validation_images": 0,
        "--report_to": "none",
        "--checkpointing_steps": max(1, settings.ae_steps // 3),
        "--checkpoints_total_limit": 1,
    }
    command = trainer_command("train_dc_ae.py", options)
    return Job(name, "autoencoders", command, out / name / "vae_ema" / "config.json")


def autoencoder_jobs(
    out: Path, settings: ModeSettings | DefaultSettings, names: tuple[str, ...] = AUTOENCODERS
) -> list[Job]:
    """The structured and the plain autoencoder (or those of `names`): same size, data, steps and seed; cosine LR,
    EMA 0.999."""
    choices = {"ae_struct": CHANNEL_CHOICES, "ae_plain": [LATENT_CHANNELS]}
    for name in names:
        if name not in choices:
            raise invalid("names", names, f"choose from {list(AUTOENCODERS)}")
    return [_autoencoder_job(out, settings, name, choices[name]) for name in names]


def finetune_jobs(out: Path, settings: ModeSettings) -> list[Job]:
    """The paper's fair protocol (Fig. 3): the plain AE's decoder fine-tuned, from its EMA weights and with the
    encoder frozen, to reconstruct from the first c' channels, for each c' in `settings.finetune_channels`.
    Run after `autoencoder_jobs` (they start from `ae_plain/vae_ema`)."""
    common = {
        **_l1_training(out, settings),
        "--learning_rate": settings.ae_learning_rate / 2,
        "--lr_scheduler": "cosine",
        "--use_ema": True,
        "--ema_decay": 0.99,
        "--seed": 0,
        "--freeze_encoder": True,
        "--num_validation_images": 0,
        "--report_to": "none",
        "--max_train_steps": settings.finetune_steps,
        "--checkpointing_steps": max(1, settings.finetune_steps // 2),
        "--checkpoints_total_limit": 1,
    }
    jobs = []
    for c in settings.finetune_channels:
        folder = out / f"ae_plain_ft_c{c}"
        options = {
            "--pretrained_model_name_or_path": out / "ae_plain" / "vae_ema",
            "--latent_channel_choices": c,
            "--output_dir": folder,
            **common,
        }
        command = trainer_command("train_dc_ae.py", options)
        jobs.append(
            Job(folder.name, "plain fine-tunes (Fig. 3 protocol)", command, folder / "vae_ema" / "config.json")
        )
    return jobs


def cache_jobs(out: Path, autoencoders: tuple[str, ...] = AUTOENCODERS) -> list[Job]:
    """fp32 latent caches of the training images, one per autoencoder (after `write_diffusion_vae`)."""
    jobs = []
    for ae in autoencoders:
        options = {
            "--vae": out / ae / "vae_diffusion",
            "--train_data_dir": out / "data" / "train",
            "--resolution": RESOLUTION,
            "--output_dir": out / f"latents_{ae}",
            "--batch_size": 100,
            "--latent_dtype": "float32",
        }
        command = trainer_command("cache_latents.py", options)
        jobs.append(Job(f"cache_{ae}", "latent caches", command, out / f"latents_{ae}" / "metadata.json"))
    return jobs


def usit_command(
    out: Path,
    cache: Path,
    objective: dict[str, object],
    folder: Path,
    seed: int,
    settings: ModeSettings | SweepSettings | RegimeSettings | DefaultSettings,
    overrides: Mapping[str, object] | None = None,
) -> list[str]:
    """`train_usit.py` on the latent cache `cache` with the objective flags `objective`, into `folder`: LR 1e-3
    after a 5% warm-up, betas (0.9, 0.999), clip 1, EMA 0.999 with the same warm-up (settings for a run of a few
    thousand steps), `settings.usit_checkpoints` evenly spaced checkpoints, one sample grid at the end. `overrides`
    replaces or adds flags (a pilot's variant: another `--model_config`, `--lr_scheduler`, ...)."""
    warmup = max(1, settings.usit_steps // 20)  # LR and EMA warm-up: 5% of the run
    options = {
        "--latent_cache_dir": cache,
        "--model_config": out / "configs" / "usit.json",
        **objective,
        "--output_dir": folder,
        "--seed": seed,
        "--max_train_steps": settings.usit_steps,
        "--checkpointing_steps": max(1, settings.usit_steps // settings.usit_checkpoints),
        "--validation_steps": settings.usit_steps,
        "--validation_solver": "euler",
        "--validation_num_inference_steps": max(2, settings.sample_steps),
        "--train_batch_size": settings.usit_batch_size,
        "--learning_rate": settings.usit_learning_rate,
        "--lr_warmup_steps": warmup,
        "--adam_beta1": 0.9,
        "--adam_beta2": 0.999,
        "--max_grad_norm": 1.0,
        "--ema_decay": 0.999,
        "--ema_warmup_steps": warmup,
        "--report_to": "none",
        **(overrides or {}),
    }
    return trainer_command("train_usit.py", options)


def usit_jobs(out: Path, settings: ModeSettings) -> list[Job]:
    """The diffusion runs of `RUNS` for every seed, each after its autoencoder's latent cache (`usit_command`).

    `struct_aug` trains with paper Eq. 2 (`--num_channel_samples 2 --always_include_full`: the full latent plus one
    random prefix, `AUGMENTED_PASSES` passes per step), the others with `--no_augmented`. The `struct_aug` jobs come
    first so that the expensive and the cheap runs interleave.
    """
    jobs = []
    for seed in settings.seeds:
        for run in RUNS:
            ae = run_autoencoder(run)
            if run == "struct_aug":
                objective = {
                    "--num_channel_samples": AUGMENTED_PASSES,
                    "--always_include_full": True,
                    "--latent_channel_choices": CHANNEL_CHOICES,
                }
            else:
                objective = {"--no_augmented": True}
            folder = usit_run_dir(out, run, seed)
            command = usit_command(out, out / f"latents_{ae}", objective, folder, seed, settings)
            marker = folder / "pipeline" / "model_index.json"
            jobs.append(Job(f"usit_{run}_seed{seed}", "diffusion", command, marker, after=(f"cache_{ae}",)))
    return sorted(jobs, key=lambda job: "struct_aug" not in job.name)  # stable: seeds stay in order


def write_diffusion_vae(out: Path, ae: str, train_images: torch.Tensor) -> None:
    """Save `<ae>/vae_ema` as `<ae>/vae_diffusion` with scaling_factor = 1 / std of its full latent on the first
    `SCALING_FACTOR_IMAGES` training images (`dc_ae_hf.latents.compute_scaling_factor`), so the diffusion model sees
    unit-variance latents (the trainer keeps the starting config's factor; docs/training.md). Skipped when done."""
    target = out / ae / "vae_diffusion"
    if (target / "config.json").exists():
        return
    vae = AutoencoderDC15.from_pretrained(out / ae / "vae_ema").eval()
    factor = compute_scaling_factor(vae, train_images[:SCALING_FACTOR_IMAGES].split(200))
    vae.register_to_config(scaling_factor=factor)
    vae.save_pretrained(target)


# The built-in default (`--mode default`): one structured autoencoder, its cache, one diffusion run (one job pool).


def default_jobs(out: Path, settings: DefaultSettings) -> list[Job]:
    """After `autoencoder_jobs(out, settings, ("ae_struct",))` and `write_diffusion_vae`: the structured latent
    cache (done when its last shard is written; `metadata.json` comes first) and, after it, the `DEFAULT_RUN`
    diffusion run: `configs/usit.json` (`write_configs(out, DEFAULT_USIT_CONFIG)`) with the plain objective (the
    full latent only, `--no_augmented`) and the warm-up `settings.usit_warmup_steps` when given."""
    (cache,) = cache_jobs(out, ("ae_struct",))
    last_shard = shard_path(out / "latents_ae_struct", -(-settings.num_train_images // CACHE_SHARD_SIZE) - 1)
    command = cache.command + ["--shard_size", str(CACHE_SHARD_SIZE)]
    cache = Job(cache.name, cache.stage, command, last_shard)
    objective = sweep_objective_flags("plain", CHANNEL_CHOICES)
    folder = usit_run_dir(out, DEFAULT_RUN, settings.seed)
    warmup = settings.usit_warmup_steps
    overrides = None if warmup is None else {"--lr_warmup_steps": warmup, "--ema_warmup_steps": warmup}
    command = usit_command(out, out / "latents_ae_struct", objective, folder, settings.seed, settings, overrides)
    marker = folder / "pipeline" / "model_index.json"
    return [cache, Job(f"usit_{DEFAULT_RUN}_seed{settings.seed}", "diffusion", command, marker, after=(cache.name,))]


# The channel sweep (`--mode sweep`): its own configs and jobs, in one job pool (autoencoder -> cache -> diffusion).


def write_sweep_configs(out: Path, settings: SweepSettings | RegimeSettings) -> None:
    """`configs/<ae>.json` for every sweep (or regime) autoencoder (`SweepAutoencoder.config`: `AUTOENCODER_CONFIG`
    or its f16 / f32 version, with its latent channels and prefixes) and `configs/usit.json` (`usit_config_of`:
    `USIT_CONFIG`, or `REGIME_USIT_CONFIG`; the latent channels come from each cache)."""
    (out / "configs").mkdir(parents=True, exist_ok=True)
    for ae in sweep_autoencoders(settings):
        (out / "configs" / f"{ae.name}.json").write_text(json.dumps(ae.config, indent=1))
    (out / "configs" / "usit.json").write_text(json.dumps(usit_config_of(settings), indent=1))


def sweep_autoencoder_jobs(out: Path, settings: SweepSettings | RegimeSettings) -> list[Job]:
    """Every sweep autoencoder (`sweep_autoencoders`), with the same data, steps, seed and optimiser; a regime
    mode's structured one with the full latent in every step (`RegimeSettings.ae_full_latent_every_step`)."""
    full = isinstance(settings, RegimeSettings) and settings.ae_full_latent_every_step
    return [
        _autoencoder_job(out, settings, ae.name, ae.channel_choices, full and ae.structured)
        for ae in sweep_autoencoders(settings)
    ]


def sweep_cache_jobs(out: Path, settings: SweepSettings | RegimeSettings) -> list[Job]:
    """The latent cache of every sweep autoencoder, after it is trained: `cache_latents.py --scaling_factor auto`
    with `--scaling_factor_images` = all training images measures 1 / std of the full latent on the whole (class
    balanced) training set and saves the autoencoder with it to `<cache>/vae`. One shard, whose file is the done
    marker (`metadata.json` is written before any shard, so it cannot say that the cache is complete)."""
    jobs = []
    for ae in sweep_autoencoders(settings):
        cache = sweep_cache_dir(out, ae)
        options = {
            "--vae": out / ae.name / "vae_ema",
            "--train_data_dir": out / "data" / "train",
            "--resolution": resolution_of(settings),
            "--output_dir": cache,
            "--batch_size": 100,
            "--latent_dtype": "float32",
            "--scaling_factor": "auto",
            "--scaling_factor_images": settings.num_train_images,
            "--shard_size": settings.num_train_images,
        }
        command = trainer_command("cache_latents.py", options)
        jobs.append(Job(f"cache_{ae.name}", "latent caches", command, shard_path(cache, 0), after=(ae.name,)))
    return jobs


def sweep_objective_flags(objective: str, channel_choices: list[int]) -> dict[str, object]:
    """`train_usit.py` flags of a sweep objective: `plain` = `--no_augmented`; `per_pass` = the official augmented
    schedule with the full latent plus one random prefix per step (`AUGMENTED_PASSES` passes); `per_sample` = one
    pass, a random prefix per sample and the full latent on half of each batch."""
    if objective == "plain":
        return {"--no_augmented": True}
    if objective == "per_pass":
        return {
            "--num_channel_samples": AUGMENTED_PASSES,
            "--always_include_full": True,
            "--latent_channel_choices": channel_choices,
        }
    if objective == "per_sample":
        return {
            "--channel_sampling": "per_sample",
            "--always_include_full": True,
            "--latent_channel_choices": channel_choices,
        }
    raise invalid("objective", objective, f"choose one of {list(SWEEP_OBJECTIVES)}")


def sweep_usit_jobs(out: Path, settings: SweepSettings | RegimeSettings) -> list[Job]:
    """Every sweep diffusion run (`sweep_runs`, most expensive first), each after its autoencoder's cache; the
    augmented ones draw c' from `sweep_prefixes` of their latent (structured or not)."""
    jobs = []
    for run in sweep_runs(settings):
        ae = run.autoencoder
        objective = sweep_objective_flags(run.objective, sweep_prefixes(ae.latent_channels))
        folder = run.folder(out)
        command = usit_command(out, sweep_cache_dir(out, ae), objective, folder, run.seed, settings)
        marker = folder / "pipeline" / "model_index.json"
        jobs.append(Job(f"usit_{run.name}_seed{run.seed}", "diffusion", command, marker, after=(f"cache_{ae.name}",)))
    return jobs


def sweep_jobs(out: Path, settings: SweepSettings | RegimeSettings) -> list[Job]:
    """The whole sweep (or regime mode) as one job list, in priority order: the autoencoders (largest c first),
    their caches, the diffusion runs (most expensive first). A cache starts when its autoencoder is done, a run
    when its cache is."""
    return sweep_autoencoder_jobs(out, settings) + sweep_cache_jobs(out, settings) + sweep_usit_jobs(out, settings)
