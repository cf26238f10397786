"""The report of the channel sweep (`--mode sweep`, `sweep-smoke`), all written by `write_sweep_report`:

- `results.json` (`sweep_results_summary`: what each autoencoder and run is, every number, the wall times);
- `results.md` (`write_sweep_markdown`: reconstruction vs c, generation vs c, the Table 5 cells at equal steps and
  at equal passes, the speed-up of augmented training (`speedup_rows`), every checkpoint);
- `SWEEP_PLOTS` (`make_sweep_plots`: reconstruction vs c, generation vs c, the curves vs steps and vs passes).

The regime report (`regime.py`) builds on its summary.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np

from examples.toy.report.common import (
    aggregate,
    classifier_lines,
    common_step,
    metric_cells,
    plot_curves,
    pyplot,
    step_at,
    steps_to_reach,
    wall_time_lines,
    write_results_json,
)
from examples.toy.toy_settings import (
    AUGMENTED_PASSES,
    AUTOENCODER_CONFIG,
    EVAL_GUIDANCE_SCALES,
    SWEEP_OBJECTIVE_LABELS,
    SWEEP_OBJECTIVES,
    SWEEP_PREFIX_STEP,
    USIT_CONFIG,
    SweepSettings,
    sweep_autoencoders,
    sweep_runs,
)

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
    lines += classifier_lines(classifier)

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
        cells = [str(entry["latent_channels"]), str(len(entry["seeds"])), *metric_cells(tables, run, step)]
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
            at = step_at(rows, run, by, value) if value is not None else None
            cells = [LATENT_LABELS[entry["structured"]], entry["objective"]]
            cells += [str(at), str(at * entry["passes_per_step"])] if at else ["-", "-"]
            cells += metric_cells(tables, run, at) if at else ["-"] * 2 * len(EVAL_GUIDANCE_SCALES)
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
            cells = [run, str(at), str(tables[0][0][run][at][3]), *metric_cells(tables, run, at)]
            lines.append("| " + " | ".join(cells) + " |")

    lines += wall_time_lines(results)
    path.write_text("\n".join(lines) + "\n")


def make_sweep_plots(results_dir: Path, results: dict) -> None:
    """`SWEEP_PLOTS`: reconstruction PSNR / SSIM vs c; class accuracy and classifier FD at the final step vs c
    (the plain objective on every plain AE, and the other Table 5 cells at the largest c); and the curves vs
    steps and vs passes of the Table 5 cells (both guidance scales) and of the plain runs of every c."""
    plt = pyplot()
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
    write_results_json(results_dir, results)
    write_sweep_markdown(results_dir / "results.md", results)
    make_sweep_plots(results_dir, results)
