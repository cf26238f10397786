"""The built-in default's pilot: short diffusion runs of candidate recipes on its latent, to choose the next default.

    python -m examples.toy.pilot_default --output_dir outputs/default-pilot --results_dir examples/toy/results/default
    python -m examples.toy.pilot_default --variants baseline cosine --usit_steps 4000   # a subset

Everything but the diffusion recipe is the built-in default's (`DEFAULT_MODES["default"]`, `--mode default`): its
data, its structured autoencoder (by default the bundled pipeline's own, `--autoencoder`: the one `--mode default`
trained; `train` trains it again with the mode's command line), its scaling factor and latent cache, and its
classifier (trained on that autoencoder's reconstructions). Each variant of `VARIANTS` then trains a USiT for
`--usit_steps` steps with the default's command line changed as the variant says (`toy_stages.usit_command`'s
`overrides`), two jobs at a time, seed `--seed`; in this process every checkpoint of every variant is scored as the
recipe scores its own (`evaluate_checkpoints`: class accuracy and classifier FD of `--num_samples` class-balanced
euler samples, without guidance and at CFG 3). `pilot.json` in `--results_dir` holds the rows, each variant's flags
and seconds per step (`measure_sweep.seconds_per_step`, disturbed by whatever else ran) and the classifier's info.
Re-running the same command skips what is done (the job pool's records refuse a changed variant).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from dc_ae_hf.checks import check_int, exit_on_user_error, invalid

DEFAULT_BUNDLED_VAE = Path(__file__).resolve().parents[2] / "dc_ae_hf" / "assets" / "toy-dcae15-shapes" / "vae"
# name -> (USiT config changes, objective, trainer flags that replace or add to the default's). The default mode:
# DEFAULT_USIT_CONFIG (6 layers, hidden 128), one-pass augmented training (per_sample), constant LR 1e-3.
VARIANTS: dict[str, tuple[dict, str, dict]] = {
    "baseline": ({}, "per_sample", {}),
    "cosine": ({}, "per_sample", {"--lr_scheduler": "cosine"}),
    "wide": ({"attention_head_dim": 64}, "per_sample", {}),  # hidden 256
    "plain": ({}, "plain", {}),
    "wide_cosine": ({"attention_head_dim": 64}, "per_sample", {"--lr_scheduler": "cosine"}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.toy.pilot_default", description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", default="outputs/default-pilot")
    parser.add_argument("--results_dir", default="examples/toy/results/default")
    parser.add_argument("--output_name", default="pilot.json", help="file name in --results_dir")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--usit_steps", type=int, default=4000)
    parser.add_argument("--usit_checkpoints", type=int, default=4)
    parser.add_argument("--num_samples", type=int, default=300, help="class-balanced samples per checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_parallel", type=int, default=2)
    parser.add_argument(
        "--autoencoder",
        default=str(DEFAULT_BUNDLED_VAE),
        help="the structured autoencoder folder to use, or 'train' to train it with the default mode's command",
    )
    parser.add_argument("--smoke", action="store_true", help="the default-smoke mode's data and budgets (the test)")
    args = parser.parse_args(argv)
    try:
        for flag in ("usit_steps", "usit_checkpoints", "num_samples", "max_parallel"):
            check_int(f"--{flag}", getattr(args, flag), minimum=1)
        check_int("--seed", args.seed, minimum=0)
        if args.autoencoder != "train" and not (Path(args.autoencoder) / "config.json").is_file():
            raise invalid("--autoencoder", args.autoencoder, "must be an autoencoder folder (config.json) or 'train'")
    except ValueError as error:
        parser.error(str(error))
    return args


if __name__ == "__main__":  # the flags first: --help and argument errors answer before the heavy imports
    parse_args()  # (main below parses them again, in a millisecond)

import torch

from examples.toy.measure_sweep import seconds_per_step
from examples.toy.toy_evaluation import (
    EvaluatedRun,
    evaluate_checkpoints,
    evaluate_classifier,
    load_autoencoder,
    load_imagefolder,
    reconstruct,
    saved_classifier,
)
from examples.toy.toy_scheduler import Job, Timings
from examples.toy.toy_settings import CHANNEL_CHOICES, DEFAULT_MODES, DEFAULT_USIT_CONFIG, DefaultSettings
from examples.toy.toy_stages import (
    autoencoder_jobs,
    data_exists,
    default_jobs,
    run_trainer_jobs,
    sweep_objective_flags,
    usit_command,
    write_configs,
    write_data,
    write_diffusion_vae,
)


def pilot_settings(args: argparse.Namespace) -> DefaultSettings:
    """The default mode's settings (or default-smoke's with `--smoke`) with the pilot's budget."""
    base = DEFAULT_MODES["default-smoke" if args.smoke else "default"]
    return dataclasses.replace(
        base,
        usit_steps=args.usit_steps,
        usit_checkpoints=args.usit_checkpoints,
        num_samples=args.num_samples,
        seed=args.seed,
    )


