"""CPU-scale reproduction of the two DC-AE 1.5 effects on the procedural shapes dataset, with the real trainers.

    python examples/toy/run_recipe.py --mode quick --output_dir outputs/toy          # <= 30 min on 2 CPU cores
    python examples/toy/run_recipe.py --mode full --output_dir outputs/toy-full     # <= 2 h, 2 seeds, resumable
    python examples/toy/run_recipe.py --mode smoke --output_dir /tmp/toy-smoke      # a few steps (the test)

Stages (each skipped when its final output exists; the trainers resume from their checkpoints when re-run):

1. data: the shapes dataset (`dc_ae_hf.data.shapes`) at 32 px, a training set (seed 0) and a held-out set (seed 1).
2. autoencoders (`training/train_dc_ae.py`, L1 only, no LPIPS: no perceptual weights are available offline): a
   structured one (paper Eq. 1, c' drawn from 4, 8, ..., 32) and a plain one (full latent only), same size, data,
   steps and seed; f8 -> 4x4x32 latents. Plain fine-tunes for the paper's fair protocol (Fig. 3): the plain AE's
   decoder is fine-tuned from its EMA weights to reconstruct from the first c' channels (`--freeze_encoder
   --latent_channel_choices c'`: the latent space stays as it is, only the decoder adapts).
3. scaling factors (1 / std of the full latent on training images, measured here) and latent caches
   (`training/cache_latents.py`).
4. diffusion (`training/train_usit.py`): USiT on the structured latents with augmented training (paper Eq. 2:
   `--num_channel_samples 2 --always_include_full`, i.e. one full pass and one random prefix, 2 passes per step),
   on the structured latents without it (`--no_augmented`), and on the plain latents (`--no_augmented`). The
   optimiser is the official one (AdamW, constant LR after warm-up, EMA) with settings for a run of a few thousand
   steps instead of 4M images: LR 1e-3, betas (0.9, 0.999), warm-up 5% of the steps, EMA 0.999.
5. evaluation (in this process): reconstruction PSNR/SSIM per c' on held-out images; a small classifier trained on
   the structured AE's reconstructions of the training images; class accuracy and classifier Frechet distance of
   generated samples at every diffusion checkpoint, without guidance and with classifier-free guidance
   (`EVAL_GUIDANCE_SCALES`; reference: the run's own AE's reconstructions of held-out images); plots,
   reconstruction grids, `results.md`, `results.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere in the checkout
    sys.path.insert(0, str(REPO_ROOT))

from dc_ae_hf.data.images import load_image  # noqa: E402
from dc_ae_hf.data.shapes import SHAPE_CLASSES, export_imagefolder  # noqa: E402
from dc_ae_hf.diffusion_training import write_pipeline_card  # noqa: E402
from dc_ae_hf.metrics.autoencoder import evaluate_autoencoder  # noqa: E402
from dc_ae_hf.metrics.classifier import classifier_metrics, classifier_outputs, train_classifier  # noqa: E402
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15  # noqa: E402
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel  # noqa: E402
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline  # noqa: E402
from dc_ae_hf.visualization import prefix_reconstruction_grid  # noqa: E402

TRAINING = REPO_ROOT / "training"
RESOLUTION = 32
LATENT_CHANNELS = 32
CHANNEL_CHOICES = [4, 8, 12, 16, 20, 24, 28, 32]
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


@dataclass(frozen=True)
class ModeSettings:
    """Budget of one mode. Steps are optimisation steps; `usit_checkpoints` evenly spaced evaluations."""

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
    ),  # fmt: skip
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
    ),  # fmt: skip
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
    ),  # fmt: skip
}


# ---------------------------------------------------------------------------------------------------------------
# subprocess jobs (the real training scripts), run a few at a time with their dependencies
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    name: str
    stage: str
    command: list[str]
    done_marker: Path  # the job is skipped when this exists
    after: tuple[str, ...] = ()


def run_jobs(jobs: list[Job], log_dir: Path, max_parallel: int, timings: dict) -> None:
    """Run `jobs` (in list order of priority, respecting `after`) with at most `max_parallel` at once.

    Each job gets OMP_NUM_THREADS = cores // running jobs (at least 1) and logs to `log_dir/<name>.log`; a failing
    job stops everything with its log tail. Wall times go to `timings[name]`.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    done = {job.name for job in jobs if job.done_marker.exists()}
    for name in done:
        print(f"[skip] {name}: output exists", flush=True)
    pending = [job for job in jobs if job.name not in done]
    running: dict[str, tuple[subprocess.Popen, float, object, Job]] = {}
    cores = os.cpu_count() or 1
    while pending or running:
        ready = [job for job in pending if all(dep in done for dep in job.after)]
        while ready and len(running) < max_parallel:
            job = ready.pop(0)
            pending.remove(job)
            threads = max(1, cores // max(1, min(max_parallel, len(running) + 1 + len(ready))))
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}  # fmt: skip
            log = open(log_dir / f"{job.name}.log", "a")  # noqa: SIM115 (closed when the job ends)
            log.write(f"\n$ {' '.join(job.command)}\n")
            log.flush()
            print(f"[start] {job.name} ({threads} thread(s))", flush=True)
            process = subprocess.Popen(job.command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[job.name] = (process, time.time(), log, job)
        if not running:
            raise RuntimeError(f"jobs {[j.name for j in pending]} wait for dependencies that never ran")
        time.sleep(0.5)
        for name, (process, start, log, job) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[name]
            if process.returncode != 0 or not job.done_marker.exists():
                for other, *_ in running.values():
                    other.terminate()
                tail = (log_dir / f"{name}.log").read_text()[-4000:]
                raise RuntimeError(f"job {name} failed (exit {process.returncode}); log tail:\n{tail}")
            timings[name] = {
                "stage": job.stage,
                "seconds": round(time.time() - start, 1),
                "start": start,
                "end": time.time(),
            }
            done.add(name)
            print(f"[done] {name} in {timings[name]['seconds']:.0f} s", flush=True)


def python(script: str, *args) -> list[str]:
    return [sys.executable, str(TRAINING / script), *[str(a) for a in args]]


def autoencoder_jobs(out: Path, settings: ModeSettings) -> list[Job]:
    common = ["--train_data_dir", out / "data" / "train", "--resolution", RESOLUTION, "--train_batch_size",
              settings.ae_batch_size, "--lpips_weight", 0, "--l1_weight", 1, "--learning_rate", settings.ae_learning_rate,
              "--lr_scheduler", "cosine", "--lr_warmup_steps", min(100, settings.ae_steps // 10), "--use_ema",
              "--ema_decay", 0.999, "--seed", 0, "--num_validation_images", 0, "--report_to", "none",
              "--checkpointing_steps", max(1, settings.ae_steps // 3), "--checkpoints_total_limit", 1]  # fmt: skip
    jobs = []
    for name, choices in (("ae_struct", CHANNEL_CHOICES), ("ae_plain", [LATENT_CHANNELS])):
        config = out / "configs" / f"{name}.json"
        jobs.append(Job(name, "autoencoders", python(
            "train_dc_ae.py", "--model_config", config, "--latent_channel_choices", *choices,
            "--max_train_steps", settings.ae_steps, "--output_dir", out / name, *common),
            out / name / "vae_ema" / "config.json"))  # fmt: skip
    return jobs


def finetune_jobs(out: Path, settings: ModeSettings) -> list[Job]:
    common = ["--train_data_dir", out / "data" / "train", "--resolution", RESOLUTION, "--train_batch_size",
              settings.ae_batch_size, "--lpips_weight", 0, "--l1_weight", 1, "--learning_rate",
              settings.ae_learning_rate / 2, "--lr_scheduler", "cosine", "--use_ema", "--ema_decay", 0.99, "--seed", 0,
              "--freeze_encoder",
              "--num_validation_images", 0, "--report_to", "none", "--max_train_steps", settings.finetune_steps,
              "--checkpointing_steps", max(1, settings.finetune_steps // 2), "--checkpoints_total_limit", 1]  # fmt: skip
    return [
        Job(
            f"ae_plain_ft_c{c}",
            "plain fine-tunes (Fig. 3 protocol)",
            python(
                "train_dc_ae.py",
                "--pretrained_model_name_or_path",
                out / "ae_plain" / "vae_ema",
                "--latent_channel_choices",
                c,
                "--output_dir",
                out / f"ae_plain_ft_c{c}",
                *common,
            ),
            out / f"ae_plain_ft_c{c}" / "vae_ema" / "config.json",
        )  # fmt: skip
        for c in settings.finetune_channels
    ]


def cache_jobs(out: Path) -> list[Job]:
    return [
        Job(
            f"cache_{ae}",
            "latent caches",
            python(
                "cache_latents.py",
                "--vae",
                out / ae / "vae_diffusion",
                "--train_data_dir",
                out / "data" / "train",
                "--resolution",
                RESOLUTION,
                "--output_dir",
                out / f"latents_{ae}",
                "--batch_size",
                100,
                "--latent_dtype",
                "float32",
            ),
            out / f"latents_{ae}" / "metadata.json",
        )  # fmt: skip
        for ae in ("ae_struct", "ae_plain")
    ]


def usit_run_dir(out: Path, run: str, seed: int) -> Path:
    return out / "usit" / f"{run}_seed{seed}"


def usit_jobs(out: Path, settings: ModeSettings) -> list[Job]:
    every = max(1, settings.usit_steps // settings.usit_checkpoints)
    warmup = max(1, settings.usit_steps // 20)  # LR and EMA warm-up: 5% of the run
    jobs = []
    for seed in settings.seeds:
        for run in RUNS:
            ae = "ae_struct" if run.startswith("struct") else "ae_plain"
            objective = (["--num_channel_samples", AUGMENTED_PASSES, "--always_include_full",
                          "--latent_channel_choices", *CHANNEL_CHOICES]
                         if run == "struct_aug" else ["--no_augmented"])  # fmt: skip
            folder = usit_run_dir(out, run, seed)
            jobs.append(Job(f"usit_{run}_seed{seed}", "diffusion", python(
                "train_usit.py", "--latent_cache_dir", out / f"latents_{ae}", "--model_config",
                out / "configs" / "usit.json", *objective, "--output_dir", folder, "--seed", seed,
                "--max_train_steps", settings.usit_steps, "--checkpointing_steps", every, "--validation_steps",
                settings.usit_steps, "--validation_solver", "euler", "--validation_num_inference_steps",
                max(2, settings.sample_steps), "--train_batch_size", settings.usit_batch_size,
                "--learning_rate", settings.usit_learning_rate, "--lr_warmup_steps", warmup,
                "--adam_beta1", 0.9, "--adam_beta2", 0.999, "--max_grad_norm", 1.0, "--ema_decay", 0.999,
                "--ema_warmup_steps", warmup, "--report_to", "none"),
                folder / "pipeline" / "model_index.json", after=(f"cache_{ae}",)))  # fmt: skip
    # interleave the cheap and the expensive runs so two parallel slots stay busy
    return sorted(jobs, key=lambda j: "struct_aug" not in j.name)


# ---------------------------------------------------------------------------------------------------------------
# in-process stages
# ---------------------------------------------------------------------------------------------------------------
def load_imagefolder(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of an exported shapes imagefolder as ((N, 3, 32, 32) in [-1, 1], (N,) labels)."""
    images, labels = [], []
    for label, name in enumerate(SHAPE_CLASSES):
        for path in sorted((root / "train" / name).glob("*.png")):
            array = np.asarray(load_image(path), dtype=np.float32)
            images.append(torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1)
            labels.append(label)
    if not images:
        raise ValueError(f"no images under {root}/train/<class>/ (expected an exported shapes imagefolder)")
    return torch.stack(images), torch.tensor(labels)


@torch.no_grad()
def reconstruct(vae: AutoencoderDC15, images: torch.Tensor, channels: int | None = None) -> torch.Tensor:
    """Reconstructions from the first `channels` latent channels (all when None), clamped to [-1, 1]."""
    outputs = []
    for chunk in images.split(200):
        latent = vae.encode(chunk).latent  # (B, C, 4, 4)
        outputs.append(vae.decode(latent[:, :channels] if channels else latent).sample.clamp(-1, 1))
    return torch.cat(outputs)


def write_diffusion_vae(out: Path, ae: str, train_images: torch.Tensor) -> None:
    """Copy the EMA autoencoder with scaling_factor = 1 / std(full latent) measured on training images, so the
    diffusion model sees unit-variance latents (the trainer keeps the starting config's factor; docs/training.md)."""
    target = out / ae / "vae_diffusion"
    if (target / "config.json").exists():
        return
    vae = AutoencoderDC15.from_pretrained(out / ae / "vae_ema").eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent for chunk in train_images[:1000].split(200)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    vae.save_pretrained(target)


def evaluate_autoencoders(out: Path, settings: ModeSettings, heldout: torch.Tensor) -> dict:
    """PSNR/SSIM per c' on held-out images: structured AE, plain AE with trailing channels zeroed, plain AE
    fine-tuned for each c' (Fig. 3 protocol)."""
    batches = list(heldout.split(100))
    struct = AutoencoderDC15.from_pretrained(out / "ae_struct" / "vae_ema").eval()
    plain = AutoencoderDC15.from_pretrained(out / "ae_plain" / "vae_ema").eval()
    results = {
        "structured": evaluate_autoencoder(struct, batches, CHANNEL_CHOICES),
        "plain_zeroed": evaluate_autoencoder(plain, batches, CHANNEL_CHOICES),
        "plain_finetuned": {},
    }
    for c in settings.finetune_channels:
        tuned = AutoencoderDC15.from_pretrained(out / f"ae_plain_ft_c{c}" / "vae_ema").eval()
        results["plain_finetuned"].update(evaluate_autoencoder(tuned, batches, [c]))
    return {name: {str(c): values for c, values in table.items()} for name, table in results.items()}


@torch.no_grad()
def generate(
    pipe: DCAE15Pipeline, num_samples: int, steps: int, seed: int, guidance_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced samples (euler) as ((N, 3, 32, 32) in [-1, 1], (N,) labels)."""
    labels = torch.arange(num_samples) % len(SHAPE_CLASSES)
    generator = torch.Generator().manual_seed(seed)
    images = []
    for chunk in labels.split(100):
        out = pipe(
            chunk.tolist(),
            guidance_scale=guidance_scale,
            num_inference_steps=steps,
            solver="euler",
            generator=generator,
            output_type="pt",
        ).images  # (B, 3, H, W) in [0, 1]
        images.append(out * 2 - 1)
    return torch.cat(images), labels


def evaluate_diffusion(out: Path, settings: ModeSettings, classifier, references: dict[str, torch.Tensor]) -> list:
    """Class accuracy and classifier FD at every checkpoint of every run (EMA weights), one row per guidance scale
    in `EVAL_GUIDANCE_SCALES`."""
    cache_path = out / "eval" / "diffusion.json"
    rows = json.loads(cache_path.read_text()) if cache_path.exists() else []
    seen = {(r["run"], r["seed"], r["step"], r["guidance_scale"]) for r in rows}
    vaes = {ae: AutoencoderDC15.from_pretrained(out / ae / "vae_diffusion").eval() for ae in ("ae_struct", "ae_plain")}
    for seed in settings.seeds:
        for run in RUNS:
            folder = usit_run_dir(out, run, seed)
            ae = "ae_struct" if run.startswith("struct") else "ae_plain"
            for checkpoint in sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
                step = int(checkpoint.name.split("-")[1])
                scales = [g for g in EVAL_GUIDANCE_SCALES if (run, seed, step, g) not in seen]
                if not scales:
                    continue
                transformer = USiTTransformer2DModel.from_pretrained(checkpoint / "transformer_ema").eval()
                pipe = DCAE15Pipeline(transformer=transformer, vae=vaes[ae])
                pipe.set_progress_bar_config(disable=True)
                passes = step * (AUGMENTED_PASSES if run == "struct_aug" else 1)
                for scale in scales:
                    start = time.time()
                    samples, labels = generate(
                        pipe, settings.num_samples, settings.sample_steps, seed=1000 + seed, guidance_scale=scale
                    )
                    metrics = classifier_metrics(classifier, samples, labels, references[ae])
                    rows.append({"run": run, "seed": seed, "step": step, "passes": passes, "guidance_scale": scale,
                                 **metrics, "eval_seconds": round(time.time() - start, 1)})  # fmt: skip
                    print(f"[eval] {run} seed {seed} step {step} cfg {scale}: {metrics}", flush=True)
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_text(json.dumps(rows, indent=1))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------------------------
def aggregate(
    rows: list[dict], key: str, guidance_scale: float
) -> dict[str, dict[int, tuple[float, float, float, int]]]:
    """run -> step -> (mean, min, max, passes) over seeds, for the rows sampled with `guidance_scale`."""
    rows = [r for r in rows if r["guidance_scale"] == guidance_scale]
    table: dict[str, dict[int, tuple]] = {}
    for run in RUNS:
        steps = sorted({r["step"] for r in rows if r["run"] == run})
        table[run] = {}
        for step in steps:
            values = [r[key] for r in rows if r["run"] == run and r["step"] == step]
            passes = next(r["passes"] for r in rows if r["run"] == run and r["step"] == step)
            table[run][step] = (float(np.mean(values)), float(np.min(values)), float(np.max(values)), passes)
    return table


def stage_wall_times(timings: dict) -> dict[str, float]:
    """Wall time per stage: from the first start to the last end of its jobs (jobs of a stage run in parallel);
    entries without start/end count as the longest such job of their stage."""
    spans: dict[str, list[float]] = {}
    for entry in timings.values():
        if "start" in entry:
            span = spans.setdefault(entry["stage"], [math.inf, -math.inf])
            span[0], span[1] = min(span[0], entry["start"]), max(span[1], entry["end"])
        else:
            span = spans.setdefault(entry["stage"], [0.0, 0.0])
            span[1] = max(span[1], span[0] + entry["seconds"])
    return {stage: round(end - start, 1) for stage, (start, end) in spans.items()}


def bundle(source: Path, target: str, mode: str, settings: ModeSettings, ae_results: dict, rows: list[dict]) -> None:
    """Copy the final struct_aug pipeline to `target` and give it a model card that says what it is: the toy
    recipe's model, loaded from `target` as typed, sampled the way the recipe evaluates it, with its measured
    numbers."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    for config_file in Path(target).glob("*/config.json"):  # diffusers records the local folder it loaded from
        config = json.loads(config_file.read_text())
        if config.pop("_name_or_path", None) is not None:
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    pipe = DCAE15Pipeline.from_pretrained(target)
    seed, step = settings.seeds[0], settings.usit_steps
    final = {r["guidance_scale"]: r for r in rows if (r["run"], r["seed"], r["step"]) == ("struct_aug", seed, step)}
    table = ["| guidance | class accuracy | classifier FD |", "|---|---|---|"]
    table += [f"| {g:g} | {final[g]['class_accuracy']:.3f} | {final[g]['classifier_fd']:.1f} |" for g in sorted(final)]
    psnr = ae_results["structured"]
    metrics = (
        f"{settings.num_samples} class-balanced samples (euler, {settings.sample_steps} steps), scored by a small "
        "classifier trained on the autoencoder's reconstructions (`dc_ae_hf/metrics/classifier.py`; chance = 0.1):"
        "\n\n"
        + "\n".join(table)
        + "\n\nAutoencoder, held-out PSNR from the first c' channels: "
        + ", ".join(f"c'={c}: {psnr[str(c)]['psnr']:.2f} dB" for c in (4, 8, 16, LATENT_CHANNELS))
        + ". Comparison with the baselines: `examples/toy/README.md`."
    )
    write_pipeline_card(
        target, pipe, model_name=Path(target).name, repo_id=str(target),
        description=("The built-in default of `dc_ae_hf`: a tiny DC-AE 1.5 (structured latent, paper Eq. 1) and a "
                     "USiT trained with augmented diffusion training (paper Eq. 2) on the procedural 32 px shapes "
                     "dataset (`dc_ae_hf/data/shapes.py`), for trying the API offline. It is not a good generator."),
        source=f"`examples/toy/run_recipe.py --mode {mode}`, run `struct_aug`, seed {seed}",
        provenance=(f"Autoencoder: {settings.ae_steps} steps of `training/train_dc_ae.py` (L1, c' in {CHANNEL_CHOICES}) "
                    f"on {settings.num_train_images} images. Transformer: {step} steps of `training/train_usit.py` "
                    f"on the cached latents (batch {settings.usit_batch_size}, the full latent plus one random prefix "
                    "per step), EMA weights. Every command and setting: `examples/toy/run_recipe.py`."),
        metrics_table=metrics, guidance_scale=EVAL_GUIDANCE_SCALES[-1], solver="euler",
        num_inference_steps=settings.sample_steps,
    )  # fmt: skip


def make_plots(path: Path, ae_results: dict, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(21, 9))
    for ax, metric in zip(axes[0, :2], ("psnr", "ssim")):
        for name, style in (("structured", "o-"), ("plain_zeroed", "s--"), ("plain_finetuned", "^:")):
            cs = sorted(int(c) for c in ae_results[name])
            ax.plot(cs, [ae_results[name][str(c)][metric] for c in cs], style, label=name.replace("_", " "))
        ax.set_xlabel("latent channels used c'")
        ax.set_ylabel(f"held-out {metric.upper()}")
        ax.set_title(f"reconstruction {metric.upper()} vs channels")
        ax.grid(alpha=0.3)
        ax.legend()
    unguided, guided = EVAL_GUIDANCE_SCALES
    panels = [(axes[0, 2], "classifier_fd", "step", unguided), (axes[0, 3], "classifier_fd", "passes", unguided),
              (axes[1, 0], "class_accuracy", "step", unguided), (axes[1, 1], "class_accuracy", "passes", unguided),
              (axes[1, 2], "class_accuracy", "step", guided), (axes[1, 3], "class_accuracy", "passes", guided)]  # fmt: skip
    for ax, key, x, scale in panels:
        table = aggregate(rows, key, scale)
        for run in RUNS:
            steps = sorted(table[run])
            if not steps:
                continue
            xs = [step if x == "step" else table[run][step][3] for step in steps]
            mean = [table[run][s][0] for s in steps]
            low = [table[run][s][0] - table[run][s][1] for s in steps]
            high = [table[run][s][2] - table[run][s][0] for s in steps]
            ax.errorbar(xs, mean, yerr=[low, high], marker="o", capsize=3, label=RUN_LABELS[run])
        ax.set_xlabel("optimisation steps" if x == "step" else "forward/backward passes (compute)")
        ax.set_ylabel(key.replace("_", " "))
        ax.set_title(
            f"{key.replace('_', ' ')} (CFG {scale:g}) vs {'steps' if x == 'step' else 'compute'}", fontsize=10
        )
        ax.text(0.01, 0.01, "bars: seed min/max", transform=ax.transAxes, fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_markdown(path: Path, mode: str, results: dict) -> None:
    ae = results["autoencoders"]
    lines = [f"# Toy DC-AE 1.5 recipe results ({mode} mode)", "",
             "## Reconstruction on held-out images (PSNR dB / SSIM)", "",
             "| c' | structured | plain, trailing channels zeroed | plain, decoder fine-tuned for c' |",
             "|---|---|---|---|"]  # fmt: skip
    for c in CHANNEL_CHOICES:
        cells = []
        for name in ("structured", "plain_zeroed", "plain_finetuned"):
            value = ae[name].get(str(c))
            cells.append(f"{value['psnr']:.2f} / {value['ssim']:.3f}" if value else "-")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    clf = results["classifier"]
    lines += ["", f"Full-channel cost of structure: structured minus plain PSNR at c = {LATENT_CHANNELS}: "
              f"{results['structure_cost_psnr_db']:+.2f} dB.", "",
              "## Classifier (trained on the structured AE's reconstructions of training images)", "",
              "| images | class accuracy |", "|---|---|"]  # fmt: skip
    for name, value in clf["accuracy"].items():
        lines.append(f"| {name} | {value:.3f} |")
    lines += ["", "Classifier FD floor (reconstructions of *training* images vs the held-out reference, same N as "
              "the samples): " + ", ".join(f"{k}: {v:.3f}" for k, v in clf["fd_floor"].items()), "",
              f"## Diffusion (EMA weights; euler, {results['settings']['sample_steps']} steps; mean over seeds "
              "[min, max])", "",
              "| run | step | passes | " + " | ".join(f"class accuracy, CFG {g:g} | classifier FD, CFG {g:g}"
                                                     for g in EVAL_GUIDANCE_SCALES) + " |",
              "|---|---|---|" + "---|---|" * len(EVAL_GUIDANCE_SCALES)]  # fmt: skip
    tables = [(aggregate(results["diffusion"], "class_accuracy", g), aggregate(results["diffusion"], "classifier_fd", g))
              for g in EVAL_GUIDANCE_SCALES]  # fmt: skip
    for run in RUNS:
        for step in sorted(tables[0][0][run]):
            cells = [f"{run}", f"{step}", f"{tables[0][0][run][step][3]}"]
            for acc, fd in tables:
                a, f = acc[run][step], fd[run][step]
                cells += [f"{a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}]", f"{f[0]:.1f} [{f[1]:.1f}, {f[2]:.1f}]"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Wall time per stage (s; stages overlap: caches, diffusion runs and plain fine-tunes share one pool "
        f"of {results['max_parallel']} parallel jobs)",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    for stage, seconds in results["stage_seconds"].items():
        lines.append(f"| {stage} | {seconds:.0f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--output_dir", default="outputs/toy", help="runs, logs, checkpoints")
    parser.add_argument("--results_dir", help="where the PNGs/markdown/json go (default: <output_dir>/results)")
    parser.add_argument("--bundle_to", help="also copy the structured + augmented pipeline (seed 0) here")
    parser.add_argument("--max_parallel", type=int, default=2, help="training subprocesses at once")
    args = parser.parse_args(argv)
    if args.max_parallel < 1:
        parser.error(f"--max_parallel must be >= 1, got {args.max_parallel}")
    settings = MODES[args.mode]
    out = Path(args.output_dir).resolve()
    results_dir = Path(args.results_dir).resolve() if args.results_dir else out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    torch.manual_seed(0)

    def timed(name: str, stage: str, fn):
        start = time.time()
        value = fn()
        timings[name] = {"stage": stage, "seconds": round(time.time() - start, 1), "start": start, "end": time.time()}
        timings_path.write_text(json.dumps(timings, indent=1))
        return value

    # 1. data
    def make_data():
        for split, count, seed in (
            ("train", settings.num_train_images, 0),
            ("heldout", settings.num_heldout_images, 1),
        ):
            if not (out / "data" / split / "train").exists():
                export_imagefolder(out / "data" / split, count, seed=seed, resolution=RESOLUTION)

    if not (out / "data" / "heldout" / "train").exists():
        timed("data", "data", make_data)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    for name, choices in (("ae_struct", CHANNEL_CHOICES), ("ae_plain", [LATENT_CHANNELS])):
        config = {**AUTOENCODER_CONFIG, "latent_channel_choices": choices}
        (out / "configs" / f"{name}.json").write_text(json.dumps(config, indent=1))
    (out / "configs" / "usit.json").write_text(json.dumps(USIT_CONFIG, indent=1))

    # 2. autoencoders, then 3./4. scaling factors, caches, diffusion and plain fine-tunes (one job pool)
    run_jobs(autoencoder_jobs(out, settings), out / "logs", args.max_parallel, timings)
    timings_path.write_text(json.dumps(timings, indent=1))
    train_images, train_labels = load_imagefolder(out / "data" / "train")
    heldout_images, heldout_labels = load_imagefolder(out / "data" / "heldout")
    for ae in ("ae_struct", "ae_plain"):
        write_diffusion_vae(out, ae, train_images)
    jobs = cache_jobs(out) + usit_jobs(out, settings) + finetune_jobs(out, settings)
    run_jobs(jobs, out / "logs", args.max_parallel, timings)
    timings_path.write_text(json.dumps(timings, indent=1))

    # 5. evaluation
    def eval_autoencoders():
        return evaluate_autoencoders(out, settings, heldout_images)

    ae_results = timed("eval_autoencoders", "evaluation: autoencoders", eval_autoencoders)
    struct = AutoencoderDC15.from_pretrained(out / "ae_struct" / "vae_ema").eval()
    plain = AutoencoderDC15.from_pretrained(out / "ae_plain" / "vae_ema").eval()
    grid_images = heldout_images[torch.arange(10) * (len(heldout_images) // 10)]
    grid_channels = [4, 8, 16, 24, 32]
    prefix_reconstruction_grid(struct, grid_images, grid_channels).save(results_dir / "prefix_grid_structured.png")
    prefix_reconstruction_grid(plain, grid_images, grid_channels).save(results_dir / "prefix_grid_plain.png")

    def make_classifier():
        recon_train = reconstruct(struct, train_images)
        model = train_classifier(recon_train, train_labels, len(SHAPE_CLASSES), steps=settings.classifier_steps)
        references = {"ae_struct": reconstruct(struct, heldout_images), "ae_plain": reconstruct(plain, heldout_images)}
        accuracy = {}
        for name, images in (("held-out real images", heldout_images),
                             ("held-out structured-AE reconstructions", references["ae_struct"]),
                             ("held-out plain-AE reconstructions", references["ae_plain"])):  # fmt: skip
            logits, _ = classifier_outputs(model, images)
            accuracy[name] = (logits.argmax(1) == heldout_labels).float().mean().item()
        floor = {}
        # as many reconstructions of training images as samples per checkpoint, class-balanced like the samples
        # (the imagefolder is sorted by class: evenly spaced indices take every class equally)
        subset = torch.linspace(0, len(train_images) - 1, min(settings.num_samples, len(train_images))).long()
        for ae, vae in (("ae_struct", struct), ("ae_plain", plain)):
            recon = reconstruct(vae, train_images[subset])
            floor[ae] = classifier_metrics(model, recon, train_labels[subset], references[ae])["classifier_fd"]
        return model, references, {"accuracy": accuracy, "fd_floor": floor, "steps": settings.classifier_steps}

    classifier, references, classifier_info = timed("classifier", "evaluation: classifier", make_classifier)
    rows = evaluate_diffusion(out, settings, classifier, references)
    # summed per evaluation (kept in eval/diffusion.json), so a resumed run reports the time its rows really took
    timings["eval_diffusion"] = {"stage": "evaluation: diffusion samples",
                                 "seconds": round(sum(r["eval_seconds"] for r in rows), 1)}  # fmt: skip
    timings_path.write_text(json.dumps(timings, indent=1))

    # the bundled default pipeline: structured AE + augmented USiT (EMA), id2label = shape names
    source = usit_run_dir(out, "struct_aug", settings.seeds[0]) / "pipeline"
    sample_pipe = DCAE15Pipeline.from_pretrained(source)
    sample_pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    samples = sample_pipe([c for c in SHAPE_CLASSES for _ in range(4)], guidance_scale=EVAL_GUIDANCE_SCALES[-1],
                          solver="euler",
                          num_inference_steps=max(2, settings.sample_steps), generator=generator).images  # fmt: skip
    canvas = Image.new("RGB", (4 * 34 + 2, 10 * 34 + 2), "white")
    for i, image in enumerate(samples):
        canvas.paste(image, (2 + (i % 4) * 34, 2 + (i // 4) * 34))
    canvas.resize((canvas.width * 3, canvas.height * 3), Image.NEAREST).save(results_dir / "samples_struct_aug.png")
    if args.bundle_to:
        bundle(source, args.bundle_to, args.mode, settings, ae_results, rows)

    stage_seconds = stage_wall_times(timings)
    struct_full = ae_results["structured"][str(LATENT_CHANNELS)]["psnr"]
    plain_full = ae_results["plain_zeroed"][str(LATENT_CHANNELS)]["psnr"]
    results = {
        "mode": args.mode,
        "settings": vars(settings),
        "autoencoder_config": AUTOENCODER_CONFIG,
        "usit_config": USIT_CONFIG,
        "channel_choices": CHANNEL_CHOICES,
        "augmented_passes_per_step": AUGMENTED_PASSES,
        "autoencoders": ae_results,
        "structure_cost_psnr_db": struct_full - plain_full,
        "classifier": classifier_info,
        "diffusion": rows,
        "stage_seconds": stage_seconds,
        "job_seconds": timings,
        "max_parallel": args.max_parallel,
    }
    (results_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    write_markdown(results_dir / "results.md", args.mode, results)
    make_plots(results_dir / "plots.png", ae_results, rows)
    print(f"results in {results_dir}", flush=True)
    return results


if __name__ == "__main__":
    main()
