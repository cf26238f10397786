"""CPU-scale reproduction of the two DC-AE 1.5 effects on the procedural shapes dataset, with the real trainers.

    python -m examples.toy.run_recipe --mode quick --output_dir outputs/toy          # <= 30 min on 2 CPU cores
    python -m examples.toy.run_recipe --mode full --output_dir outputs/toy-full     # <= 2 h, 2 seeds, resumable
    python -m examples.toy.run_recipe --mode smoke --output_dir /tmp/toy-smoke      # a few steps (the test)
    python -m examples.toy.run_recipe --mode sweep --output_dir outputs/toy-sweep   # ~2 h 15 min, resumable
    python -m examples.toy.run_recipe --mode sweep-smoke --output_dir /tmp/sweep    # a few steps (the test)
    python -m examples.toy.run_recipe --mode regime --output_dir outputs/toy-regime    # the paper's regime, resumable
    python -m examples.toy.run_recipe --mode regime-smoke --output_dir /tmp/regime  # a few steps (the test)
    python -m examples.toy.run_recipe --mode default --output_dir outputs/toy-default \
        --bundle_to dc_ae_hf/assets/toy-dcae15-shapes                                # the built-in default, ~1.5 h
    python -m examples.toy.run_recipe --mode default-smoke --output_dir /tmp/default  # a few steps (the test)

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

The channel sweep (`--mode sweep`, `run_sweep`) puts the toy in the paper's regime of many channels: plain
autoencoders with c = 8 ... 128 latent channels and structured ones at c = 64 and 128 (reconstruction vs c, Fig.
1b), the plain diffusion objective on every plain autoencoder (generation vs c), and at c = 128 the 2x2 of Table 5
(structured or plain latent x augmented or plain objective, augmentation both per_pass and per_sample) with two
seeds, at equal steps and at equal passes (`toy_settings.SWEEP_MODES`; its budget: `measure_sweep.py`).

The paper's regime (`--mode regime`, `run_sweep` with `toy_settings.REGIME_MODES`; issue #20): at 64 px two latents
of equal size, 24x fewer values than pixels, f16c32 (4x4x32, 16 tokens) and f32c128 (2x2x128, 4 tokens), a plain
autoencoder for each and a structured one (Eq. 1) at f32c128, and five diffusion arms with two seeds each, one USiT
of hidden 256 for all: (i) f16c32, plain objective; (ii) plain f32c128, plain objective; (iii) structured f32c128,
plain objective; (iv) structured, augmented per_pass; (v) structured, one-pass per_sample. Quality vs steps and vs
compute (passes x tokens), the speed-ups against (i) and (ii), and whether the paper's headline holds.

The built-in default (`--mode default`, `run_default`) trains what `dc_ae_hf/assets/toy-dcae15-shapes` ships: the
structured autoencoder on 20000 images, then a larger USiT (`toy_settings.DEFAULT_USIT_CONFIG`, ~1.5M parameters)
for 32000 steps with the plain objective on the full latent (`--no_augmented`, the pilot's choice:
`results/default/pilot.md`), every checkpoint scored by a classifier trained for 4000 steps; `--bundle_to` copies
the final pipeline with its card.

This module is the entry point; the work is in the package's other modules: `toy_settings` (modes, configs),
`toy_scheduler` (the job pool), `toy_stages` (data and trainer command lines), `toy_evaluation` and `report` (one
module per report: tables, plots, pictures, the bundle and its card).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from dc_ae_hf.checks import check_int, exit_on_user_error
from examples.toy.toy_settings import (
    AUTOENCODERS,
    DEFAULT_MODES,
    DEFAULT_RUN,
    DEFAULT_USIT_CONFIG,
    EVAL_GUIDANCE_SCALES,
    MODES,
    REGIME_MODES,
    SWEEP_MODES,
    DefaultSettings,
    ModeSettings,
    RegimeSettings,
    SweepSettings,
    resolution_of,
    usit_run_dir,
)

SAMPLES_PER_CLASS = 4  # samples_struct_aug.png: one row per class
DEFAULT_SAMPLES_PER_CLASS = 8  # samples.png of the built-in default (the README's grid): one row per class


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.toy.run_recipe", description=__doc__.split("\n")[0])
    modes = sorted(MODES) + sorted(SWEEP_MODES) + sorted(REGIME_MODES) + sorted(DEFAULT_MODES)
    parser.add_argument("--mode", choices=modes, default="quick")
    parser.add_argument("--output_dir", default="outputs/toy", help="runs, logs, checkpoints")
    parser.add_argument("--results_dir", help="where the PNGs/markdown/json go (default: <output_dir>/results)")
    parser.add_argument(
        "--bundle_to",
        help="also copy the final structured + augmented pipeline (seed 0) here, with its model card (not sweep); "
        "--mode default makes the built-in default dc_ae_hf/assets/toy-dcae15-shapes",
    )
    parser.add_argument("--max_parallel", type=int, default=2, help="training subprocesses at once")
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="sweep and regime modes: rewrite results.md and the plots from the results_dir's results.json (no "
        "training)",
    )
    args = parser.parse_args(argv)
    try:
        check_int("--max_parallel", args.max_parallel, minimum=1)
    except ValueError as error:
        parser.error(str(error))
    if args.bundle_to and (args.mode in SWEEP_MODES or args.mode in REGIME_MODES):
        parser.error(f"--bundle_to is not available with --mode {args.mode}: it bundles no pipeline")
    if args.report_only and args.mode not in SWEEP_MODES and args.mode not in REGIME_MODES:
        allowed = sorted(SWEEP_MODES) + sorted(REGIME_MODES)
        parser.error(f"--report_only is for the sweep and regime modes {allowed}, not --mode {args.mode}")
    return args


if __name__ == "__main__":  # the flags first: --help and argument errors answer before the heavy imports
    parse_args()  # (main below parses them again, in a millisecond)

import torch

from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from examples.toy.report.card import claim_bundle_folder, write_bundle
from examples.toy.report.default import default_results_summary, write_default_report
from examples.toy.report.pictures import sample_grid, write_prefix_grids
from examples.toy.report.quick_full import results_summary, write_report
from examples.toy.report.regime import regime_results_summary, write_regime_report
from examples.toy.report.sweep import sweep_results_summary, write_sweep_report
from examples.toy.toy_evaluation import (
    class_samples,
    diffusion_vaes,
    evaluate_autoencoders,
    evaluate_classifier,
    evaluate_default_autoencoder,
    evaluate_diffusion,
    evaluate_structured_classifier,
    evaluate_sweep_autoencoders,
    load_autoencoder,
    load_imagefolder,
    scoring_classifier,
)
from examples.toy.toy_scheduler import Timings, stage_wall_times
from examples.toy.toy_stages import (
    autoencoder_jobs,
    cache_jobs,
    data_exists,
    default_jobs,
    finetune_jobs,
    run_trainer_jobs,
    sweep_jobs,
    usit_jobs,
    write_configs,
    write_data,
    write_diffusion_vae,
    write_sweep_configs,
)


def _folders(args: argparse.Namespace) -> tuple[Path, Path]:
    """The run's output folder and its results folder (`--results_dir`, default `<output_dir>/results`)."""
    out = Path(args.output_dir).resolve()
    return out, Path(args.results_dir).resolve() if args.results_dir else out / "results"


