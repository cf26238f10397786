"""The budget of the channel sweep: measure a few steps of every job kind on this machine, estimate the wall time.

    python -m examples.toy.measure_sweep --output_dir /tmp/toy-measure   # measure (2-3 minutes on 2 idle cores)
    python -m examples.toy.measure_sweep --recorded                      # the estimate from RECORDED_COSTS

Measuring (`measure`) runs, with the sweep's own command lines (`toy_stages.sweep_jobs`), data sizes and job pool
(`--max_parallel` jobs at a time, the cores shared between them as in the real run), `--ae_steps` steps of the
plain autoencoder at the smallest and the largest c and of the structured one at the largest c, their latent
caches, and `--usit_steps` steps of the plain diffusion objective at the smallest and the largest c and of
`per_pass` and `per_sample` at the largest c. A trainer's seconds per step is the time between its first and last
checkpoint saves (accelerate's timestamped log lines) over the steps between them; the rest of its wall time is
its fixed cost (start-up, data loading, the first steps, the final save and export). In this process it then
times the checkpoint evaluations (both guidance scales) of the largest-c plain run, 50 classifier steps, the
reconstruction of the training images and one reconstruction evaluation of the held-out set, as the recipe runs
them. A re-run on the same folder keeps what is done and adds new timings; the fastest reading of each counts
(other work on the machine only ever slows a reading down).

Estimating (`estimate`) takes such costs (`SweepCosts`): a job's duration is its fixed cost + steps x seconds per
step, linear in c between the two measured c (structured autoencoders and augmented objectives: a ratio to the
plain cost at the same c); the training's wall time is `simulate_schedule` of the sweep's job list (a job that
runs alone is not given the second thread: an upper bound there), plus the evaluation in the recipe's process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import time
from datetime import datetime
from pathlib import Path

from dc_ae_hf.checks import check_int, exit_on_user_error
from examples.toy.toy_settings import (
    EVAL_GUIDANCE_SCALES,
    SWEEP_MODES,
    SweepSettings,
    sweep_autoencoders,
    sweep_cache_dir,
    sweep_runs,
)


def measured_settings(settings: SweepSettings, ae_steps: int, usit_steps: int) -> SweepSettings:
    """The sweep's settings cut to what is measured: the smallest and the largest c, one seed, a few steps."""
    smallest, largest = settings.plain_channels[0], settings.largest_channels
    return dataclasses.replace(
        settings,
        plain_channels=(smallest, largest),
        structured_channels=(largest,),
        ae_steps=ae_steps,
        usit_steps=usit_steps,
        usit_checkpoints=2,
        seeds=(0,),
        channel_seeds=(0,),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.toy.measure_sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(SWEEP_MODES), default="sweep", help="the mode to estimate")
    parser.add_argument("--recorded", action="store_true", help="estimate from RECORDED_COSTS, measure nothing")
    parser.add_argument("--output_dir", default="/tmp/toy-measure", help="where the measuring jobs run")
    parser.add_argument("--ae_steps", type=int, default=45, help="measured autoencoder steps (3 checkpoints)")
    parser.add_argument("--usit_steps", type=int, default=60, help="measured diffusion steps, even (2 checkpoints)")
    parser.add_argument("--max_parallel", type=int, default=2, help="training subprocesses at once")
    args = parser.parse_args(argv)
    target = SWEEP_MODES[args.mode]
    try:
        check_int("--ae_steps", args.ae_steps, minimum=3)  # checkpoints every ae_steps // 3: two saves to time
        check_int("--usit_steps", args.usit_steps, minimum=2)
        check_int("--max_parallel", args.max_parallel, minimum=1)
        measured_settings(target, args.ae_steps, args.usit_steps)  # e.g. an odd --usit_steps
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    return args


if __name__ == "__main__":  # the flags first: --help and argument errors answer before the heavy imports
    parse_args()  # (main below parses them again, in a millisecond)

from dc_ae_hf.data.shapes import SHAPE_CLASSES
from dc_ae_hf.metrics.autoencoder import evaluate_autoencoder
from dc_ae_hf.metrics.classifier import train_classifier
from examples.toy.toy_evaluation import (
    EvaluatedRun,
    evaluate_checkpoints,
    load_autoencoder,
    load_imagefolder,
    reconstruct,
    sweep_reconstruction_prefixes,
)
from examples.toy.toy_scheduler import Timings, simulate_schedule
from examples.toy.toy_stages import data_exists, run_trainer_jobs, sweep_jobs, write_data, write_sweep_configs

