"""The regime mode's budget: its step costs as ratios to the channel sweep's recorded costs, and the estimate.

    python -m examples.toy.measure_regime --output examples/toy/results/regime/budget.json   # minutes
    python -m examples.toy.measure_regime --recorded examples/toy/results/regime/budget.json  # re-estimate only

Why ratios: on the shared 2-core machine the wall time of a trainer depends on what else runs (the pilot's jobs ran
at a load average of 3-7). Timing two things in one process, in interleaved rounds (`benchmarks/timing.py`), gives
their ratio even under load; each regime cost is then that ratio times the sweep's cost recorded on this machine
(`measure_sweep.RECORDED_COSTS`, one thread per job, two jobs at a time). Measured (`measure_ratios`), one thread
for the training steps, two for the evaluation (as the recipe runs them):

- one autoencoder step (forward, L1, backward, AdamW) of the sweep's f8c32 autoencoder at 32 px and of the regime's
  f16c32 and f32c128 ones at 64 px, batch 32; a no-grad reconstruction of 50 images by each;
- one USiT step (the flow-matching loss, backward, AdamW) of the sweep's USiT (hidden 96) on 4x4x32 latents and of
  `REGIME_USIT_CONFIG` (hidden 256) on 4x4x32 (arm (i)) and on 2x2x128 latents with the plain objective, per_pass
  (k = 2 with the full latent) and per_sample, batch 64;
- sampling 20 class-balanced images (euler 20 steps, CFG 1 and 3) with the sweep's f8c128 pipeline and with the
  regime's two pipelines (random weights: the cost does not depend on them); a classifier step at 32 and 64 px.

`estimate` turns the costs into the wall time of `REGIME_MODES[--mode]`: every job's fixed cost plus steps x
seconds per step, played through the job pool (`simulate_schedule` of `sweep_jobs`, two at a time), then the
evaluation in the recipe's process (every checkpoint of every arm at both guidance scales, the classifier with its
reconstructions, every prefix of the reconstruction table).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from dc_ae_hf.checks import check_int, exit_on_user_error
from examples.toy.toy_settings import (
    EVAL_GUIDANCE_SCALES,
    REGIME_MODES,
    REGIME_USIT_CONFIG,
    USIT_CONFIG,
    RegimeSettings,
    SweepAutoencoder,
    sweep_prefixes,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.toy.measure_regime", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(REGIME_MODES), default="regime", help="the mode to estimate")
    parser.add_argument("--output", help="write the ratios, costs and estimate here (JSON)")
    parser.add_argument("--recorded", help="estimate from the ratios of this JSON (a previous --output)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of each training step")
    args = parser.parse_args(argv)
    try:
        check_int("--rounds", args.rounds, minimum=1)
    except ValueError as error:
        parser.error(str(error))
    return args


if __name__ == "__main__":  # the flags first: --help and argument errors answer before the heavy imports
    parse_args()  # (main below parses them again, in a millisecond)

import torch

from benchmarks.timing import interleaved, load_average
from dc_ae_hf.metrics.classifier import SmallImageClassifier
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from dc_ae_hf.training.flow_matching import flow_matching_loss
from dc_ae_hf.training.randomness import LatentChannelSampler
from examples.toy.measure_sweep import RECORDED_COSTS, interpolate
from examples.toy.toy_evaluation import generate, sweep_reconstruction_prefixes
from examples.toy.toy_scheduler import simulate_schedule
from examples.toy.toy_stages import sweep_jobs

# the sweep's reference latents: the recorded costs are interpolated in c to these
REFERENCE_AE = SweepAutoencoder(32, structured=False)  # f8c32 at 32 px
REFERENCE_SAMPLING = SweepAutoencoder(128, structured=False)  # the recorded evaluation was at c = 128
SAMPLES_TIMED = 20  # samples per timed sampling call (the cost is linear in them; only the ratio is used)
IMAGES_TIMED = 50  # images per timed reconstruction call


def _autoencoder_step(ae: SweepAutoencoder, resolution: int):
    torch.manual_seed(0)
    vae = AutoencoderDC15(**ae.config).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    images = torch.rand(32, 3, resolution, resolution) * 2 - 1

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        (vae(images).sample - images).abs().mean().backward()
        optimizer.step()

    def reconstruct() -> None:
        with torch.no_grad():
            vae.eval()(torch.rand(IMAGES_TIMED, 3, resolution, resolution) * 2 - 1)
        vae.train()

    return step, reconstruct


def _usit_step(config: dict, channels: int, size: int, objective: str):
    torch.manual_seed(0)
    model = USiTTransformer2DModel(**config, sample_size=size, in_channels=channels, num_classes=10).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    latents, labels = torch.randn(64, channels, size, size), torch.randint(10, (64,))
    choices = sweep_prefixes(channels)
    per_pass = LatentChannelSampler(choices, num_samples=2, always_include_full=True)
    per_sample = LatentChannelSampler(choices, always_include_full=True)
    steps = iter(range(1, 10**9))

    def step() -> None:
        if objective == "per_pass":
            prefixes = per_pass(next(steps))
        elif objective == "per_sample":
            prefixes = per_sample.per_sample(next(steps), 64)
        else:
            prefixes = [channels]
        optimizer.zero_grad(set_to_none=True)
        loss, _ = flow_matching_loss(model, latents, labels, prefixes)
        loss.backward()
        optimizer.step()

    return step


def _sampling(config: dict, ae: SweepAutoencoder, resolution: int, guidance_scale: float):
    torch.manual_seed(0)
    vae = AutoencoderDC15(**ae.config).eval()
    size = resolution // ae.spatial_compression
    transformer = USiTTransformer2DModel(
        **config, sample_size=size, in_channels=ae.latent_channels, num_classes=10
    ).eval()
    pipe = DCAE15Pipeline(transformer=transformer, vae=vae)
    pipe.set_progress_bar_config(disable=True)
    return lambda: generate(pipe, SAMPLES_TIMED, 20, seed=0, guidance_scale=guidance_scale)


def _classifier_step(resolution: int):
    torch.manual_seed(0)
    model = SmallImageClassifier(10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = torch.rand(64, 3, resolution, resolution) * 2 - 1, torch.randint(10, (64,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def _ratios(candidates: dict, reference: str, rounds: int) -> dict[str, float]:
    times = interleaved(candidates, rounds)
    return {
        name: statistics.median(a / b for a, b in zip(times[name], times[reference], strict=True))
        for name in candidates
    }


def measure_ratios(settings: RegimeSettings, rounds: int) -> dict:
    """Every regime cost as a ratio to its sweep reference (the module docstring), with the load average."""
    struct_high, plain_high, plain_base = settings.autoencoders()
    res = settings.resolution
    start_load = load_average()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a trainer job gets one thread when two run at once
    ae_steps, reconstructions = {}, {}
    for name, ae, resolution in (
        ("reference", REFERENCE_AE, 32),
        ("f16c32", plain_base, res),
        ("f32c128", plain_high, res),
    ):
        ae_steps[name], reconstructions[name] = _autoencoder_step(ae, resolution)
    usit = {
        "reference": _usit_step(USIT_CONFIG, 32, 4, "plain"),
        "i": _usit_step(REGIME_USIT_CONFIG, 32, 4, "plain"),
        "plain": _usit_step(REGIME_USIT_CONFIG, 128, 2, "plain"),
        "per_pass": _usit_step(REGIME_USIT_CONFIG, 128, 2, "per_pass"),
        "per_sample": _usit_step(REGIME_USIT_CONFIG, 128, 2, "per_sample"),
    }
    result = {
        "autoencoder_step": _ratios(ae_steps, "reference", rounds),
        "usit_step": _ratios(usit, "reference", rounds),
        "reconstruction": _ratios(reconstructions, "reference", max(3, rounds // 3)),
    }
    torch.set_num_threads(threads)  # the recipe's evaluation runs in its own process on every core
    result["classifier_step"] = _ratios(
        {"reference": _classifier_step(32), "regime": _classifier_step(res)}, "reference", rounds
    )["regime"]
    result["sampling"] = {}
    for g in EVAL_GUIDANCE_SCALES:
        sampling = {
            "reference": _sampling(USIT_CONFIG, REFERENCE_SAMPLING, 32, g),
            "i": _sampling(REGIME_USIT_CONFIG, plain_base, res, g),
            "high": _sampling(REGIME_USIT_CONFIG, plain_high, res, g),
        }
        result["sampling"][str(g)] = _ratios(sampling, "reference", max(3, rounds // 3))
    result["load_average"] = {"start": start_load, "end": load_average()}
    result["rounds"] = rounds
    return result


def costs_from_ratios(ratios: dict) -> dict:
    """Seconds of every regime cost: each ratio x the sweep's recorded cost of its reference
    (`measure_sweep.RECORDED_COSTS`: autoencoder and USiT steps interpolated to c = 32)."""
    recorded = RECORDED_COSTS
    ae_reference = interpolate(REFERENCE_AE.latent_channels, recorded.ae_step)
    usit_reference = interpolate(32, recorded.usit_step)
    reconstruct = ratios["reconstruction"]
    return {
        "ae_step": {name: ratio * ae_reference for name, ratio in ratios["autoencoder_step"].items()},
        "usit_step": {name: ratio * usit_reference for name, ratio in ratios["usit_step"].items()},
        # the fixed costs (start-up, data, final save) as recorded; a cache is mostly encoding: scaled like it
        "ae_fixed": recorded.ae_fixed,
        "usit_fixed": recorded.usit_fixed,
        "cache": {name: recorded.cache * reconstruct[name] for name in ("f16c32", "f32c128")},
        "reconstruct_image": {name: recorded.reconstruct_image * reconstruct[name] for name in ("f16c32", "f32c128")},
        "reconstruction_eval_image": {
            name: recorded.reconstruction_eval_image * reconstruct[name] for name in ("f16c32", "f32c128")
        },
        "classifier_step": recorded.classifier_step * ratios["classifier_step"],
        # recorded per checkpoint and guidance scale for 500 samples at c = 128 (32 px)
        "eval_checkpoint": {
            g: {arm: recorded.eval_checkpoint[float(g)] * r[arm] for arm in ("i", "high")}
            for g, r in ratios["sampling"].items()
        },
    }


def estimate(settings: RegimeSettings, costs: dict, max_parallel: int = 2) -> dict:
    """The wall time of a regime mode from `costs_from_ratios`: the job pool, then the evaluation. Seconds."""
    latent = {
        ae.name: ("f16c32" if ae.latent_channels == settings.baseline_latent[1] else "f32c128")
        for ae in settings.autoencoders()
    }
    durations = {}
    for ae in settings.autoencoders():
        durations[ae.name] = costs["ae_fixed"] + settings.ae_steps * costs["ae_step"][latent[ae.name]]
        durations[f"cache_{ae.name}"] = costs["cache"][latent[ae.name]] * settings.num_train_images / 4000
    for run in settings.runs():
        arm = settings.arm_of(run.name)
        kind = "i" if arm == "i" else {"ii": "plain", "iii": "plain", "iv": "per_pass", "v": "per_sample"}[arm]
        per_step = costs["usit_step"][kind]
        durations[f"usit_{run.name}_seed{run.seed}"] = costs["usit_fixed"] + settings.usit_steps * per_step
    training = simulate_schedule(sweep_jobs(Path("estimate"), settings), durations, max_parallel)
    samples = settings.num_samples / 500
    diffusion = 0.0
    for run in settings.runs():
        arm = "i" if settings.arm_of(run.name) == "i" else "high"
        diffusion += (
            settings.usit_checkpoints
            * samples
            * sum(costs["eval_checkpoint"][g][arm] for g in costs["eval_checkpoint"])
        )
    autoencoders = settings.autoencoders()
    classifier = settings.classifier_steps * costs["classifier_step"]
    for ae in autoencoders:
        images = settings.num_train_images / len(autoencoders) + settings.num_heldout_images + settings.num_samples
        classifier += images * costs["reconstruct_image"][latent[ae.name]]
    reconstruction = sum(
        len(sweep_reconstruction_prefixes(ae, settings))
        * settings.num_heldout_images
        * costs["reconstruction_eval_image"][latent[ae.name]]
        for ae in autoencoders
    )
    total = training + diffusion + classifier + reconstruction
    return {
        "job_seconds": {name: round(seconds) for name, seconds in durations.items()},
        "training_wall_seconds": round(training),
        "evaluation_seconds": {
            "diffusion": round(diffusion),
            "checkpoint_evaluations": len(settings.runs()) * settings.usit_checkpoints,
            "classifier": round(classifier),
            "autoencoders": round(reconstruction),
        },
        "total_wall_seconds": round(total),
        "total_wall_hours": round(total / 3600, 2),
    }


def recorded_ratios(path: str | Path) -> dict:
    """The step-cost ratios of an earlier `--output` (its ``"ratios"``); ValueError naming the file when it is not
    one."""
    try:
        recorded = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--recorded {path} is not JSON ({error})") from None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("ratios"), dict):
        raise ValueError(f"--recorded {path} has no step-cost ratios: give the --output of an earlier measurement")
    return recorded["ratios"]


def main(argv: list[str] | None = None) -> dict:
    """Measure (or, with `--recorded`, only estimate) and print the estimate (`run`). A user error (e.g. a
    `--recorded` file without ratios) prints one line `error: ...` on stderr and exits with status 2
    (`DC_AE_HF_TRACEBACK=1` keeps the traceback)."""
    return exit_on_user_error(run, parse_args(argv))


def run(args: argparse.Namespace) -> dict:
    """The ratios (measured, or read from `--recorded`), the costs and the estimate of `--mode`, as printed."""
    settings = REGIME_MODES[args.mode]
    if args.recorded:
        ratios = recorded_ratios(args.recorded)
    else:
        ratios = measure_ratios(settings, args.rounds)
    costs = costs_from_ratios(ratios)
    result = {
        "mode": args.mode,
        "ratios": ratios,
        "costs": costs,
        "load_average_1_5_15_min": os.getloadavg(),
        **estimate(settings, costs),
    }
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