def _start(results_dir: Path, out: Path) -> Timings:
    """Start (or continue) a run: create `results_dir`, seed torch, and return the timings kept in
    `<out>/timings.json`."""
    results_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    return Timings(out / "timings.json")


def read_results(path: Path, modes: dict) -> dict:
    """The results dict of an earlier run of one of `modes` (its `results.json`), for `--report_only`; ValueError
    naming the file when there is none, it is not one, or it holds another kind of mode's results."""
    if not path.is_file():
        raise ValueError(f"--report_only needs {path}: run the mode first")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--report_only: {path} is not a results file ({error})") from None
    if not isinstance(results, dict) or "diffusion" not in results:
        raise ValueError(f"--report_only: {path} is not a results file (no diffusion rows)")
    if results.get("mode") not in modes:
        raise ValueError(
            f"--report_only: {path} holds results of --mode {results.get('mode')}, not of {sorted(modes)}"
        )
    return results


def main(argv: list[str] | None = None) -> dict:
    """Run (or continue) the recipe; returns the results dict that `results.json` holds. A user error (a folder
    that cannot be written, a missing results.json for --report_only) prints one line `error: ...` on stderr and
    exits with status 2 (`DC_AE_HF_TRACEBACK=1` keeps the traceback)."""
    return exit_on_user_error(run, parse_args(argv))


def run(args: argparse.Namespace) -> dict:
    """Run (or continue) the mode of `args`: `run_sweep` (sweep and regime modes), `run_default` (the built-in
    default) or `run_quick_full` (smoke, quick, full)."""
    if args.bundle_to:  # refused before any work unless it is new, empty or an earlier bundle
        claim_bundle_folder(args.bundle_to)
    if args.mode in SWEEP_MODES or args.mode in REGIME_MODES:
        return run_sweep(args)
    if args.mode in DEFAULT_MODES:
        return run_default(args)
    return run_quick_full(args)


