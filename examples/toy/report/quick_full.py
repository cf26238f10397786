"""The report of the smoke, quick and full modes (`toy_settings.MODES`: the three runs of `RUNS`), all written by
`write_report` into `--results_dir`:

- `results.json` (`results_summary`: every number, setting and job wall time);
- `results.md` (`write_markdown`: reconstruction per c', the classifier, diffusion per checkpoint with the mean over
  seeds [min, max], the wall times);
- `plots.png` (`make_plots`: reconstruction vs c', the diffusion curves vs steps and vs passes).

The pictures (`pictures.py`) and the bundle (`card.py`) are written beside them by `run_recipe.main`.
"""

from __future__ import annotations

from pathlib import Path

from examples.toy.report.common import aggregate, plot_curves, pyplot, write_results_json
from examples.toy.toy_settings import (
    AUGMENTED_PASSES,
    AUTOENCODER_CONFIG,
    CHANNEL_CHOICES,
    EVAL_GUIDANCE_SCALES,
    LATENT_CHANNELS,
    RUN_LABELS,
    RUNS,
    USIT_CONFIG,
    ModeSettings,
)

AE_COLUMNS = ("structured", "plain_zeroed", "plain_finetuned")  # the reconstruction table's columns


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
    write_results_json(results_dir, results)
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
    plt = pyplot()
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
