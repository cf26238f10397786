"""The regime mode's pilot: a short run of its two plain autoencoders and of arms (i) and (ii), to choose its budget.

    python -m examples.toy.pilot_regime --output_dir outputs/regime-pilot --results_dir examples/toy/results/regime

It runs, with the regime mode's own command lines (`toy_stages.sweep_jobs` of `REGIME_MODES["regime"]` cut by
`pilot_settings`), on 64 px shapes: the plain f16c32 and f32c128 autoencoders (`--ae_steps` steps), their latent
caches, and arms (i) and (ii) (`--usit_steps` steps of the plain objective on each latent, 4 checkpoints, seed 0),
two jobs at a time. Then, in this process: held-out PSNR/SSIM of both autoencoders from the full latent; a
classifier trained on both autoencoders' reconstructions (`evaluate_classifier`); class accuracy and classifier
FD of `--num_samples` samples at every checkpoint of both arms (`evaluate_checkpoints`). It writes `pilot.json`:
those numbers, the flow-matching loss every 50 steps as the trainers logged it, every job's wall time and seconds
per step (`measure_sweep.seconds_per_step`: between the first and the last checkpoint save), and the seconds of
each evaluation. With `--ae_only` (and `--arms`, `--ae_deep_width`) it trains and measures only the autoencoders. Re-running the same command skips what is done.
`examples/toy/results/regime/pilot.md` reads it and derives the regime mode's budget from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from pathlib import Path

from dc_ae_hf.checks import check_int, exit_on_user_error
from examples.toy.toy_settings import REGIME_ARMS, REGIME_MODES, REGIME_USIT_CONFIG, RegimeSettings, sweep_cache_dir

PILOT_ARMS = ("i", "ii")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.toy.pilot_regime", description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", default="outputs/regime-pilot")
    parser.add_argument("--results_dir", default="examples/toy/results/regime")
    parser.add_argument("--ae_steps", type=int, default=900)
    parser.add_argument("--usit_steps", type=int, default=600)
    parser.add_argument("--num_train_images", type=int, default=2000)
    parser.add_argument("--num_samples", type=int, default=200)
    parser.add_argument("--max_parallel", type=int, default=2)
    parser.add_argument("--arms", nargs="+", choices=REGIME_ARMS, default=list(PILOT_ARMS), help="arms to run")
    parser.add_argument("--ae_deep_width", type=int, default=128, help="width of the stages beyond f8")
    parser.add_argument("--ae_only", action="store_true", help="only the arms' autoencoders and their PSNR/SSIM")
    parser.add_argument("--output_name", default="pilot.json", help="file name in --results_dir")
    parser.add_argument(
        "--add_losses", action="store_true", help="only add the logged losses to an existing --output_name"
    )
    args = parser.parse_args(argv)
    try:
        check_int("--max_parallel", args.max_parallel, minimum=1)
    except ValueError as error:
        parser.error(str(error))
    return args


if __name__ == "__main__":  # the flags first: --help and argument errors answer before the heavy imports
    parse_args()  # (main below parses them again, in a millisecond)

from dc_ae_hf.metrics.autoencoder import evaluate_autoencoder
from examples.toy.measure_sweep import seconds_per_step
from examples.toy.toy_evaluation import (
    EvaluatedRun,
    evaluate_checkpoints,
    evaluate_classifier,
    load_autoencoder,
    load_imagefolder,
)
from examples.toy.toy_scheduler import Timings
from examples.toy.toy_stages import data_exists, run_trainer_jobs, sweep_jobs, write_data, write_sweep_configs

# the trainer's progress bar: "<step>/<steps> [...] loss=<mean of the last --logging_steps steps>"
_PROGRESS = re.compile(r"(\d+)/(\d+) \[[^\]]*, loss=([0-9.]+)\]")


def logged_losses(log_text: str) -> dict[int, float]:
    """step -> the loss the trainer's progress bar showed at that step (the mean of the 10 steps before it, as
    logged every `--logging_steps`), from a job's log."""
    return {int(step): float(loss) for step, _, loss in _PROGRESS.findall(log_text)}


def loss_table(out: Path, job_names: list[str], every: int) -> dict[str, dict[int, float]]:
    """The logged flow-matching loss of each diffusion job every `every` steps (the nearest logged step before)."""
    table = {}
    for name in job_names:
        losses = logged_losses((out / "logs" / f"{name}.log").read_text())
        last = max(losses)
        table[name] = {step: losses[max(s for s in losses if s <= step)] for step in range(every, last + 1, every)}
    return table


def pilot_settings(
    ae_steps: int, usit_steps: int, num_train_images: int, num_samples: int, ae_deep_width: int = 128
) -> RegimeSettings:
    """`REGIME_MODES["regime"]` with one seed and the pilot's budget (4 diffusion checkpoints)."""
    return dataclasses.replace(
        REGIME_MODES["regime"],
        ae_deep_width=ae_deep_width,
        num_train_images=num_train_images,
        num_heldout_images=500,
        ae_steps=ae_steps,
        usit_steps=usit_steps,
        usit_checkpoints=4,
        seeds=(0,),
        num_samples=num_samples,
        classifier_steps=300,
        smoke=True,
    )


