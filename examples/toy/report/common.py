"""What every report of the recipe shares: the seed summary of the diffusion rows (`aggregate`), the checkpoints that
runs have in common, when a curve reaches a value, the curve panels of the plots, the markdown sections of the
multi-autoencoder reports, and the results file.

A diffusion row (`toy_evaluation.evaluate_checkpoints`) is ``{"run", "seed", "step", "passes", "guidance_scale",
"class_accuracy", "classifier_fd", "eval_seconds"}``; the reports summarise it over seeds as (mean, min, max).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from examples.toy.toy_settings import RUNS


def aggregate(
    rows: list[dict], key: str, guidance_scale: float, runs: tuple[str, ...] | list[str] = RUNS
) -> dict[str, dict[int, tuple[float, float, float, int]]]:
    """run -> step -> (mean, min, max, passes) of `key` over seeds, for the rows sampled with `guidance_scale`, for
    every run of `runs` (default: the full and quick modes' `RUNS`). Only steps that every seed of the run was
    evaluated at: a checkpoint one seed wrote off the schedule (on a preemption signal) is left out, so a mean is
    never over a different set of seeds than its neighbours'."""
    rows = [r for r in rows if r["guidance_scale"] == guidance_scale]
    table: dict[str, dict[int, tuple]] = {}
    for run in runs:
        table[run] = {}
        seeds = {r["seed"] for r in rows if r["run"] == run}
        for step in sorted({r["step"] for r in rows if r["run"] == run}):
            matching = [r for r in rows if r["run"] == run and r["step"] == step]
            if {r["seed"] for r in matching} != seeds:
                continue
            values = np.array([r[key] for r in matching], dtype=np.float64)
            table[run][step] = (float(values.mean()), float(values.min()), float(values.max()), matching[0]["passes"])
    return table


def common_step(rows: list[dict], runs: list[str], by: str = "step") -> int | None:
    """The largest step (`by` = "step") or pass count (`by` = "passes") at which every run of `runs` has an
    evaluation; None when there is none."""
    common = None
    for run in runs:
        values = {r[by] for r in rows if r["run"] == run}
        common = values if common is None else common & values
    return max(common) if common else None


def step_at(rows: list[dict], run: str, by: str, value: int) -> int:
    """The step of `run` whose `by` ("step" or "passes") is `value`."""
    return next(r["step"] for r in rows if r["run"] == run and r[by] == value)


def metric_cells(tables: list[tuple[dict, dict]], run: str, step: int) -> list[str]:
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


def pyplot():
    """matplotlib's pyplot drawing to files only (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_results_json(results_dir: Path, results: dict) -> None:
    """`<results_dir>/results.json`: the results dict (what is not JSON, e.g. a Path, as its string)."""
    (results_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))


def classifier_lines(classifier: dict) -> list[str]:
    """The markdown section of a classifier trained on every autoencoder's reconstructions in turn
    (`toy_evaluation.evaluate_classifier`): its accuracy per image set and the FD floor per autoencoder."""
    lines = ["", f"## Classifier ({classifier['steps']} steps; trained on every AE's reconstructions in turn)", ""]
    lines += ["| images | class accuracy |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in classifier["accuracy"].items()]
    floor = ", ".join(f"{k}: {v:.3f}" for k, v in classifier["fd_floor"].items())
    lines += ["", f"Classifier FD floor (reconstructions of training images vs the held-out reference): {floor}", ""]
    return lines


def wall_time_lines(results: dict) -> list[str]:
    """The markdown section of the wall time per stage of a run with one job pool of `max_parallel` jobs."""
    lines = ["", f"## Wall time per stage (s; one pool of {results['max_parallel']} parallel jobs)", ""]
    lines += ["| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in results["stage_seconds"].items()]
    return lines
