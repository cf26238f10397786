"""The report of the paper's regime (`--mode regime`, `regime-smoke`), all written by `write_regime_report`:

- `results.json`: `regime_results_summary` (the sweep's summary with each arm, its latent tokens and compute per
  step), plus the speed-ups of every arm against arms (i) and (ii) (`regime_speedups`) and whether the paper's
  headline holds at this budget (`regime_headline`);
- `results.md` (`write_regime_markdown`: reconstruction per prefix, the arms at equal steps and at equal compute,
  the speed-ups, the headline in words, every checkpoint);
- `REGIME_PLOTS` (`make_regime_plots`: reconstruction vs prefix, the arms' curves vs steps and vs compute).

Compute is counted as passes x latent tokens per image (`with_compute`).
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np

from dc_ae_hf.data.shapes import SHAPE_CLASSES
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
from examples.toy.report.sweep import sweep_results_summary
from examples.toy.toy_settings import (
    EVAL_GUIDANCE_SCALES,
    REGIME_ARM_LABELS,
    REGIME_ARMS,
    REGIME_USIT_CONFIG,
    RegimeSettings,
    sweep_autoencoders,
    usit_hidden_size,
)

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
                f"against ({o}): {headline['versus'][f'{arm}_vs_{o}']['equal_compute']}" for o in ("ii", "iii")
            )
            parts.append(f"at equal compute ({arm}) {versus}")
        statement = f"The headline {verdict} on {label} (CFG {g:g}): " + "; ".join(parts) + "."
    headline["verdict"], headline["statement"] = verdict, statement
    return headline


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

    lines += classifier_lines(results["classifier"])

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
            at = step_at(rows, run, by, value) if value is not None else None
            cells = [REGIME_ARM_LABELS[runs[run]["arm"]]]
            cells += [str(at), str(at * runs[run]["compute_per_step"])] if at else ["-", "-"]
            cells += metric_cells(tables, run, at) if at else ["-"] * 2 * len(EVAL_GUIDANCE_SCALES)
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
            cells = [run, str(at), str(at * runs[run]["compute_per_step"]), *metric_cells(tables, run, at)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += wall_time_lines(results)
    path.write_text("\n".join(lines) + "\n")


def make_regime_plots(results_dir: Path, results: dict) -> None:
    """`REGIME_PLOTS`: reconstruction PSNR / SSIM vs prefix c' of the three autoencoders; class accuracy and
    classifier FD of every arm vs steps and vs compute (passes x tokens), one row per guidance scale (the paper's
    Fig. 5b / 6 for this toy)."""
    plt = pyplot()
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
    write_results_json(results_dir, results)
    write_regime_markdown(results_dir / "results.md", results)
    make_regime_plots(results_dir, results)
    return results