# accelerate's log line when a trainer starts saving checkpoint-<step> (at every --checkpointing_steps and the end)
_SAVE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO accelerate\.accelerator: .*?checkpoint-(\d+)\.tmp")


@dataclasses.dataclass(frozen=True)
class SweepCosts:
    """What the sweep's jobs cost on one machine: seconds per optimisation step with one thread while another job
    runs beside it, fixed seconds per job, and the evaluation's costs in the recipe's process (all cores).

    `ae_step` and `usit_step` map two channel counts to the plain autoencoder's / the plain objective's seconds per
    step (other c: linear between them); `ae_structured_ratio` and `usit_objective_ratio` (by objective) scale
    them; `eval_checkpoint` is seconds per checkpoint and guidance scale; `reconstruct_image` and
    `reconstruction_eval_image` are seconds per image for a reconstruction and for one prefix of
    `evaluate_autoencoder`.
    """

    ae_step: dict[int, float]
    ae_structured_ratio: float
    ae_fixed: float
    cache: float
    usit_step: dict[int, float]
    usit_objective_ratio: dict[str, float]
    usit_fixed: float
    eval_checkpoint: dict[float, float]
    classifier_step: float
    reconstruct_image: float
    reconstruction_eval_image: float


# Measured on this project's 2-core CPU machine on 2026-12-01 (15:05-15:35 UTC) while another user's tests ran
# beside it (load average 1.5-3.8 on 2 cores), so every trainer reading there is an upper bound; the values below
# are the fastest reading of each kind (two measuring runs of this script with 45 AE / 60 USiT steps, one of 10):
# - ae_step: the trainer at c = 8, 0.1665 s; at c = 128 the trainer read 0.37 s in both runs, each time beside the
#   other user's multi-process tests, so the c = 128 cost is the c = 8 reading times 1.05, the ratio of one
#   optimisation step (forward, L1, backward, AdamW) at c = 128 to c = 8 timed interleaved in one process
#   (0.1446 / 0.1374 s, 7 rounds, 1 thread); structured / plain at c = 128: 0.373 / 0.376 s, run side by side.
# - fixed costs: the largest wall time minus steps x s/step of any job of the kind (40 s AE, 31 s USiT, 56 s cache).
# - usit_step: the trainer, 0.1164 s at c = 8 and 0.1676 s at c = 128; per_pass / plain = 1.79 and per_sample /
#   plain = 0.93 at c = 128 by `benchmarks/bench_per_sample.py --hidden 96 --num_layers 4 --heads 4
#   --latent_channels 128 --latent_size 4 --batch_size 64` (1 thread, interleaved); the trainer's per_sample read
#   0.1754 s (1.05 x plain), which is used.
# - eval_checkpoint (500 samples, euler 20 steps, c = 128): CFG 3 read 10.1 s once; the other three readings of the
#   session (73-83 s) ran beside the other user's tests, as did both CFG 1 readings, so CFG 1 is taken as 0.59 x CFG
#   3, the ratio of the two in the committed full run (results/full/results.json: 4.2-4.4 s vs 6.9-7.6 s at c = 32).
# - classifier_step 0.133 s (50 steps, batch 64); reconstruct_image 0.0042 s; reconstruction_eval_image 0.0105 s
#   (1000 held-out images, one prefix, 10.5 s; the committed full run spent 2.9 s per prefix).
RECORDED_COSTS = SweepCosts(
    ae_step={8: 0.1665, 128: 0.1748},
    ae_structured_ratio=1.0,
    ae_fixed=40.0,
    cache=56.0,
    usit_step={8: 0.1164, 128: 0.1676},
    usit_objective_ratio={"plain": 1.0, "per_pass": 1.79, "per_sample": 1.05},
    usit_fixed=31.0,
    eval_checkpoint={1.0: 6.0, 3.0: 10.1},
    classifier_step=0.133,
    reconstruct_image=0.0042,
    reconstruction_eval_image=0.0105,
)