def main(argv: list[str] | None = None) -> dict:
    """Run (or continue) the pilot (`run`). A user error (a budget the regime's settings refuse, e.g. `--usit_steps`
    not a multiple of 4; a folder that cannot be written) prints one line `error: ...` on stderr and exits with
    status 2 (`DC_AE_HF_TRACEBACK=1` keeps the traceback)."""
    return exit_on_user_error(run, parse_args(argv))


def run(args: argparse.Namespace) -> dict:
    """The pilot of `args` (module docstring); returns what `--output_name` holds."""
    settings = pilot_settings(
        args.ae_steps, args.usit_steps, args.num_train_images, args.num_samples, args.ae_deep_width
    )
    out, results_dir = Path(args.output_dir).resolve(), Path(args.results_dir).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    timings = Timings(out / "timings.json")

    if args.add_losses:  # a pilot written before the losses were part of it: read them from its logs
        path = results_dir / args.output_name
        results = json.loads(path.read_text())
        names = [f"usit_{settings.arm(arm, seed=0).name}_seed0" for arm in args.arms]
        results["loss_every_50_steps"] = loss_table(out, names, 50)
        path.write_text(json.dumps(results, indent=1, default=str))
        print(json.dumps(results["loss_every_50_steps"], indent=1))
        return results

    runs = [settings.arm(arm, seed=0) for arm in args.arms]
    autoencoders = list(dict.fromkeys(run.autoencoder for run in runs))
    wanted = {ae.name for ae in autoencoders}
    if not args.ae_only:
        wanted |= {f"cache_{ae.name}" for ae in autoencoders} | {f"usit_{run.name}_seed0" for run in runs}
    jobs = [job for job in sweep_jobs(out, settings) if job.name in wanted]
    if not data_exists(out):
        timings.timed("data", "data", lambda: write_data(out, settings))
    write_sweep_configs(out, settings)
    run_trainer_jobs(jobs, out, args.max_parallel, timings)

    per_step = {}
    for job in jobs:
        if not job.name.startswith("cache_"):
            per_step[job.name] = seconds_per_step((out / "logs" / f"{job.name}.log").read_text())

    train = load_imagefolder(out / "data" / "train", settings.resolution)
    heldout = load_imagefolder(out / "data" / "heldout", settings.resolution)
    seconds = {}
    start = time.time()
    reconstruction = {}
    for ae in autoencoders:
        vae = load_autoencoder(out / ae.name / "vae_ema")
        table = evaluate_autoencoder(vae, list(heldout[0].split(100)), [ae.latent_channels])
        reconstruction[ae.name] = {str(c): values for c, values in table.items()}
    seconds["reconstruction (the AEs, held-out set, full latent)"] = round(time.time() - start, 1)
    results = {
        "settings": dataclasses.asdict(settings),
        "autoencoder_configs": {ae.name: ae.config for ae in autoencoders},
        "reconstruction": reconstruction,
        "seconds_per_step": per_step,
        "job_seconds": timings.entries,
        "evaluation_seconds": seconds,
        "max_parallel": args.max_parallel,
    }
    if args.ae_only:
        (results_dir / args.output_name).write_text(json.dumps(results, indent=1, default=str))
        print(json.dumps(results["reconstruction"], indent=1))
        return results

    vaes = {ae.name: load_autoencoder(sweep_cache_dir(out, ae) / "vae") for ae in autoencoders}
    start = time.time()
    classifier, references, classifier_info = evaluate_classifier(vaes, train, heldout, settings)
    seconds[f"classifier ({settings.classifier_steps} steps + reconstructions)"] = round(time.time() - start, 1)
    evaluated = [
        EvaluatedRun(run.name, run.seed, run.folder(out), run.autoencoder.name, run.passes_per_step) for run in runs
    ]
    rows = evaluate_checkpoints(
        out / "eval" / "diffusion.json",
        evaluated,
        vaes,
        classifier,
        references,
        settings.num_samples,
        settings.sample_steps,
    )
    diffusion_jobs = [job.name for job in jobs if job.name.startswith("usit_")]
    results |= {
        "loss_every_50_steps": loss_table(out, diffusion_jobs, 50),
        "usit_config": REGIME_USIT_CONFIG,
        "arms": {arm: run.name for arm, run in zip(args.arms, runs)},
        "tokens": {run.name: settings.tokens(run.autoencoder) for run in runs},
        "classifier": classifier_info,
        "diffusion": rows,
    }
    (results_dir / args.output_name).write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps({k: results[k] for k in ("reconstruction", "seconds_per_step", "evaluation_seconds")}, indent=1))
    for row in rows:
        print(row)
    return results


if __name__ == "__main__":
    main()
