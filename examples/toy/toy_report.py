"""The recipe's outputs: the results dict and its files (tables, plots, pictures) and the bundled pipeline.

Files of `--results_dir`:

- `results.json` (`results_summary`: every number, setting and job wall time), `results.md` (`write_markdown`)
  and `plots.png` (`make_plots`), all written by `write_report`;
- `prefix_grid_structured.png`, `prefix_grid_plain.png` (`write_prefix_grids`: one held-out image per class,
  then its reconstructions from the first c' channels, c' in `GRID_CHANNELS`);
- `samples_struct_aug.png` (`sample_grid`: 4 samples per class, one row per class).

`write_bundle` copies the final `struct_aug` pipeline with a model card (how `dc_ae_hf/assets/toy-dcae15-shapes`
was made). Diffusion numbers are summarised over seeds by `aggregate`: mean, min and max per run and step.

The channel sweep (`--mode sweep`) writes `results.json` (`sweep_results_summary`), `results.md`
(`write_sweep_markdown`: reconstruction vs c, generation vs c, the Table 5 cells at equal steps and at equal
passes, every checkpoint) and `SWEEP_PLOTS` (`make_sweep_plots`), all by `write_sweep_report`.

The regime modes (`--mode regime`) write `results.json` (`regime_results_summary` plus `regime_speedups` and
`regime_headline`), `results.md` (`write_regime_markdown`: reconstruction per prefix, the arms at equal steps and
at equal compute, the speed-ups against arms (i) and (ii), the headline in words, every checkpoint) and
`REGIME_PLOTS` (`make_regime_plots`), all by `write_regime_report`.
"""

from __future__ import annotations

import json
import shutil
from itertools import product
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import make_image_grid
from PIL import Image, ImageOps

from dc_ae_hf.checks import check_int
from dc_ae_hf.data.shapes import SHAPE_CLASSES
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from dc_ae_hf.self_contained import make_self_contained
from dc_ae_hf.training.cards import write_pipeline_card
from dc_ae_hf.visualization import prefix_reconstruction_grid
from examples.toy.toy_settings import (
    AUGMENTED_PASSES,
    AUTOENCODER_CONFIG,
    CHANNEL_CHOICES,
    DEFAULT_RUN,
    DEFAULT_USIT_CONFIG,
    EVAL_GUIDANCE_SCALES,
    GRID_CHANNELS,
    LATENT_CHANNELS,
    REGIME_ARM_LABELS,
    REGIME_ARMS,
    REGIME_USIT_CONFIG,
    RUN_LABELS,
    RUNS,
    SWEEP_OBJECTIVE_LABELS,
    SWEEP_OBJECTIVES,
    SWEEP_PREFIX_STEP,
    USIT_CONFIG,
    DefaultSettings,
    ModeSettings,
    RegimeSettings,
    SweepSettings,
    sweep_autoencoders,
    sweep_runs,
    usit_hidden_size,
)

AE_COLUMNS = ("structured", "plain_zeroed", "plain_finetuned")  # the reconstruction table's columns


def aggregate(
    rows: list[dict], key: str, guidance_scale: float, runs: tuple[str, ...] | list[str] = RUNS
) -> dict[str, dict[int, tuple[float, float, float, int]]]:
    """run -> step -> (mean, min, max, passes) of `key` over seeds, for the rows sampled with `guidance_scale`, for
    every run of `runs` (default: the full and quick modes' `RUNS`)."""
    rows = [r for r in rows if r["guidance_scale"] == guidance_scale]
    table: dict[str, dict[int, tuple]] = {}
    for run in runs:
        table[run] = {}
        for step in sorted({r["step"] for r in rows if r["run"] == run}):
            matching = [r for r in rows if r["run"] == run and r["step"] == step]
            values = np.array([r[key] for r in matching], dtype=np.float64)
            table[run][step] = (float(values.mean()), float(values.min()), float(values.max()), matching[0]["passes"])
    return table


def results_summary(
    mode: str,
    settings: ModeSettings,
    ae_results: dict,
    classifier_info: dict,
    rows: list[dict],
    stage_seconds: dict[str, float],
    job_seconds: dict[str, dict],
    max_parallel: int,
) -> dict:
    """The results dict that `run_recipe.main` returns and `results.json` holds."""
    struct_full = ae_results["structured"][str(LATENT_CHANNELS)]["psnr"]
    plain_full = ae_results["plain_zeroed"][str(LATENT_CHANNELS)]["psnr"]
    return {
        "mode": mode,
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
        "job_seconds": job_seconds,
        "max_parallel": max_parallel,
    }


def write_report(results_dir: Path, results: dict) -> None:
    """`results.json`, `results.md` and `plots.png` of a results dict (`results_summary`)."""
    (results_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    write_markdown(results_dir / "results.md", results["mode"], results)
    make_plots(results_dir / "plots.png", results["autoencoders"], results["diffusion"])


def write_markdown(path: Path, mode: str, results: dict) -> None:
    """The tables of `results.md`: reconstruction per c', classifier, diffusion per checkpoint, wall times."""
    lines = [
        f"# Toy DC-AE 1.5 recipe results ({mode} mode)",
        "",
        "## Reconstruction on held-out images (PSNR dB / SSIM)",
        "",
        "| c' | structured | plain, trailing channels zeroed | plain, decoder fine-tuned for c' |",
        "|---|---|---|---|",
    ]
    ae = results["autoencoders"]
    for c in CHANNEL_CHOICES:
        cells = []
        for name in AE_COLUMNS:
            value = ae[name].get(str(c))
            cells.append(f"{value['psnr']:.2f} / {value['ssim']:.3f}" if value else "-")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")

    lines += [
        "",
        f"Full-channel cost of structure: structured minus plain PSNR at c = {LATENT_CHANNELS}: "
        f"{results['structure_cost_psnr_db']:+.2f} dB.",
        "",
        "## Classifier (trained on the structured AE's reconstructions of training images)",
        "",
        "| images | class accuracy |",
        "|---|---|",
    ]
    classifier = results["classifier"]
    lines += [f"| {name} | {value:.3f} |" for name, value in classifier["accuracy"].items()]
    floor = ", ".join(f"{k}: {v:.3f}" for k, v in classifier["fd_floor"].items())
    lines += [
        "",
        "Classifier FD floor (reconstructions of *training* images vs the held-out reference, same N as the "
        f"samples): {floor}",
        "",
    ]

    sample_steps = results["settings"]["sample_steps"]
    header = " | ".join(f"class accuracy, CFG {g:g} | classifier FD, CFG {g:g}" for g in EVAL_GUIDANCE_SCALES)
    lines += [
        f"## Diffusion (EMA weights; euler, {sample_steps} steps; mean over seeds [min, max])",
        "",
        f"| run | step | passes | {header} |",
        "|---|---|---|" + "---|---|" * len(EVAL_GUIDANCE_SCALES),
    ]
    rows = results["diffusion"]
    tables = [
        (aggregate(rows, "class_accuracy", g), aggregate(rows, "classifier_fd", g)) for g in EVAL_GUIDANCE_SCALES
    ]
    for run in RUNS:
        for step in sorted(tables[0][0][run]):
            cells = [f"{run}", f"{step}", f"{tables[0][0][run][step][3]}"]
            for accuracy, fd in tables:
                a, f = accuracy[run][step], fd[run][step]
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
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in results["stage_seconds"].items()]
    path.write_text("\n".join(lines) + "\n")