def seconds_per_step(log_text: str) -> float:
    """Seconds per optimisation step from a trainer's log: the time between the first and the last checkpoint save
    of a run of the job over the steps between them (start-up and the first steps are outside it; the saves in
    between are inside, which a real run, saving less often, spends less on). The scheduler appends every run of a
    job to its log (after a `$ <command>` line): the fastest run counts. ValueError when no run saved twice."""
    timings = []
    for run in log_text.split("\n$ "):
        saves = [(datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f"), int(step)) for t, step in _SAVE.findall(run)]
        if len(saves) >= 2 and saves[-1][1] > saves[0][1]:
            (t0, s0), (t1, s1) = saves[0], saves[-1]
            timings.append((t1 - t0).total_seconds() / (s1 - s0))
    if not timings:
        raise ValueError("no run in the log saved two checkpoints: cannot time the steps between them")
    return min(timings)


def interpolate(c: int, measured: dict[int, float]) -> float:
    """Linear interpolation in c between the two measured channel counts (extrapolated outside them)."""
    (c0, y0), (c1, y1) = sorted(measured.items())
    return y0 + (y1 - y0) * (c - c0) / (c1 - c0)


def job_durations(target: SweepSettings, costs: SweepCosts) -> dict[str, float]:
    """The estimated seconds of every job of `sweep_jobs(target)`, by job name."""
    durations = {}
    for ae in sweep_autoencoders(target):
        step = interpolate(ae.latent_channels, costs.ae_step) * (costs.ae_structured_ratio if ae.structured else 1)
        durations[ae.name] = costs.ae_fixed + target.ae_steps * step
        durations[f"cache_{ae.name}"] = costs.cache
    for run in sweep_runs(target):
        step = (
            interpolate(run.autoencoder.latent_channels, costs.usit_step) * costs.usit_objective_ratio[run.objective]
        )
        durations[f"usit_{run.name}_seed{run.seed}"] = costs.usit_fixed + target.usit_steps * step
    return durations


def estimate(target: SweepSettings, costs: SweepCosts, max_parallel: int = 2) -> dict:
    """The estimated wall time of a sweep mode: the job pool (`simulate_schedule` of `job_durations`), then the
    evaluation in the recipe's process (every checkpoint of every run at every guidance scale, the classifier
    with its reconstructions, the reconstruction table). Seconds, rounded."""
    durations = job_durations(target, costs)
    training = simulate_schedule(sweep_jobs(Path("estimate"), target), durations, max_parallel)
    checkpoints = len(sweep_runs(target)) * target.usit_checkpoints
    diffusion = checkpoints * sum(costs.eval_checkpoint[g] for g in EVAL_GUIDANCE_SCALES)
    autoencoders = sweep_autoencoders(target)
    reconstructions = target.num_train_images + len(autoencoders) * (target.num_heldout_images + target.num_samples)
    classifier = target.classifier_steps * costs.classifier_step + reconstructions * costs.reconstruct_image
    prefixes = sum(len(sweep_reconstruction_prefixes(ae, target)) for ae in autoencoders)
    reconstruction = prefixes * target.num_heldout_images * costs.reconstruction_eval_image
    return {
        "job_seconds": {name: round(seconds) for name, seconds in durations.items()},
        "training_wall_seconds": round(training),
        "evaluation_seconds": {
            "diffusion": round(diffusion),
            "checkpoint_evaluations": checkpoints,
            "classifier": round(classifier),
            "autoencoders": round(reconstruction),
        },
        "total_wall_seconds": round(training + diffusion + classifier + reconstruction),
    }


def measured_jobs(out: Path, settings: SweepSettings) -> list:
    """The measured subset of `sweep_jobs`: every autoencoder and cache; of the runs, the structured latent's three
    objectives at the largest c cost what the plain latent's do, so only the plain latent is measured."""
    return [job for job in sweep_jobs(out, settings) if not job.name.startswith("usit_struct")]


def measure(out: Path, target: SweepSettings, ae_steps: int, usit_steps: int, max_parallel: int) -> SweepCosts:
    """Run the measured jobs into `out` and time the evaluation (see the module docstring); the costs."""
    settings = measured_settings(target, ae_steps, usit_steps)
    smallest, largest = settings.plain_channels[0], settings.largest_channels
    if not data_exists(out):
        write_data(out, settings)
    write_sweep_configs(out, settings)
    timings = Timings(out / "timings.json")
    jobs = measured_jobs(out, settings)
    run_trainer_jobs(jobs, out, max_parallel, timings)
    wall = {name: entry["seconds"] for name, entry in timings.entries.items()}
    per_step, fixed = {}, {"ae": 0.0, "usit": 0.0}
    for job in jobs:
        if job.stage in ("autoencoders", "diffusion"):
            per_step[job.name] = seconds_per_step((out / "logs" / f"{job.name}.log").read_text())
            kind, steps = ("ae", ae_steps) if job.stage == "autoencoders" else ("usit", usit_steps)
            fixed[kind] = max(fixed[kind], wall[job.name] - steps * per_step[job.name])

    train_images, train_labels = load_imagefolder(out / "data" / "train")
    heldout_images, _ = load_imagefolder(out / "data" / "heldout")
    run = next(r for r in sweep_runs(settings) if r.name == f"plain_c{largest}_plain")
    vae = load_autoencoder(sweep_cache_dir(out, run.autoencoder) / "vae")
    classifier = train_classifier(reconstruct(vae, train_images[:500]), train_labels[:500], len(SHAPE_CLASSES), 5)
    # each call adds one more timing of every checkpoint (as the next "seed" of the rows); the fastest counts
    eval_file = out / "eval" / "measure.json"
    repeat = 1 + max((r["seed"] for r in json.loads(eval_file.read_text())), default=-1) if eval_file.exists() else 0
    entry = EvaluatedRun(run.name, repeat, run.folder(out), run.autoencoder.name, 1)
    references = {entry.autoencoder: reconstruct(vae, heldout_images)}
    rows = evaluate_checkpoints(
        eval_file, [entry], {entry.autoencoder: vae}, classifier, references, target.num_samples, target.sample_steps
    )
    tick = time.time()
    train_classifier(train_images, train_labels, len(SHAPE_CLASSES), steps=50)
    classifier_step = (time.time() - tick) / 50
    tick = time.time()
    reconstruct(vae, train_images)
    reconstruct_image = (time.time() - tick) / len(train_images)
    tick = time.time()
    evaluate_autoencoder(vae, list(heldout_images.split(100)), [largest])
    reconstruction_eval_image = (time.time() - tick) / len(heldout_images)

    usit_plain = {c: per_step[f"usit_plain_c{c}_plain_seed0"] for c in (smallest, largest)}
    return SweepCosts(
        ae_step={c: per_step[f"ae_plain_c{c}"] for c in (smallest, largest)},
        ae_structured_ratio=per_step[f"ae_struct_c{largest}"] / per_step[f"ae_plain_c{largest}"],
        ae_fixed=fixed["ae"],
        cache=max(wall[job.name] for job in jobs if job.stage == "latent caches"),
        usit_step=usit_plain,
        usit_objective_ratio={
            objective: per_step[f"usit_plain_c{largest}_{objective}_seed0"] / usit_plain[largest]
            for objective in ("plain", "per_pass", "per_sample")
        },
        usit_fixed=fixed["usit"],
        eval_checkpoint={
            g: min(r["eval_seconds"] for r in rows if r["guidance_scale"] == g) for g in EVAL_GUIDANCE_SCALES
        },
        classifier_step=classifier_step,
        reconstruct_image=reconstruct_image,
        reconstruction_eval_image=reconstruction_eval_image,
    )


def main(argv: list[str] | None = None) -> dict:
    """Measure (or, with `--recorded`, only estimate) and print the estimate (`run`). A user error (e.g. an
    `--output_dir` that cannot be written) prints one line `error: ...` on stderr and exits with status 2
    (`DC_AE_HF_TRACEBACK=1` keeps the traceback)."""
    return exit_on_user_error(run, parse_args(argv))


def run(args: argparse.Namespace) -> dict:
    """The costs (measured, or `RECORDED_COSTS`) and the estimate of `--mode`, as printed."""
    target = SWEEP_MODES[args.mode]
    if args.recorded:
        costs = RECORDED_COSTS
    else:
        out = Path(args.output_dir).resolve()
        costs = measure(out, target, args.ae_steps, args.usit_steps, args.max_parallel)
    result = {
        "mode": args.mode,
        "costs": dataclasses.asdict(costs),
        "load_average_1_5_15_min": os.getloadavg(),  # other work on the machine slows every reading
        **estimate(target, costs, args.max_parallel),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
