"""The report of the built-in default (`--mode default`, `default-smoke`): `results.json`
(`default_results_summary`, with the final checkpoint's rows and whether the target accuracy is met), `results.md`
and `curves.png`, all written by `write_default_report`. Its pipeline and card: `card.py`."""

from __future__ import annotations

from pathlib import Path

from examples.toy.report.common import plot_curves, pyplot, write_results_json
from examples.toy.toy_settings import (
    AUTOENCODER_CONFIG,
    CHANNEL_CHOICES,
    DEFAULT_RUN,
    DEFAULT_USIT_CONFIG,
    EVAL_GUIDANCE_SCALES,
    DefaultSettings,
)


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
    write_results_json(results_dir, results)
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

    plt = pyplot()
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