def make_plots(path: Path, ae_results: dict, rows: list[dict]) -> None:
    """`plots.png`: PSNR and SSIM vs c' (top left); classifier FD and class accuracy of the diffusion runs vs steps
    and vs passes (compute), without guidance and with the guided scale (bars: seed min/max)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(21, 9))
    for ax, metric in zip(axes[0, :2], ("psnr", "ssim")):
        for name, style in zip(AE_COLUMNS, ("o-", "s--", "^:")):
            cs = sorted(int(c) for c in ae_results[name])
            ax.plot(cs, [ae_results[name][str(c)][metric] for c in cs], style, label=name.replace("_", " "))
        ax.set_xlabel("latent channels used c'")
        ax.set_ylabel(f"held-out {metric.upper()}")
        ax.set_title(f"reconstruction {metric.upper()} vs channels")
        ax.grid(alpha=0.3)
        ax.legend()

    unguided, guided = EVAL_GUIDANCE_SCALES
    panels = [
        (axes[0, 2], "classifier_fd", "step", unguided),
        (axes[0, 3], "classifier_fd", "passes", unguided),
        (axes[1, 0], "class_accuracy", "step", unguided),
        (axes[1, 1], "class_accuracy", "passes", unguided),
        (axes[1, 2], "class_accuracy", "step", guided),
        (axes[1, 3], "class_accuracy", "passes", guided),
    ]
    for ax, key, x, scale in panels:
        plot_curves(ax, rows, key, x, scale, RUN_LABELS)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_curves(
    ax,
    rows: list[dict],
    key: str,
    x: str,
    scale: float,
    labels: dict[str, str],
    legend: bool = True,
    tokens: dict[str, int] | None = None,
) -> None:
    """One panel: `key` of the runs in `labels` (run -> legend label) vs steps (`x` = "step"), passes (`x` =
    "passes") or passes x latent tokens (`x` = "compute", with `tokens`: run -> tokens per image), sampled with
    guidance `scale`; the mean over seeds with bars from the seed min to max. With `legend=False` the caller places
    the legend (the labels stay on the lines)."""
    if x == "compute" and tokens is None:
        raise ValueError("x='compute' needs the tokens per image of every run")
    table = aggregate(rows, key, scale, list(labels))
    for run, label in labels.items():
        steps = sorted(table[run])
        if not steps:
            continue
        per_pass = tokens[run] if x == "compute" else 1
        xs = [step if x == "step" else table[run][step][3] * per_pass for step in steps]
        mean = [table[run][s][0] for s in steps]
        low = [table[run][s][0] - table[run][s][1] for s in steps]
        high = [table[run][s][2] - table[run][s][0] for s in steps]
        ax.errorbar(xs, mean, yerr=[low, high], marker="o", capsize=3, label=label)
    xlabel = {
        "step": "optimisation steps",
        "passes": "forward/backward passes (compute)",
        "compute": "passes x latent tokens (compute)",
    }
    ax.set_xlabel(xlabel[x])
    ax.set_ylabel(key.replace("_", " "))
    versus = "steps" if x == "step" else "compute"
    ax.set_title(f"{key.replace('_', ' ')} (CFG {scale:g}) vs {versus}", fontsize=10)
    ax.text(0.01, 0.01, "bars: seed min/max", transform=ax.transAxes, fontsize=7)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)


def write_prefix_grids(
    results_dir: Path, struct: AutoencoderDC15, plain: AutoencoderDC15, heldout: torch.Tensor
) -> None:
    """`prefix_grid_structured.png` and `prefix_grid_plain.png` (`prefix_reconstruction_grid`) of one held-out
    image per class: the imagefolder is sorted by class, so evenly spaced images are one of each."""
    count = len(SHAPE_CLASSES)
    images = heldout[torch.arange(count) * (len(heldout) // count)]
    for name, vae in (("structured", struct), ("plain", plain)):
        prefix_reconstruction_grid(vae, images, GRID_CHANNELS).save(results_dir / f"prefix_grid_{name}.png")


def sample_grid(images: list[Image.Image], columns: int, border: int = 1, upscale: int = 3) -> Image.Image:
    """Equally sized images in a grid of `columns` columns (`diffusers.utils.make_image_grid`), every cell and the
    whole grid framed by `border` white pixels (cells 2 * border apart and from the edge), then enlarged
    `upscale` times with nearest-neighbour resampling (for viewing 32 px samples)."""
    check_int("columns", columns, minimum=1)
    check_int("border", border, minimum=0)
    check_int("upscale", upscale, minimum=1)
    if not images or len(images) % columns:
        raise ValueError(f"sample_grid needs a non-empty multiple of columns={columns} images, got {len(images)}")
    cells = [ImageOps.expand(image.convert("RGB"), border=border, fill="white") for image in images]
    grid = make_image_grid(cells, rows=len(cells) // columns, cols=columns)
    grid = ImageOps.expand(grid, border=border, fill="white")
    return grid.resize((grid.width * upscale, grid.height * upscale), Image.NEAREST)


BUNDLE_TRAINING = {  # how each bundled run's transformer was trained, for its card
    "struct_aug": "the full latent plus one random prefix per step",
    DEFAULT_RUN: "one pass per step: a random prefix c' per sample, the full latent on half of each batch",
}


def write_bundle(
    source: Path,
    target: str | Path,
    mode: str,
    settings: ModeSettings | DefaultSettings,
    ae_results: dict,
    rows: list[dict],
    run: str = "struct_aug",
    classifier_info: dict | None = None,
) -> None:
    """Copy the final pipeline of `run` (`BUNDLE_TRAINING`: `struct_aug` of the full and quick modes, or the
    built-in default's `DEFAULT_RUN`) to `target`, self-contained (its code generated from dc_ae_hf, so plain
    diffusers loads it), and give it a model card that says what it is: the toy recipe's model, loaded from `target`
    as typed, sampled the way the recipe evaluates it, with its measured numbers (the final checkpoint of seed
    `settings.seeds[0]`; with `classifier_info`, also the classifier's own held-out accuracy, and for a
    `DefaultSettings` the target accuracy and whether it is met). Local paths are removed from its configs."""
    if run not in BUNDLE_TRAINING:
        raise ValueError(f"run={run!r} cannot be bundled: choose one of {list(BUNDLE_TRAINING)}")
    seed, step = settings.seeds[0], settings.usit_steps
    final = {r["guidance_scale"]: r for r in rows if (r["run"], r["seed"], r["step"]) == (run, seed, step)}
    if not final:
        raise ValueError(f"no evaluation of run {run}, seed {seed}, step {step} among the rows to bundle")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    configs = [Path(target) / "model_index.json", *Path(target).glob("*/config.json")]
    for config_file in configs:  # diffusers records the local folder it loaded from
        config = json.loads(config_file.read_text())
        if config.pop("_name_or_path", None) is not None:
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    make_self_contained(target)  # loads with plain diffusers too (trust_remote_code=True); the weights are untouched
    pipe = DCAE15Pipeline.from_pretrained(target)
    table = ["| guidance | class accuracy | classifier FD |", "|---|---|---|"]
    table += [f"| {g:g} | {final[g]['class_accuracy']:.3f} | {final[g]['classifier_fd']:.1f} |" for g in sorted(final)]
    psnr = ae_results["structured"]
    prefixes = ", ".join(f"c'={c}: {psnr[str(c)]['psnr']:.2f} dB" for c in (4, 8, 16, LATENT_CHANNELS))
    scorer = "small classifier trained on the autoencoder's reconstructions (`dc_ae_hf/metrics/classifier.py`"
    if classifier_info is not None:
        real = classifier_info["accuracy"]["held-out real images"]
        scorer += f", {classifier_info['steps']} steps; {real:.3f} accuracy on held-out real images"
    guided = final[EVAL_GUIDANCE_SCALES[-1]]["class_accuracy"]
    verdict = []
    if isinstance(settings, DefaultSettings):
        target_accuracy = settings.target_accuracy
        reached = "met" if guided >= target_accuracy else f"missed by {target_accuracy - guided:.3f}"
        verdict = [
            f"Target: guided (CFG {EVAL_GUIDANCE_SCALES[-1]:g}) class accuracy >= {target_accuracy:g}; measured "
            f"{guided:.3f}: {reached}."
        ]
    metrics = "\n\n".join(
        [
            f"{settings.num_samples} class-balanced samples (euler, {settings.sample_steps} steps), scored by a "
            f"{scorer}; chance = 0.1):",
            "\n".join(table),
            *verdict,
            f"Autoencoder, held-out PSNR from the first c' channels: {prefixes}. Comparison with the baselines: "
            "`examples/toy/README.md`.",
        ]
    )
    quality = (
        f"It gives the requested shape class {guided:.0%} of the time at guidance {EVAL_GUIDANCE_SCALES[-1]:g} "
        "(by the recipe's classifier)."
    )
    write_pipeline_card(
        target,
        pipe,
        model_name=Path(target).name,
        repo_id=str(target),
        description=(
            "The built-in default of `dc_ae_hf`: a tiny DC-AE 1.5 (structured latent, paper Eq. 1) and a USiT "
            "trained with augmented diffusion training (paper Eq. 2) on the procedural 32 px shapes dataset "
            f"(`dc_ae_hf/data/shapes.py`), for trying the API offline. {quality}"
        ),
        source=f"`examples/toy/run_recipe.py --mode {mode}`, run `{run}`, seed {seed}",
        provenance=(
            f"Autoencoder: {settings.ae_steps} steps of `training/train_dc_ae.py` (L1, c' in {CHANNEL_CHOICES}) "
            f"on {settings.num_train_images} images. Transformer: {step} steps of `training/train_usit.py` on the "
            f"cached latents (batch {settings.usit_batch_size}, {BUNDLE_TRAINING[run]}), EMA weights. Every "
            "command and setting: `examples/toy/toy_stages.py` and `examples/toy/toy_settings.py`."
        ),
        metrics_table=metrics,
        guidance_scale=EVAL_GUIDANCE_SCALES[-1],
        solver="euler",
        num_inference_steps=settings.sample_steps,
    )


# The built-in default (`--mode default`): results.json, results.md and curves.png (`write_default_report`).


def default_results_summary(
    mode: str,
    settings: DefaultSettings,
    ae_results: dict,
    classifier_info: dict,
    rows: list[dict],
    stage_seconds: dict[str, float],
    job_seconds: dict[str, dict],
) -> dict:
    """The results dict of a built-in-default mode (`run_recipe.run_default` returns it, `results.json` holds it),
    with ``"final"``: the last checkpoint's row per guidance scale, and ``"target_met"``: whether its guided class
    accuracy reaches `settings.target_accuracy`."""
    final = {str(r["guidance_scale"]): r for r in rows if (r["run"], r["step"]) == (DEFAULT_RUN, settings.usit_steps)}
    guided = final.get(str(EVAL_GUIDANCE_SCALES[-1]))
    return {
        "mode": mode,
        "settings": vars(settings),
        "autoencoder_config": AUTOENCODER_CONFIG,
        "usit_config": DEFAULT_USIT_CONFIG,
        "channel_choices": CHANNEL_CHOICES,
        "run": DEFAULT_RUN,
        "autoencoders": ae_results,
        "classifier": classifier_info,
        "diffusion": rows,
        "final": final,
        "target_met": guided is not None and guided["class_accuracy"] >= settings.target_accuracy,
        "stage_seconds": stage_seconds,
        "job_seconds": job_seconds,
    }


def write_default_report(results_dir: Path, results: dict) -> None:
    """`results.json`, `results.md` (reconstruction per c', the classifier, every checkpoint, the target) and
    `curves.png` (class accuracy and classifier FD vs steps, both guidance scales) of `default_results_summary`."""
    (results_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    settings, rows = results["settings"], results["diffusion"]
    lines = [
        f"# The built-in default ({results['mode']} mode)",
        "",
        "## Reconstruction on held-out images (structured autoencoder, PSNR dB / SSIM)",
        "",
        "| c' | " + " | ".join(str(c) for c in CHANNEL_CHOICES) + " |",
        "|---|" + "---|" * len(CHANNEL_CHOICES),
    ]
    table = results["autoencoders"]["structured"]
    lines.append(
        "| PSNR / SSIM | "
        + " | ".join(f"{table[str(c)]['psnr']:.2f} / {table[str(c)]['ssim']:.3f}" for c in CHANNEL_CHOICES)
        + " |"
    )
    classifier = results["classifier"]
    lines += ["", f"## Classifier ({classifier['steps']} steps on the reconstructions of the training images)", ""]
    lines += ["| images | class accuracy |", "|---|---|"]
    for name, value in classifier["accuracy"].items():  # real images, then each autoencoder's reconstructions
        label = name if name.startswith("held-out") else f"held-out reconstructions ({name})"
        lines.append(f"| {label} | {value:.3f} |")
    floor = ", ".join(f"{value:.3f}" for value in classifier["fd_floor"].values())
    lines += ["", f"Classifier FD floor (reconstructions of training images vs the held-out reference): {floor}", ""]
    header = " | ".join(f"class accuracy, CFG {g:g} | classifier FD, CFG {g:g}" for g in EVAL_GUIDANCE_SCALES)
    lines += [
        f"## Diffusion (`{results['run']}`, seed {settings['seed']}; EMA weights; {settings['num_samples']} "
        f"class-balanced samples, euler, {settings['sample_steps']} steps)",
        "",
        f"| step | {header} |",
        "|---|" + "---|---|" * len(EVAL_GUIDANCE_SCALES),
    ]
    by_step: dict[int, dict[float, dict]] = {}
    for row in rows:
        by_step.setdefault(row["step"], {})[row["guidance_scale"]] = row
    for step in sorted(by_step):
        cells = [str(step)]
        for g in EVAL_GUIDANCE_SCALES:
            row = by_step[step].get(g)
            cells += [f"{row['class_accuracy']:.3f}", f"{row['classifier_fd']:.1f}"] if row else ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    guided = results["final"].get(str(EVAL_GUIDANCE_SCALES[-1]))
    target = settings["target_accuracy"]
    if guided is None:
        verdict = f"The final step {settings['usit_steps']} has not been evaluated."
    else:
        accuracy = guided["class_accuracy"]
        met = "met" if results["target_met"] else f"missed by {target - accuracy:.3f}"
        verdict = f"Target (guided class accuracy >= {target:g} at the final step): {met} ({accuracy:.3f})."
    lines += ["", verdict, "", "## Wall time per stage (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in results["stage_seconds"].items()]
    (results_dir / "results.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labels = {results["run"]: "structured AE + one-pass augmented diffusion"}
    for ax, key in zip(axes, ("class_accuracy", "classifier_fd")):
        for scale in EVAL_GUIDANCE_SCALES:
            plot_curves(ax, rows, key, "step", scale, {results["run"]: f"{labels[results['run']]}, CFG {scale:g}"})
        ax.set_title(f"{key.replace('_', ' ')} vs steps", fontsize=10)
    axes[0].axhline(target, color="grey", linestyle="--", linewidth=1)
    fig.tight_layout()
    fig.savefig(results_dir / "curves.png", dpi=90)
    plt.close(fig)


# The channel sweep (`--mode sweep`): results.json, results.md and three plots (`write_sweep_report`).

SWEEP_PLOTS = ("reconstruction_vs_c.png", "generation_vs_c.png", "curves.png")
LATENT_LABELS = {True: "structured", False: "plain"}


def sweep_results_summary(
    mode: str,
    settings: SweepSettings,
    reconstruction: dict,
    classifier_info: dict,
    rows: list[dict],
    stage_seconds: dict[str, float],
    job_seconds: dict[str, dict],
    max_parallel: int,
) -> dict:
    """The results dict of a sweep mode (`results.json`): settings, what each autoencoder and run is, the
    reconstruction table (`evaluate_sweep_autoencoders`), the classifier, every diffusion row, the wall times."""
    autoencoders = {
        ae.name: {
            "latent_channels": ae.latent_channels,
            "structured": ae.structured,
            "channel_choices": ae.channel_choices,
        }
        for ae in sweep_autoencoders(settings)
    }
    runs: dict[str, dict] = {}
    for run in sweep_runs(settings):
        entry = runs.setdefault(
            run.name,
            {
                "autoencoder": run.autoencoder.name,
                "latent_channels": run.autoencoder.latent_channels,
                "structured": run.autoencoder.structured,
                "objective": run.objective,
                "passes_per_step": run.passes_per_step,
                "seeds": [],
            },
        )
        entry["seeds"].append(run.seed)
    return {
        "mode": mode,
        "settings": vars(settings),
        "autoencoder_config": AUTOENCODER_CONFIG,
        "usit_config": USIT_CONFIG,
        "prefix_step": SWEEP_PREFIX_STEP,
        "augmented_passes_per_step": AUGMENTED_PASSES,
        "autoencoders": autoencoders,
        "runs": runs,
        "reconstruction": reconstruction,
        "classifier": classifier_info,
        "diffusion": rows,
        "stage_seconds": stage_seconds,
        "job_seconds": job_seconds,
        "max_parallel": max_parallel,
    }


def table5_runs(results: dict) -> list[str]:
    """The Table 5 cells at the largest c, in table order: structured then plain latent, each with the plain,
    per_pass and per_sample objective."""
    largest = results["settings"]["plain_channels"][-1]
    cells = {
        (v["structured"], v["objective"]): name
        for name, v in results["runs"].items()
        if v["latent_channels"] == largest
    }
    return [cells[(structured, objective)] for structured in (True, False) for objective in SWEEP_OBJECTIVES]


def channel_runs(results: dict) -> list[str]:
    """Fig. 1b's runs: the plain objective on every plain autoencoder, by increasing c."""
    runs = [(v["latent_channels"], name) for name, v in results["runs"].items() if not v["structured"]]
    return [name for c, name in sorted(runs) if results["runs"][name]["objective"] == "plain"]


def run_label(results: dict, run: str) -> str:
    """A legend for a sweep run: its latent and objective (`SWEEP_OBJECTIVE_LABELS`)."""
    entry = results["runs"][run]
    latent = LATENT_LABELS[entry["structured"]]
    return f"{latent} c={entry['latent_channels']}, {SWEEP_OBJECTIVE_LABELS[entry['objective']]}"


def common_step(rows: list[dict], runs: list[str], by: str = "step") -> int | None:
    """The largest step (`by` = "step") or pass count (`by` = "passes") at which every run of `runs` has an
    evaluation; None when there is none."""
    common = None
    for run in runs:
        values = {r[by] for r in rows if r["run"] == run}
        common = values if common is None else common & values
    return max(common) if common else None


def _step_at(rows: list[dict], run: str, by: str, value: int) -> int:
    """The step of `run` whose `by` ("step" or "passes") is `value`."""
    return next(r["step"] for r in rows if r["run"] == run and r[by] == value)


def _metric_cells(tables: list[tuple[dict, dict]], run: str, step: int) -> list[str]:
    """`mean [min, max]` of class accuracy and classifier FD at every guidance scale, for one run and step."""
    cells = []
    for accuracy, fd in tables:
        a, f = accuracy[run].get(step), fd[run].get(step)
        cells += [
            f"{a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}]" if a else "-",
            f"{f[0]:.1f} [{f[1]:.1f}, {f[2]:.1f}]" if f else "-",
        ]
    return cells


def steps_to_reach(curve: dict[int, tuple], target: float, higher_is_better: bool = True) -> float | None:
    """The first step at which a seed-mean curve (step -> (mean, ...), `aggregate`) reaches `target`, linearly
    interpolated between checkpoints; the first checkpoint's step when it is reached there already (an upper bound:
    nothing earlier was measured); None when it is never reached."""
    sign = 1.0 if higher_is_better else -1.0
    previous = None
    for step in sorted(curve):
        value = curve[step][0]
        if sign * (value - target) >= 0:
            if previous is None:
                return float(step)
            (p_step, p_value) = previous
            return p_step + (step - p_step) * (target - p_value) / (value - p_value)
        previous = (step, value)
    return None


def speedup_rows(results: dict) -> list[dict]:
    """How much sooner each augmented Table 5 cell reaches the plain objective's final value on the same latent, in
    steps and in passes (compute), for class accuracy and classifier FD at every guidance scale (the paper's 6x is
    this ratio in steps, at a fixed FID). Rows: latent, objective, metric, guidance, target, the plain run's final
    step and passes, the step and passes at which the augmented run reached the target (None: never within the
    run), and the two ratios (> 1: faster than the plain objective)."""
    rows, out = results["diffusion"], []
    cells = table5_runs(results)
    for structured, name in ((True, cells[0]), (False, cells[3])):
        baseline = results["runs"][name]
        for objective in ("per_pass", "per_sample"):
            run = next(
                r
                for r in cells
                if results["runs"][r]["structured"] == structured and results["runs"][r]["objective"] == objective
            )
            passes = results["runs"][run]["passes_per_step"]
            for metric, higher in (("class_accuracy", True), ("classifier_fd", False)):
                for g in EVAL_GUIDANCE_SCALES:
                    table = aggregate(rows, metric, g, [name, run])
                    if not table[name] or not table[run]:
                        continue
                    final = max(table[name])
                    target = table[name][final][0]
                    reached = steps_to_reach(table[run], target, higher)
                    out.append(
                        {
                            "latent": LATENT_LABELS[structured],
                            "objective": objective,
                            "metric": metric,
                            "guidance_scale": g,
                            "target": target,
                            "plain_steps": final,
                            "plain_passes": final * baseline["passes_per_step"],
                            "reached_step": reached,
                            "reached_passes": None if reached is None else reached * passes,
                            "speedup_steps": None if reached is None else final / reached,
                            "speedup_passes": None
                            if reached is None
                            else final * baseline["passes_per_step"] / (reached * passes),
                            "first_checkpoint": min(table[run]),
                        }
                    )
    return out


def write_sweep_markdown(path: Path, results: dict) -> None:
    """`results.md` of a sweep: reconstruction vs c, the classifier, generation vs c, the Table 5 cells at equal
    steps and at equal passes (mean over seeds [min, max]), every checkpoint, the wall times."""
    settings, rows, recon = results["settings"], results["diffusion"], results["reconstruction"]
    largest = settings["plain_channels"][-1]
    lines = [f"# Toy DC-AE 1.5 channel sweep ({results['mode']} mode)", ""]
    if results["mode"] != "sweep":
        lines += ["**A smoke run of a few steps: these numbers test the recipe's plumbing and are not results.**", ""]

    structured = sorted(
        (name for name, v in results["autoencoders"].items() if v["structured"]),
        key=lambda name: results["autoencoders"][name]["latent_channels"],
    )
    columns = ["plain AE with c = c'"]
    columns += [f"structured c={results['autoencoders'][name]['latent_channels']}, first c'" for name in structured]
    columns += [f"plain c={largest}, first c' (rest zeroed)"]
    prefixes = sorted({int(c) for table in recon.values() for c in table})
    lines += [
        "## Reconstruction vs c (held-out PSNR dB / SSIM; EMA weights)",
        "",
        "| c' | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for c in prefixes:
        # the plain AE trained with c channels, each structured AE's first c channels, and the largest plain AE's
        # first c channels with the rest zeroed (its full latent is the first column's)
        values = [recon.get(f"ae_plain_c{c}", {}).get(str(c))]
        values += [recon[name].get(str(c)) for name in structured]
        values += [recon[f"ae_plain_c{largest}"].get(str(c)) if c != largest else None]
        cells = [f"{value['psnr']:.2f} / {value['ssim']:.3f}" if value else "-" for value in values]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")

    classifier = results["classifier"]
    lines += ["", f"## Classifier ({classifier['steps']} steps; trained on every AE's reconstructions in turn)", ""]
    lines += ["| images | class accuracy |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in classifier["accuracy"].items()]
    floor = ", ".join(f"{k}: {v:.3f}" for k, v in classifier["fd_floor"].items())
    lines += ["", f"Classifier FD floor (reconstructions of training images vs the held-out reference): {floor}", ""]

    scales = " | ".join(f"class accuracy, CFG {g:g} | classifier FD, CFG {g:g}" for g in EVAL_GUIDANCE_SCALES)
    rule = "---|---|" * len(EVAL_GUIDANCE_SCALES)
    runs = list(results["runs"])
    tables = [
        (aggregate(rows, "class_accuracy", g, runs), aggregate(rows, "classifier_fd", g, runs))
        for g in EVAL_GUIDANCE_SCALES
    ]
    sweep = channel_runs(results)
    step = common_step(rows, sweep)
    lines += [
        f"## Generation vs c: the plain objective on every plain AE, at step {step} (euler, "
        f"{settings['sample_steps']} steps; mean over seeds [min, max])",
        "",
        f"| c | seeds | {scales} | FD floor |",
        f"|---|---|{rule}---|",
    ]
    for run in sweep:
        entry = results["runs"][run]
        floor_value = classifier["fd_floor"].get(entry["autoencoder"])
        cells = [str(entry["latent_channels"]), str(len(entry["seeds"])), *_metric_cells(tables, run, step)]
        lines.append("| " + " | ".join(cells) + f" | {floor_value:.2f} |")

    cells5 = table5_runs(results)
    for by, title in (("step", "equal steps"), ("passes", "equal passes (compute)")):
        value = common_step(rows, cells5, by)
        lines += [
            "",
            f"## Table 5 cells at c = {largest}, {title}: {by} {value}",
            "",
            f"| latent | objective | step | passes | {scales} |",
            f"|---|---|---|---|{rule}",
        ]
        for run in cells5:
            entry = results["runs"][run]
            at = _step_at(rows, run, by, value) if value is not None else None
            cells = [LATENT_LABELS[entry["structured"]], entry["objective"]]
            cells += [str(at), str(at * entry["passes_per_step"])] if at else ["-", "-"]
            cells += _metric_cells(tables, run, at) if at else ["-"] * 2 * len(EVAL_GUIDANCE_SCALES)
            lines.append("| " + " | ".join(cells) + " |")

    lines += [
        "",
        f"## Speed-up of augmented training at c = {largest}: when it reaches the plain objective's final value",
        "",
        "Seed means, linear interpolation between checkpoints; `<=` where the first checkpoint already reached it "
        "(the ratio is then a lower bound); ratios > 1 are faster than the plain objective on the same latent.",
        "",
        "| latent | objective | metric | CFG | target (plain, final) | reached at step | speed-up in steps | "
        "speed-up in passes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in speedup_rows(results):
        target = f"{row['target']:.3f}" if row["metric"] == "class_accuracy" else f"{row['target']:.1f}"
        if row["reached_step"] is None:
            reached, steps, passes = f"not by {row['plain_steps']}", "< 1", "< 1"
        else:
            bound = "<= " if row["reached_step"] == row["first_checkpoint"] else ""
            more = ">= " if bound else ""
            reached = f"{bound}{row['reached_step']:.0f}"
            steps, passes = f"{more}{row['speedup_steps']:.2f}x", f"{more}{row['speedup_passes']:.2f}x"
        metric = "class accuracy" if row["metric"] == "class_accuracy" else "classifier FD"
        lines.append(
            f"| {row['latent']} | {row['objective']} | {metric} | {row['guidance_scale']:g} | {target} | {reached} | "
            f"{steps} | {passes} |"
        )

    lines += ["", "## Every checkpoint (mean over seeds [min, max])", "", f"| run | step | passes | {scales} |"]
    lines += [f"|---|---|---|{rule}"]
    for run in runs:
        for at in sorted(tables[0][0][run]):
            cells = [run, str(at), str(tables[0][0][run][at][3]), *_metric_cells(tables, run, at)]
            lines.append("| " + " | ".join(cells) + " |")

    lines += ["", f"## Wall time per stage (s; one pool of {results['max_parallel']} parallel jobs)", ""]
    lines += ["| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in results["stage_seconds"].items()]
    path.write_text("\n".join(lines) + "\n")


def make_sweep_plots(results_dir: Path, results: dict) -> None:
    """`SWEEP_PLOTS`: reconstruction PSNR / SSIM vs c; class accuracy and classifier FD at the final step vs c
    (the plain objective on every plain AE, and the other Table 5 cells at the largest c); and the curves vs
    steps and vs passes of the Table 5 cells (both guidance scales) and of the plain runs of every c."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    recon, rows = results["reconstruction"], results["diffusion"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    plain = sorted((v["latent_channels"], name) for name, v in results["autoencoders"].items() if not v["structured"])
    for ax, metric in zip(axes, ("psnr", "ssim")):
        ax.plot(
            [c for c, _ in plain], [recon[name][str(c)][metric] for c, name in plain], "ko-", label="plain AE, c = c'"
        )
        for name, entry in results["autoencoders"].items():
            if entry["structured"] or entry["latent_channels"] == plain[-1][0]:
                cs = sorted(int(c) for c in recon[name])
                style = "s-" if entry["structured"] else "^:"
                zeroed = "" if entry["structured"] else " (rest zeroed)"
                label = f"{LATENT_LABELS[entry['structured']]} c={entry['latent_channels']}, first c'{zeroed}"
                ax.plot(cs, [recon[name][str(c)][metric] for c in cs], style, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("latent channels c (plain AEs) / prefix c' (one AE)")
        ax.set_ylabel(f"held-out {metric.upper()}")
        ax.set_title(f"reconstruction {metric.upper()} vs channels")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(results_dir / SWEEP_PLOTS[0], dpi=90)
    plt.close(fig)

    runs = list(results["runs"])
    sweep, cells5 = channel_runs(results), table5_runs(results)
    step = common_step(rows, sweep)
    final = common_step(rows, cells5)
    fig, axes = plt.subplots(1, 2 * len(EVAL_GUIDANCE_SCALES), figsize=(22, 4.5))
    panels = [(key, g) for g in EVAL_GUIDANCE_SCALES for key in ("class_accuracy", "classifier_fd")]
    for ax, (key, g) in zip(axes, panels):
        table = aggregate(rows, key, g, runs)
        cs = [results["runs"][run]["latent_channels"] for run in sweep]
        points = [table[run].get(step) for run in sweep]
        mean = [p[0] if p else np.nan for p in points]
        bars = [[p[0] - p[1] if p else 0 for p in points], [p[2] - p[0] if p else 0 for p in points]]
        ax.errorbar(
            cs, mean, yerr=bars, marker="o", color="k", capsize=3, label=f"plain AE, plain objective, step {step}"
        )
        for run in cells5:
            point = table[run].get(final)
            if point and run not in sweep:
                entry = results["runs"][run]
                ax.errorbar(
                    [entry["latent_channels"]],
                    [point[0]],
                    yerr=[[point[0] - point[1]], [point[2] - point[0]]],
                    marker="s",
                    capsize=3,
                    linestyle="none",
                    label=f"{run_label(results, run)}, step {final}",
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("latent channels c")
        ax.set_ylabel(key.replace("_", " "))
        ax.set_title(f"{key.replace('_', ' ')} (CFG {g:g}) vs c", fontsize=10)
        ax.grid(alpha=0.3)
    # one legend for the four panels, below them (inside a panel it covered the points)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(results_dir / SWEEP_PLOTS[1], dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(3, 4, figsize=(22, 13))
    labels5 = {run: run_label(results, run) for run in cells5}
    labels_c = {run: run_label(results, run) for run in sweep}
    for row, g in enumerate(EVAL_GUIDANCE_SCALES):
        for column, (key, x) in enumerate(product(("class_accuracy", "classifier_fd"), ("step", "passes"))):
            plot_curves(axes[row, column], rows, key, x, g, labels5, legend=False)
    for column, (key, g) in enumerate(product(("class_accuracy", "classifier_fd"), EVAL_GUIDANCE_SCALES)):
        plot_curves(axes[2, column], rows, key, "step", g, labels_c, legend=False)
    fig.tight_layout(rect=(0, 0, 0.76, 1))
    for row in range(3):  # one legend per row, right of its panels (inside a panel it covered the curves)
        axes[row, -1].legend(loc="upper left", bbox_to_anchor=(1.03, 1), fontsize=8, frameon=False)
    fig.savefig(results_dir / SWEEP_PLOTS[2], dpi=90)
    plt.close(fig)


def write_sweep_report(results_dir: Path, results: dict) -> None:
    """`results.json`, `results.md` and the `SWEEP_PLOTS` of a sweep results dict (`sweep_results_summary`)."""
    (results_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    write_sweep_markdown(results_dir / "results.md", results)
    make_sweep_plots(results_dir, results)


# The paper's regime (`--mode regime`): results.json, results.md and two plots (`write_regime_report`).

REGIME_PLOTS = ("reconstruction.png", "curves.png")
# The headline is read on guided (CFG 3) class accuracy: the classifier is trained on every autoencoder's
# reconstructions in turn, so it scores samples of every latent alike; the classifier FD of each run is measured
# against its own autoencoder's reconstructions, so FDs across latents are only roughly comparable (reported too).
REGIME_HEADLINE_METRIC = ("class_accuracy", 3.0)
REGIME_INFORMATIVE_ACCURACY = 0.3  # 3x chance: below it, arm (i)'s final quality is too close to chance to tell
REGIME_COMPUTE_CLAIM = 4.0  # the headline: (iv)/(v) at (i)'s quality for at most 1/4 of its compute
METRIC_LABELS = {"class_accuracy": "class accuracy", "classifier_fd": "classifier FD"}
HIGHER_IS_BETTER = {"class_accuracy": True, "classifier_fd": False}


def regime_results_summary(
    mode: str,
    settings: RegimeSettings,
    reconstruction: dict,
    classifier_info: dict,
    rows: list[dict],
    stage_seconds: dict[str, float],
    job_seconds: dict[str, dict],
    max_parallel: int,
) -> dict:
    """The results dict of a regime mode (`results.json`): `sweep_results_summary`'s, with the regime's USiT, each
    autoencoder's config and spatial compression, and per run its arm, latent tokens and compute per step (passes
    x tokens); `arms` maps each arm to its run. `write_regime_report` adds the speed-ups and the headline."""
    results = sweep_results_summary(
        mode, settings, reconstruction, classifier_info, rows, stage_seconds, job_seconds, max_parallel
    )
    del results["autoencoder_config"]
    autoencoders = {ae.name: ae for ae in sweep_autoencoders(settings)}
    for name, entry in results["autoencoders"].items():
        entry["spatial_compression"] = autoencoders[name].spatial_compression
        entry["tokens"] = settings.tokens(autoencoders[name])
        entry["config"] = autoencoders[name].config
    for name, entry in results["runs"].items():
        entry["arm"] = settings.arm_of(name)
        entry["tokens"] = results["autoencoders"][entry["autoencoder"]]["tokens"]
        entry["compute_per_step"] = entry["passes_per_step"] * entry["tokens"]
    results["usit_config"] = REGIME_USIT_CONFIG
    results["resolution"] = settings.resolution
    results["compression"] = settings.compression
    results["arms"] = {arm: settings.arm(arm, settings.seeds[0]).name for arm in REGIME_ARMS}
    return results


def with_compute(results: dict) -> list[dict]:
    """The diffusion rows with ``"compute"``: passes x the run's latent tokens per image."""
    return [{**r, "compute": r["passes"] * results["runs"][r["run"]]["tokens"]} for r in results["diffusion"]]


def regime_speedups(results: dict) -> list[dict]:
    """How much sooner each arm reaches a reference arm's final value ((i) and (ii)), in steps and in compute
    (passes x tokens), for class accuracy and classifier FD at every guidance scale. Rows: reference, arm, metric,
    guidance, target, the reference's final step and compute, the step and compute at which the arm reached it
    (None: not within its run), its own final compute, the two ratios (> 1: faster than the reference)."""
    rows, runs, arms = results["diffusion"], results["runs"], results["arms"]
    out = []
    for reference in ("i", "ii"):
        base = arms[reference]
        for arm in REGIME_ARMS:
            if arm == reference:
                continue
            run = arms[arm]
            for metric, higher in HIGHER_IS_BETTER.items():
                for g in EVAL_GUIDANCE_SCALES:
                    table = aggregate(rows, metric, g, [base, run])
                    if not table[base] or not table[run]:
                        continue
                    final = max(table[base])
                    target = table[base][final][0]
                    reached = steps_to_reach(table[run], target, higher)
                    base_compute = final * runs[base]["compute_per_step"]
                    compute = None if reached is None else reached * runs[run]["compute_per_step"]
                    out.append(
                        {
                            "reference": reference,
                            "arm": arm,
                            "metric": metric,
                            "guidance_scale": g,
                            "target": target,
                            "reference_steps": final,
                            "reference_compute": base_compute,
                            "reached_step": reached,
                            "reached_compute": compute,
                            "final_compute": max(table[run]) * runs[run]["compute_per_step"],
                            "speedup_steps": None if reached is None else final / reached,
                            "speedup_compute": None if reached is None else base_compute / compute,
                            "first_checkpoint": min(table[run]),
                        }
                    )
    return out


def _point(rows: list[dict], run: str, key: str, scale: float, by: str, value: int) -> tuple | None:
    """(mean, min, max) over seeds of `key` of `run` where its `by` ("step" or "compute") is `value`."""
    values = [r[key] for r in rows if r["run"] == run and r["guidance_scale"] == scale and r[by] == value]
    return (float(np.mean(values)), min(values), max(values)) if values else None


def _compare(a: tuple | None, b: tuple | None, higher: bool) -> str:
    """`a` against `b` (seed (mean, min, max)): "ahead" when a's worst seed beats b's best, "ahead within the seed
    spread" when only the mean is better, "level", "behind within the seed spread", "behind"."""
    if a is None or b is None:
        return "not measured"
    sign = 1 if higher else -1
    if sign * (a[0] - b[0]) > 0:
        worst_a, best_b = (a[1], b[2]) if higher else (a[2], b[1])
        return "ahead" if sign * (worst_a - best_b) > 0 else "ahead within the seed spread"
    if a[0] == b[0]:
        return "level"
    worst_b, best_a = (b[1], a[2]) if higher else (b[2], a[1])
    return "behind" if sign * (worst_b - best_a) > 0 else "behind within the seed spread"


def regime_headline(results: dict) -> dict:
    """Whether the paper's headline holds at this budget, on `REGIME_HEADLINE_METRIC`:

    - `compute_claim` per augmented arm (iv), (v): it reaches arm (i)'s final value with at most 1/4 of (i)'s
      compute (`REGIME_COMPUTE_CLAIM`), with the measured ratio, or not within its run;
    - `versus` per augmented arm and arm (ii), (iii): `_compare` at equal compute (the one-pass high-channel arms'
      final compute; per_pass at half its steps) and at equal steps (the final step);
    - `verdict`: "cannot tell" when arm (i) ends below `REGIME_INFORMATIVE_ACCURACY` (too close to chance) or
      something was not measured; "holds" when an augmented arm meets the compute claim and is ahead (seed ranges
      apart) of (ii) and (iii) at equal compute; "does not hold" when neither augmented arm meets the compute claim
      nor is ahead of both; else "holds in part"; `statement`: the same in words.
    """
    metric, g = REGIME_HEADLINE_METRIC
    higher = HIGHER_IS_BETTER[metric]
    rows, arms = with_compute(results), results["arms"]
    speedups = {
        (r["reference"], r["arm"]): r
        for r in regime_speedups(results)
        if r["metric"] == metric and r["guidance_scale"] == g
    }
    high = [arms[a] for a in ("ii", "iii", "iv", "v")]
    compute = common_step(rows, [arms["i"], *high], by="compute")
    final_step = common_step(rows, list(arms.values()))
    baseline = aggregate(rows, metric, g, [arms["i"]])[arms["i"]]
    baseline_final = baseline[max(baseline)][0] if baseline else None
    headline = {
        "metric": metric,
        "guidance_scale": g,
        "baseline_final": baseline_final,
        "equal_compute": compute,
        "equal_step": final_step,
        "compute_claim": {},
        "versus": {},
    }
    met, ahead = {}, {}
    for arm in ("iv", "v"):
        row = speedups.get(("i", arm))
        if row is None:
            claim = {"met": None, "speedup_compute": None, "reached_step": None}
        else:
            ratio = row["speedup_compute"]
            claim = {"met": ratio is not None and ratio >= REGIME_COMPUTE_CLAIM, "speedup_compute": ratio}
            claim["reached_step"] = row["reached_step"]
            claim["final_compute_fraction"] = row["final_compute"] / row["reference_compute"]
        headline["compute_claim"][arm] = claim
        met[arm] = claim["met"]
        for other in ("ii", "iii"):
            at_compute = (
                _compare(
                    _point(rows, arms[arm], metric, g, "compute", compute),
                    _point(rows, arms[other], metric, g, "compute", compute),
                    higher,
                )
                if compute is not None
                else "not measured"
            )
            at_step = (
                _compare(
                    _point(rows, arms[arm], metric, g, "step", final_step),
                    _point(rows, arms[other], metric, g, "step", final_step),
                    higher,
                )
                if final_step is not None
                else "not measured"
            )
            headline["versus"][f"{arm}_vs_{other}"] = {"equal_compute": at_compute, "equal_steps": at_step}
        ahead[arm] = all(headline["versus"][f"{arm}_vs_{o}"]["equal_compute"] == "ahead" for o in ("ii", "iii"))

    label = METRIC_LABELS[metric]
    if baseline_final is None or any(v is None for v in met.values()) or compute is None:
        verdict = "cannot tell"
        statement = "Cannot tell: not every arm was evaluated at the checkpoints the comparison needs."
    elif higher and baseline_final < REGIME_INFORMATIVE_ACCURACY:
        verdict = "cannot tell"
        statement = (
            f"Cannot tell: arm (i) ends at a {label} (CFG {g:g}) of {baseline_final:.3f}, below "
            f"{REGIME_INFORMATIVE_ACCURACY:g} (chance is {1 / len(SHAPE_CLASSES):g}): the budget is too small to "
            "separate the arms."
        )
    else:
        winners = [a for a in ("iv", "v") if met[a] and ahead[a]]
        if winners:
            verdict = "holds"
        elif not any(met.values()) and not any(ahead.values()):
            verdict = "does not hold"
        else:
            verdict = "holds in part"
        parts = []
        for arm in ("iv", "v"):
            claim = headline["compute_claim"][arm]
            if claim["speedup_compute"] is None:
                parts.append(
                    f"({arm}) does not reach (i)'s final {label} ({baseline_final:.3f}) within its run "
                    f"({claim['final_compute_fraction']:.2f} of (i)'s compute)"
                )
            else:
                parts.append(
                    f"({arm}) reaches it with {1 / claim['speedup_compute']:.2f} of (i)'s compute "
                    f"({claim['speedup_compute']:.2f}x less; the claim needs >= {REGIME_COMPUTE_CLAIM:g}x)"
                )
            versus = ", ".join(
                f"{headline['versus'][f'{arm}_vs_{o}']['equal_compute']} of ({o})" for o in ("ii", "iii")
            )
            parts.append(f"at equal compute ({arm}) is {versus}")
        statement = f"The headline {verdict} on {label} (CFG {g:g}): " + "; ".join(parts) + "."
    headline["verdict"], headline["statement"] = verdict, statement
    return headline


def regime_arm_label(results: dict, run: str) -> str:
    entry = results["runs"][run]
    return f"{REGIME_ARM_LABELS[entry['arm']]} [{run}]"


def write_regime_markdown(path: Path, results: dict) -> None:
    """`results.md` of a regime mode: the set-up, reconstruction per prefix, the classifier, the arms at equal steps
    and at equal compute, the speed-ups against (i) and (ii), the headline, every checkpoint, the wall times."""
    settings, recon, runs, arms = results["settings"], results["reconstruction"], results["runs"], results["arms"]
    rows = with_compute(results)
    lines = [f"# Toy DC-AE 1.5 in the paper's regime ({results['mode']} mode)", ""]
    if settings.get("smoke"):
        lines += ["**A reduced run (smoke test or pilot): these numbers test the plumbing and are not results.**", ""]
    autoencoders = results["autoencoders"]
    latents = sorted(
        {(v["spatial_compression"], v["latent_channels"], v["tokens"]) for v in autoencoders.values()}, reverse=True
    )
    described = ", ".join(
        f"f{f}c{c} ({int(results['resolution'] / f)}x{int(results['resolution'] / f)}x{c}, {t} tokens)"
        for f, c, t in latents
    )
    hidden = usit_hidden_size(results["usit_config"])
    lines += [
        f"{results['resolution']} px shapes; latents {described}: {results['compression']:g}x fewer values than "
        f"pixels. One USiT for every arm ({results['usit_config']['num_layers']} layers, hidden {hidden}), "
        f"{settings['usit_steps']} steps at batch {settings['usit_batch_size']}, seeds {settings['seeds']}. "
        "Compute = forward/backward passes x latent tokens per image.",
        "",
        "| arm | run | passes per step | tokens | compute per step |",
        "|---|---|---|---|---|",
    ]
    for arm in REGIME_ARMS:
        entry = runs[arms[arm]]
        lines.append(
            f"| {REGIME_ARM_LABELS[arm]} | `{arms[arm]}` | {entry['passes_per_step']} | {entry['tokens']} | "
            f"{entry['compute_per_step']} |"
        )

    names = list(autoencoders)
    prefixes = sorted({int(c) for table in recon.values() for c in table})
    lines += [
        "",
        "## Reconstruction on held-out images (PSNR dB / SSIM from the first c' channels; EMA weights)",
        "",
        "Plain autoencoders: the trailing channels zeroed.",
        "",
        "| c' | " + " | ".join(f"`{name}`" for name in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for c in prefixes:
        values = [recon[name].get(str(c)) for name in names]
        cells = [f"{value['psnr']:.2f} / {value['ssim']:.3f}" if value else "-" for value in values]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    full = {name: recon[name][str(autoencoders[name]["latent_channels"])] for name in names}
    lines += ["", "Full latent: " + ", ".join(f"`{n}` {v['psnr']:.2f} dB / {v['ssim']:.3f}" for n, v in full.items())]

    classifier = results["classifier"]
    lines += ["", f"## Classifier ({classifier['steps']} steps; trained on every AE's reconstructions in turn)", ""]
    lines += ["| images | class accuracy |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in classifier["accuracy"].items()]
    floor = ", ".join(f"{k}: {v:.3f}" for k, v in classifier["fd_floor"].items())
    lines += ["", f"Classifier FD floor (reconstructions of training images vs the held-out reference): {floor}", ""]

    scales = " | ".join(f"class accuracy, CFG {g:g} | classifier FD, CFG {g:g}" for g in EVAL_GUIDANCE_SCALES)
    rule = "---|---|" * len(EVAL_GUIDANCE_SCALES)
    order = [arms[a] for a in REGIME_ARMS]
    tables = [
        (aggregate(rows, "class_accuracy", g, order), aggregate(rows, "classifier_fd", g, order))
        for g in EVAL_GUIDANCE_SCALES
    ]
    for by, title in (("step", "equal steps"), ("compute", "equal compute (passes x tokens)")):
        value = common_step(rows, order, by)
        lines += [
            "",
            f"## The arms at {title}: {by} {value} (Table 5 cells: (ii), (iii), (iv), (v); mean over seeds [min, max])",
            "",
            f"| arm | step | compute | {scales} |",
            f"|---|---|---|{rule}",
        ]
        for run in order:
            at = _step_at(rows, run, by, value) if value is not None else None
            cells = [REGIME_ARM_LABELS[runs[run]["arm"]]]
            cells += [str(at), str(at * runs[run]["compute_per_step"])] if at else ["-", "-"]
            cells += _metric_cells(tables, run, at) if at else ["-"] * 2 * len(EVAL_GUIDANCE_SCALES)
            lines.append("| " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Speed-ups: when each arm reaches the final value of (i) and of (ii)",
        "",
        "Seed means, linear interpolation between checkpoints; `<=` where the first checkpoint already reached it "
        "(the ratio is then a lower bound); ratios > 1: faster than the reference; `not reached`: not within the "
        "arm's run (its own final compute given as a fraction of the reference's).",
        "",
        "| reference | arm | metric | CFG | target | reached at step | speed-up in steps | speed-up in compute |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in regime_speedups(results):
        target = f"{row['target']:.3f}" if row["metric"] == "class_accuracy" else f"{row['target']:.1f}"
        if row["reached_step"] is None:
            fraction = row["final_compute"] / row["reference_compute"]
            reached = f"not reached by {max(r['step'] for r in rows if r['run'] == results['arms'][row['arm']])}"
            steps, compute = "-", f"- ({fraction:.2f} of its compute spent)"
        else:
            bound = "<= " if row["reached_step"] == row["first_checkpoint"] else ""
            more = ">= " if bound else ""
            reached = f"{bound}{row['reached_step']:.0f}"
            steps, compute = f"{more}{row['speedup_steps']:.2f}x", f"{more}{row['speedup_compute']:.2f}x"
        lines.append(
            f"| ({row['reference']}) | ({row['arm']}) | {METRIC_LABELS[row['metric']]} | {row['guidance_scale']:g} | "
            f"{target} | {reached} | {steps} | {compute} |"
        )

    headline = results["headline"]
    lines += ["", "## The headline", "", headline["statement"], ""]
    lines += [
        f"(Read on {METRIC_LABELS[headline['metric']]} at CFG {headline['guidance_scale']:g}: the classifier scores "
        "every latent's samples alike; each run's classifier FD is measured against its own autoencoder's "
        'reconstructions, so FDs across latents are only roughly comparable. "ahead": every seed of the arm beats '
        "every seed of the other.)",
        "",
        "| arm | vs | at equal compute | at equal steps |",
        "|---|---|---|---|",
    ]
    for key, value in headline["versus"].items():
        arm, other = key.split("_vs_")
        lines.append(f"| ({arm}) | ({other}) | {value['equal_compute']} | {value['equal_steps']} |")

    lines += ["", "## Every checkpoint (mean over seeds [min, max])", "", f"| run | step | compute | {scales} |"]
    lines += [f"|---|---|---|{rule}"]
    for run in order:
        for at in sorted(tables[0][0][run]):
            cells = [run, str(at), str(at * runs[run]["compute_per_step"]), *_metric_cells(tables, run, at)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"## Wall time per stage (s; one pool of {results['max_parallel']} parallel jobs)", ""]
    lines += ["| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in results["stage_seconds"].items()]
    path.write_text("\n".join(lines) + "\n")


def make_regime_plots(results_dir: Path, results: dict) -> None:
    """`REGIME_PLOTS`: reconstruction PSNR / SSIM vs prefix c' of the three autoencoders; class accuracy and
    classifier FD of every arm vs steps and vs compute (passes x tokens), one row per guidance scale (the paper's
    Fig. 5b / 6 for this toy)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    recon = results["reconstruction"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("psnr", "ssim")):
        for name, entry in results["autoencoders"].items():
            cs = sorted(int(c) for c in recon[name])
            style = "s-" if entry["structured"] else "^:"
            ax.plot(cs, [recon[name][str(c)][metric] for c in cs], style, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("first c' channels (plain AEs: the rest zeroed)")
        ax.set_ylabel(f"held-out {metric.upper()}")
        ax.set_title(f"reconstruction {metric.upper()} vs prefix")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(results_dir / REGIME_PLOTS[0], dpi=90)
    plt.close(fig)

    rows = results["diffusion"]
    labels = {results["arms"][arm]: REGIME_ARM_LABELS[arm] for arm in REGIME_ARMS}
    tokens = {run: entry["tokens"] for run, entry in results["runs"].items()}
    fig, axes = plt.subplots(len(EVAL_GUIDANCE_SCALES), 4, figsize=(22, 4.5 * len(EVAL_GUIDANCE_SCALES)))
    for row, g in enumerate(EVAL_GUIDANCE_SCALES):
        for column, (key, x) in enumerate(product(("class_accuracy", "classifier_fd"), ("step", "compute"))):
            plot_curves(axes[row, column], rows, key, x, g, labels, legend=False, tokens=tokens)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    for row in range(len(EVAL_GUIDANCE_SCALES)):
        axes[row, -1].legend(loc="upper left", bbox_to_anchor=(1.03, 1), fontsize=8, frameon=False)
    fig.savefig(results_dir / REGIME_PLOTS[1], dpi=90)
    plt.close(fig)


def write_regime_report(results_dir: Path, results: dict) -> dict:
    """Add ``"speedups"`` and ``"headline"`` (`regime_speedups`, `regime_headline`) to a regime results dict
    (`regime_results_summary`) and write `results.json`, `results.md` and the `REGIME_PLOTS`; returns the dict."""
    results = {**results, "speedups": regime_speedups(results), "headline": regime_headline(results)}
    (results_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    write_regime_markdown(results_dir / "results.md", results)
    make_regime_plots(results_dir, results)
    return results