def variant_job(out: Path, settings: DefaultSettings, name: str, after: str) -> Job:
    """One variant's diffusion run: the default's command line with the variant's config and flags."""
    changes, objective, flags = VARIANTS[name]
    config = out / "configs" / f"usit_{name}.json"
    config.write_text(json.dumps({**DEFAULT_USIT_CONFIG, **changes}, indent=1))
    folder = out / "usit" / name
    overrides = {"--model_config": config, **flags}
    command = usit_command(
        out,
        out / "latents_ae_struct",
        sweep_objective_flags(objective, CHANNEL_CHOICES),
        folder,
        settings.seed,
        settings,
        overrides,
    )
    return Job(f"usit_{name}", "diffusion", command, folder / "pipeline" / "model_index.json", after=(after,))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    settings = pilot_settings(args)
    out = Path(args.output_dir).resolve()
    timings = Timings(out / "timings.json")
    if not data_exists(out):
        timings.timed("data", "data", lambda: write_data(out, settings))
    write_configs(out, DEFAULT_USIT_CONFIG)
    if args.autoencoder == "train":
        run_trainer_jobs(autoencoder_jobs(out, settings, ("ae_struct",)), out, args.max_parallel, timings)
    elif not (out / "ae_struct" / "vae_ema" / "config.json").is_file():
        shutil.copytree(args.autoencoder, out / "ae_struct" / "vae_ema", dirs_exist_ok=True)
    train = load_imagefolder(out / "data" / "train")
    heldout = load_imagefolder(out / "data" / "heldout")
    balanced = torch.linspace(0, len(train[0]) - 1, min(len(train[0]), 1000)).long()  # sorted by class
    write_diffusion_vae(out, "ae_struct", train[0][balanced])
    cache = default_jobs(out, settings)[0]
    jobs = [variant_job(out, settings, name, cache.name) for name in args.variants]
    run_trainer_jobs([cache, *jobs], out, args.max_parallel, timings)

    vaes = {"ae_struct": load_autoencoder(out / "ae_struct" / "vae_ema")}
    classifier, classifier_info = saved_classifier(
        out / "eval" / "classifier", lambda: evaluate_classifier(vaes, train, heldout, settings)
    )
    references = {"ae_struct": reconstruct(vaes["ae_struct"], heldout[0])}
    runs = [EvaluatedRun(name, settings.seed, out / "usit" / name, "ae_struct", 1) for name in args.variants]
    rows = evaluate_checkpoints(
        out / "eval" / "pilot.json", runs, vaes, classifier, references, settings.num_samples, settings.sample_steps
    )
    results = {
        "settings": {**dataclasses.asdict(settings), "autoencoder": args.autoencoder},
        "variants": {name: dict(zip(("config", "objective", "flags"), VARIANTS[name])) for name in args.variants},
        "seconds_per_step": {
            name: seconds_per_step((out / "logs" / f"usit_{name}.log").read_text()) for name in args.variants
        },
        "classifier": classifier_info,
        "rows": rows,
    }
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / args.output_name).write_text(json.dumps(results, indent=1))
    print_table(rows)
    return results


def print_table(rows: list[dict]) -> None:
    """Class accuracy (CFG 1 / CFG 3) of every variant at every checkpoint."""
    table: dict[tuple[str, int], dict[float, float]] = {}
    for row in rows:
        table.setdefault((row["run"], row["step"]), {})[row["guidance_scale"]] = row["class_accuracy"]
    print("| variant | step | class accuracy CFG 1 | CFG 3 |\n|---|---|---|---|")
    for (run, step), accuracy in sorted(table.items()):
        print(f"| {run} | {step} | {accuracy.get(1.0, float('nan')):.3f} | {accuracy.get(3.0, float('nan')):.3f} |")


if __name__ == "__main__":
    exit_on_user_error(main)