def score_diffusion(
    out: Path,
    settings: ModeSettings | SweepSettings | RegimeSettings | DefaultSettings,
    vaes: dict[str, AutoencoderDC15],
    heldout_images: torch.Tensor,
    timings: Timings,
    train_classifier: Callable[[], tuple],
) -> tuple[list[dict], dict]:
    """Every diffusion checkpoint of a mode scored (`evaluate_diffusion`, rows kept in `eval/diffusion.json`) by
    its classifier (`scoring_classifier`: trained once by `train_classifier`, then kept in `eval/classifier`).
    Returns the rows and the classifier's info; its training time and the rows' summed evaluation times (so a
    resumed run reports the time its rows really took) go to `timings`."""
    classifier, references, info = scoring_classifier(
        out, vaes, heldout_images, lambda: timings.timed("classifier", "evaluation: classifier", train_classifier)
    )
    rows = evaluate_diffusion(out, settings, classifier, references)
    timings.record_total("eval_diffusion", "evaluation: diffusion samples", sum(r["eval_seconds"] for r in rows))
    return rows, info


def run_quick_full(args: argparse.Namespace) -> dict:
    """Run (or continue) a smoke, quick or full mode (`MODES`): data, both autoencoders, their scaling factors and
    caches, the three diffusion runs and the plain fine-tunes, then the evaluation, the pictures, the report
    (`write_report`) and, with `--bundle_to`, the `struct_aug` pipeline with its card. Returns the results dict
    that `results.json` holds."""
    settings = MODES[args.mode]
    out, results_dir = _folders(args)
    timings = _start(results_dir, out)

    # 1. data and configs; 2. autoencoders
    if not data_exists(out):
        timings.timed("data", "data", lambda: write_data(out, settings))
    write_configs(out)

    run_trainer_jobs(autoencoder_jobs(out, settings), out, args.max_parallel, timings)

    # 3./4. scaling factors, then caches, diffusion runs and plain fine-tunes (one job pool)
    train_images, train_labels = load_imagefolder(out / "data" / "train")
    heldout_images, heldout_labels = load_imagefolder(out / "data" / "heldout")
    for ae in AUTOENCODERS:
        write_diffusion_vae(out, ae, train_images)
    run_trainer_jobs(
        cache_jobs(out) + usit_jobs(out, settings) + finetune_jobs(out, settings), out, args.max_parallel, timings
    )

    # 5. evaluation
    ae_results = timings.timed(
        "eval_autoencoders", "evaluation: autoencoders", lambda: evaluate_autoencoders(out, settings, heldout_images)
    )
    vaes = {ae: load_autoencoder(out / ae / "vae_ema") for ae in AUTOENCODERS}
    write_prefix_grids(results_dir, vaes["ae_struct"], vaes["ae_plain"], heldout_images)
    train, heldout = (train_images, train_labels), (heldout_images, heldout_labels)
    rows, classifier_info = score_diffusion(
        out,
        settings,
        vaes,
        heldout_images,
        timings,
        lambda: evaluate_structured_classifier(vaes, train, heldout, settings),
    )

    # the final structured + augmented pipeline (seed 0): its samples, and the bundled default pipeline
    source = usit_run_dir(out, "struct_aug", settings.seeds[0]) / "pipeline"
    samples = class_samples(
        source, SAMPLES_PER_CLASS, steps=max(2, settings.sample_steps), guidance_scale=EVAL_GUIDANCE_SCALES[-1]
    )
    sample_grid(samples, columns=SAMPLES_PER_CLASS).save(results_dir / "samples_struct_aug.png")
    if args.bundle_to:
        write_bundle(source, args.bundle_to, args.mode, settings, ae_results, rows)

    results = results_summary(
        args.mode,
        settings,
        ae_results,
        classifier_info,
        rows,
        stage_seconds=stage_wall_times(timings.entries),
        job_seconds=timings.entries,
        max_parallel=args.max_parallel,
    )
    write_report(results_dir, results)
    print(f"results in {results_dir}", flush=True)
    return results


