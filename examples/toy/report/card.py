"""The bundled pipeline: `write_bundle` copies a run's final pipeline, self-contained, with a model card that says
what it is and what it scored (how `dc_ae_hf/assets/toy-dcae15-shapes` was made, by `--mode default`; the quick and
full modes can bundle their `struct_aug` run too)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dc_ae_hf.hub import write_pipeline_card
from dc_ae_hf.output_folders import card_names, claim_output_folder, clear_output_folder
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from dc_ae_hf.self_contained import make_self_contained
from examples.toy.toy_settings import (
    CHANNEL_CHOICES,
    DEFAULT_RUN,
    EVAL_GUIDANCE_SCALES,
    LATENT_CHANNELS,
    DefaultSettings,
    ModeSettings,
)

BUNDLE_TRAINING = {  # how each bundled run's transformer was trained, for its card: (objective, its batches)
    "struct_aug": ("augmented diffusion training (paper Eq. 2)", "the full latent plus one random prefix per step"),
    DEFAULT_RUN: ("the plain diffusion objective", "the full latent only, the one the pipeline samples"),
}


BUNDLE_WRITER = "python -m examples.toy.run_recipe --bundle_to"


def claim_bundle_folder(target: str | Path) -> Path:
    """Check that `--bundle_to` may be written (the ownership rule of `dc_ae_hf.output_folders`): a new or empty
    folder, or an earlier bundle, recognised by its model card naming the recipe; anything else (another model, a
    training run, unrelated files) is refused with a ValueError naming the flag and what the folder holds."""
    return claim_output_folder(target, BUNDLE_WRITER, "--bundle_to", card_names("examples/toy/run_recipe.py"))


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
    clear_output_folder(claim_bundle_folder(target))  # an earlier bundle is replaced whole
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
            f"trained with {BUNDLE_TRAINING[run][0]} on the procedural 32 px shapes dataset "
            f"(`dc_ae_hf/data/shapes.py`), for trying the API offline. {quality}"
        ),
        source=f"`examples/toy/run_recipe.py --mode {mode}`, run `{run}`, seed {seed}",
        provenance=(
            f"Autoencoder: {settings.ae_steps} steps of `training/train_dc_ae.py` (L1, c' in {CHANNEL_CHOICES}) "
            f"on {settings.num_train_images} images. Transformer: {step} steps of `training/train_usit.py` on the "
            f"cached latents (batch {settings.usit_batch_size}, {BUNDLE_TRAINING[run][1]}), EMA weights. Every "
            "command and setting: `examples/toy/toy_stages.py` and `examples/toy/toy_settings.py`."
        ),
        metrics_table=metrics,
        guidance_scale=EVAL_GUIDANCE_SCALES[-1],
        solver="euler",
        num_inference_steps=settings.sample_steps,
    )