def run_sweep(args: argparse.Namespace) -> dict:
    """Run (or continue) a channel-sweep mode (`SWEEP_MODES`) or a regime mode (`REGIME_MODES`, the same stages on
    its three autoencoders and five arms): data, then one job pool (every autoencoder, its latent cache with the
    scaling factor measured on all training images, its diffusion runs), then the evaluation (reconstruction per c
    and prefix, one classifier for every autoencoder, every diffusion checkpoint) and the report
    (`write_sweep_report`, `write_regime_report`). Returns the results dict that `results.json` holds."""
    regime = args.mode in REGIME_MODES
    settings = REGIME_MODES[args.mode] if regime else SWEEP_MODES[args.mode]
    out, results_dir = _folders(args)
    if args.report_only:
        results = read_results(results_dir / "results.json", REGIME_MODES if regime else SWEEP_MODES)
        results = write_regime_report(results_dir, results) if regime else write_sweep_report(results_dir, results)
        print(f"results in {results_dir}", flush=True)
        return results
    timings = _start(results_dir, out)

    if not data_exists(out):
        timings.timed("data", "data", lambda: write_data(out, settings))
    write_sweep_configs(out, settings)
    run_trainer_jobs(sweep_jobs(out, settings), out, args.max_parallel, timings)

    train = load_imagefolder(out / "data" / "train", resolution_of(settings))
    heldout = load_imagefolder(out / "data" / "heldout", resolution_of(settings))
    reconstruction = timings.timed(
        "eval_autoencoders", "evaluation: autoencoders", lambda: evaluate_sweep_autoencoders(out, settings, heldout[0])
    )
    vaes = diffusion_vaes(out, settings)
    rows, classifier_info = score_diffusion(
        out, settings, vaes, heldout[0], timings, lambda: evaluate_classifier(vaes, train, heldout, settings)
    )

    summary = regime_results_summary if isinstance(settings, RegimeSettings) else sweep_results_summary
    results = summary(
        args.mode,
        settings,
        reconstruction,
        classifier_info,
        rows,
        stage_seconds=stage_wall_times(timings.entries),
        job_seconds=timings.entries,
        max_parallel=args.max_parallel,
    )
    if isinstance(settings, RegimeSettings):
        results = write_regime_report(results_dir, results)
    else:
        write_sweep_report(results_dir, results)
    print(f"results in {results_dir}", flush=True)
    return results


def run_default(args: argparse.Namespace) -> dict:
    """Run (or continue) a built-in-default mode (`DEFAULT_MODES`): data, the structured autoencoder, its scaling
    factor (measured on class-balanced training images) and latent cache, one long diffusion run of
    `DEFAULT_USIT_CONFIG` with the plain objective, then the evaluation (reconstruction per c', a classifier
    trained for `classifier_steps`, every checkpoint with and without guidance), the report (`write_default_report`)
    and, with `--bundle_to`, the pipeline with its card. Returns the results dict that `results.json` holds."""
    settings = DEFAULT_MODES[args.mode]
    out, results_dir = _folders(args)
    timings = _start(results_dir, out)

    if not data_exists(out):
        timings.timed("data", "data", lambda: write_data(out, settings))
    write_configs(out, DEFAULT_USIT_CONFIG)
    run_trainer_jobs(autoencoder_jobs(out, settings, ("ae_struct",)), out, args.max_parallel, timings)
    train_images, train_labels = load_imagefolder(out / "data" / "train")
    heldout_images, heldout_labels = load_imagefolder(out / "data" / "heldout")
    # the imagefolder is sorted by class: evenly spaced images are class balanced
    balanced = torch.linspace(0, len(train_images) - 1, min(len(train_images), 1000)).long()
    write_diffusion_vae(out, "ae_struct", train_images[balanced])
    run_trainer_jobs(default_jobs(out, settings), out, args.max_parallel, timings)

    heldout = (heldout_images, heldout_labels)
    reconstruction = timings.timed(
        "eval_autoencoders", "evaluation: autoencoder", lambda: evaluate_default_autoencoder(out, heldout_images)
    )
    vaes = {"ae_struct": load_autoencoder(out / "ae_struct" / "vae_ema")}
    train = (train_images, train_labels)
    rows, classifier_info = score_diffusion(
        out, settings, vaes, heldout_images, timings, lambda: evaluate_classifier(vaes, train, heldout, settings)
    )

    source = usit_run_dir(out, DEFAULT_RUN, settings.seed) / "pipeline"
    samples = class_samples(
        source, DEFAULT_SAMPLES_PER_CLASS, steps=settings.sample_steps, guidance_scale=EVAL_GUIDANCE_SCALES[-1]
    )
    sample_grid(samples, columns=DEFAULT_SAMPLES_PER_CLASS).save(results_dir / "samples.png")
    if args.bundle_to:
        write_bundle(source, args.bundle_to, args.mode, settings, reconstruction, rows, DEFAULT_RUN, classifier_info)
    results = default_results_summary(
        args.mode,
        settings,
        reconstruction,
        classifier_info,
        rows,
        stage_seconds=stage_wall_times(timings.entries),
        job_seconds=timings.entries,
    )
    write_default_report(results_dir, results)
    print(f"results in {results_dir}", flush=True)
    return results


if __name__ == "__main__":
    main()
