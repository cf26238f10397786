"""The recipe's evaluation, in this process, of what the trainer jobs wrote (`toy_stages.py` has the layout).

1. Reconstruction: held-out PSNR/SSIM per prefix c' (`evaluate_autoencoder`, the official uint8 protocol). The
   smoke, quick and full modes (`evaluate_autoencoders`): the structured AE, the plain AE with the trailing channels
   zeroed and the plain AE fine-tuned for each c'; the sweep and regime modes (`evaluate_sweep_autoencoders`): every
   autoencoder at `sweep_reconstruction_prefixes`; the built-in default (`evaluate_default_autoencoder`): its one.
2. A small classifier that scores every sample (`evaluate_classifier`), trained on autoencoders' reconstructions of
   the training images (on every autoencoder's in turn, so that generations of different latents are scored
   alike; the smoke, quick and full modes train it on the structured AE's only, `evaluate_structured_classifier`):
   its accuracy on held-out images, and the floor of its Frechet distance (reconstructions of training images
   against the held-out reference).
3. Diffusion (`evaluate_diffusion`, every mode): at every checkpoint of every run of the mode (`evaluated_runs`),
   class-balanced samples of the EMA transformer for each scale of `EVAL_GUIDANCE_SCALES` (`score_samples`), their
   class accuracy and classifier Frechet distance to the reconstructions of the held-out images by the run's own
   AE. The rows are kept in `<out>/eval/diffusion.json`, so a resumed run evaluates only the checkpoints it has not
   evaluated yet (`evaluate_checkpoints`). `score_pipeline.py` scores any saved pipeline with the same
   `score_samples`.

Images are tensors (N, 3, 32, 32) in [-1, 1], as the autoencoders take them (64 px in the regime modes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from dc_ae_hf.data.images import image_transform, load_image
from dc_ae_hf.data.shapes import SHAPE_CLASSES
from dc_ae_hf.metrics.autoencoder import evaluate_autoencoder
from dc_ae_hf.metrics.classifier import SmallImageClassifier, classifier_metrics, classifier_outputs, train_classifier
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from dc_ae_hf.training.checkpoints import checkpoint_step, list_checkpoints
from dc_ae_hf.training.ema import load_ema_model
from examples.toy.toy_settings import (
    AUTOENCODERS,
    CHANNEL_CHOICES,
    DEFAULT_RUN,
    EVAL_GUIDANCE_SCALES,
    RESOLUTION,
    RUNS,
    DefaultSettings,
    ModeSettings,
    RegimeSettings,
    SweepAutoencoder,
    SweepSettings,
    passes_per_step,
    run_autoencoder,
    sweep_autoencoders,
    sweep_cache_dir,
    sweep_prefixes,
    sweep_runs,
    usit_run_dir,
)

# how the smoke, quick and full modes' reports name the held-out reconstructions of their two autoencoders
STRUCTURED_CLASSIFIER_LABELS = {
    "ae_struct": "held-out structured-AE reconstructions",
    "ae_plain": "held-out plain-AE reconstructions",
}


def load_imagefolder(root: Path, resolution: int = RESOLUTION) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of an exported shapes imagefolder, sorted by class (`SHAPE_CLASSES` order) and file name, as
    ((N, 3, resolution, resolution) in [-1, 1], (N,) labels); decoded and converted as the trainers do
    (`load_image`, `image_transform`)."""
    transform = image_transform(resolution)
    images, labels = [], []
    for label, name in enumerate(SHAPE_CLASSES):
        for path in sorted((root / "train" / name).glob("*.png")):
            images.append(transform(load_image(path)))
            labels.append(label)
    if not images:
        raise ValueError(f"no images under {root}/train/<class>/ (expected an exported shapes imagefolder)")
    return torch.stack(images), torch.tensor(labels)


def load_autoencoder(folder: Path) -> AutoencoderDC15:
    """An autoencoder saved by the trainers (e.g. `<out>/ae_struct/vae_ema`), in eval mode."""
    return AutoencoderDC15.from_pretrained(folder).eval()


@torch.no_grad()
def reconstruct(vae: AutoencoderDC15, images: torch.Tensor, batch_size: int = 200) -> torch.Tensor:
    """Reconstructions from the full latent (the model's forward), clamped to [-1, 1]."""
    return torch.cat([vae(chunk).sample.clamp(-1, 1) for chunk in images.split(batch_size)])


def evaluate_autoencoders(out: Path, settings: ModeSettings, heldout: torch.Tensor) -> dict:
    """PSNR/SSIM per c' on held-out images: structured AE, plain AE with trailing channels zeroed, plain AE
    fine-tuned for each c' (Fig. 3 protocol). ``{"structured" | "plain_zeroed" | "plain_finetuned": {"<c'>":
    {"psnr", "ssim"}}}``."""
    batches = list(heldout.split(100))
    struct = load_autoencoder(out / "ae_struct" / "vae_ema")
    plain = load_autoencoder(out / "ae_plain" / "vae_ema")
    results = {
        "structured": evaluate_autoencoder(struct, batches, CHANNEL_CHOICES),
        "plain_zeroed": evaluate_autoencoder(plain, batches, CHANNEL_CHOICES),
        "plain_finetuned": {},
    }
    for c in settings.finetune_channels:
        tuned = load_autoencoder(out / f"ae_plain_ft_c{c}" / "vae_ema")
        results["plain_finetuned"].update(evaluate_autoencoder(tuned, batches, [c]))
    return {name: {str(c): values for c, values in table.items()} for name, table in results.items()}


def sweep_reconstruction_prefixes(ae: SweepAutoencoder, settings: SweepSettings | RegimeSettings) -> list[int]:
    """The prefixes c' a sweep autoencoder is evaluated at: every prefix of a structured one; the full latent of a
    plain one, and for the plain one at the largest c also every prefix with the trailing channels zeroed (the
    unstructured counterpart of the structured one's prefixes)."""
    if ae.structured or ae.latent_channels == settings.largest_channels:
        return sweep_prefixes(ae.latent_channels)
    return [ae.latent_channels]


def evaluate_sweep_autoencoders(out: Path, settings: SweepSettings | RegimeSettings, heldout: torch.Tensor) -> dict:
    """Held-out PSNR/SSIM of every sweep autoencoder (EMA weights) at `sweep_reconstruction_prefixes`:
    ``{"<ae name>": {"<c'>": {"psnr", "ssim"}}}``."""
    batches = list(heldout.split(100))
    results = {}
    for ae in sweep_autoencoders(settings):
        vae = load_autoencoder(out / ae.name / "vae_ema")
        table = evaluate_autoencoder(vae, batches, sweep_reconstruction_prefixes(ae, settings))
        results[ae.name] = {str(c): values for c, values in table.items()}
    return results


def evaluate_default_autoencoder(out: Path, heldout: torch.Tensor) -> dict:
    """Held-out PSNR/SSIM of the structured autoencoder (EMA weights) from every prefix c' of `CHANNEL_CHOICES`:
    ``{"structured": {"<c'>": {"psnr", "ssim"}}}`` (the shape of `evaluate_autoencoders`' results)."""
    vae = load_autoencoder(out / "ae_struct" / "vae_ema")
    table = evaluate_autoencoder(vae, list(heldout.split(100)), CHANNEL_CHOICES)
    return {"structured": {str(c): values for c, values in table.items()}}


def evaluate_classifier(
    vaes: dict[str, AutoencoderDC15],
    train: tuple[torch.Tensor, torch.Tensor],
    heldout: tuple[torch.Tensor, torch.Tensor],
    settings: ModeSettings | SweepSettings | RegimeSettings | DefaultSettings,
    trained_on: list[str] | None = None,
) -> tuple[SmallImageClassifier, dict[str, torch.Tensor], dict]:
    """Train the classifier that scores the samples on reconstructions of the training images by the autoencoders
    `trained_on` (names of `vaes`; default: all of them, in `vaes` order): training image i is reconstructed by
    autoencoder i mod len(trained_on), so each contributes equally and from every class (the imagefolder is sorted
    by class), and none is favoured when the generations of different latents are compared.

    Returns the classifier, the references (each autoencoder's reconstructions of the held-out images, by name)
    and ``{"accuracy", "fd_floor", "steps", "trained_on"}``: held-out accuracy on real images and on each
    autoencoder's reconstructions; per autoencoder the Frechet distance of as many class-balanced reconstructions of
    training images as there are samples per checkpoint against its reference (the floor of the diffusion numbers).
    """
    (train_images, train_labels), (heldout_images, heldout_labels) = train, heldout
    names = list(vaes)
    trained_on = names if trained_on is None else list(trained_on)
    if not trained_on or any(name not in vaes for name in trained_on):
        raise ValueError(f"trained_on={trained_on} must name autoencoders of vaes: {names}")
    recon_train = torch.empty_like(train_images)
    for k, name in enumerate(trained_on):
        recon_train[k :: len(trained_on)] = reconstruct(vaes[name], train_images[k :: len(trained_on)])
    model = train_classifier(recon_train, train_labels, len(SHAPE_CLASSES), steps=settings.classifier_steps)
    references = {name: reconstruct(vaes[name], heldout_images) for name in names}
    accuracy = {}
    for name, images in [("held-out real images", heldout_images), *references.items()]:
        logits, _ = classifier_outputs(model, images)
        accuracy[name] = (logits.argmax(1) == heldout_labels).float().mean().item()
    # the imagefolder is sorted by class: evenly spaced indices take every class equally, like the samples
    subset = torch.linspace(0, len(train_images) - 1, min(settings.num_samples, len(train_images))).long()
    floor = {}
    for name in names:
        recon = reconstruct(vaes[name], train_images[subset])
        floor[name] = classifier_metrics(model, recon, train_labels[subset], references[name])["classifier_fd"]
    info = {"accuracy": accuracy, "fd_floor": floor, "steps": settings.classifier_steps, "trained_on": trained_on}
    return model, references, info


def evaluate_structured_classifier(
    vaes: dict[str, AutoencoderDC15],
    train: tuple[torch.Tensor, torch.Tensor],
    heldout: tuple[torch.Tensor, torch.Tensor],
    settings: ModeSettings,
) -> tuple[SmallImageClassifier, dict[str, torch.Tensor], dict]:
    """The classifier of the smoke, quick and full modes: `evaluate_classifier` trained on `vaes["ae_struct"]`'s
    reconstructions only, its info as their reports hold it: ``{"accuracy", "fd_floor", "steps"}`` with the
    reconstructions named by `STRUCTURED_CLASSIFIER_LABELS`."""
    model, references, info = evaluate_classifier(vaes, train, heldout, settings, trained_on=["ae_struct"])
    accuracy = {STRUCTURED_CLASSIFIER_LABELS.get(name, name): value for name, value in info["accuracy"].items()}
    return model, references, {"accuracy": accuracy, "fd_floor": info["fd_floor"], "steps": info["steps"]}


def saved_classifier(
    folder: Path, train: Callable[[], tuple[SmallImageClassifier, dict[str, torch.Tensor], dict]]
) -> tuple[SmallImageClassifier, dict]:
    """The classifier saved in `folder` (`save_pretrained`, safetensors) with its info (`info.json`), or, when none
    is saved yet, ``train()``'s (classifier, references, info), saved there first. A re-run of the recipe and
    `score_pipeline.py` then use the very classifier that scored the run."""
    classifier, _, info = _saved_or_trained(folder, train)
    return classifier, info


def _saved_or_trained(
    folder: Path, train: Callable[[], tuple[SmallImageClassifier, dict[str, torch.Tensor], dict]]
) -> tuple[SmallImageClassifier, dict[str, torch.Tensor] | None, dict]:
    """`saved_classifier`, with the references ``train()`` returned when it was called (None when loaded)."""
    if (folder / "info.json").is_file():
        return (
            SmallImageClassifier.from_pretrained(folder).eval(),
            None,
            json.loads((folder / "info.json").read_text()),
        )
    classifier, references, info = train()
    classifier.save_pretrained(folder)
    (folder / "info.json").write_text(json.dumps(info, indent=1))
    return classifier, references, info


def scoring_classifier(
    out: Path,
    vaes: dict[str, AutoencoderDC15],
    heldout_images: torch.Tensor,
    train: Callable[[], tuple[SmallImageClassifier, dict[str, torch.Tensor], dict]],
) -> tuple[SmallImageClassifier, dict[str, torch.Tensor], dict]:
    """The classifier that scores a mode's checkpoints, its references (each autoencoder of `vaes`'s reconstructions
    of the held-out images, by name) and its info. The classifier is saved in `<out>/eval/classifier` when first
    trained (`saved_classifier`), so a resumed run scores its remaining checkpoints with the very classifier that
    scored the rows kept in `<out>/eval/diffusion.json`. Rows kept from a run whose classifier was not saved (one
    made before the classifier was kept) are moved aside to `diffusion.unsaved-classifier.json`, never mixed with
    the scores of another classifier."""
    folder, kept = out / "eval" / "classifier", out / "eval" / "diffusion.json"
    if not (folder / "info.json").is_file() and kept.is_file():
        aside = _free_name(kept.with_name("diffusion.unsaved-classifier.json"))
        kept.replace(aside)
        print(f"note: the rows in {kept} were scored by a classifier that was not saved; moved to {aside}", flush=True)
    classifier, references, info = _saved_or_trained(folder, train)
    if references is None or set(references) != set(vaes):  # loaded: the references are made again (deterministic)
        references = {name: reconstruct(vae, heldout_images) for name, vae in vaes.items()}
    return classifier, references, info


def _free_name(path: Path) -> Path:
    """`path`, or `<stem>.2<suffix>`, `<stem>.3<suffix>`, ... : the first that does not exist (nothing replaced)."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}.{number}{path.suffix}")
    return candidate


@torch.no_grad()
def generate(
    pipe: DCAE15Pipeline, num_samples: int, steps: int, seed: int, guidance_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced samples (euler, sample i of class i % 10) as ((N, 3, H, W) in [-1, 1], (N,) labels)."""
    labels = torch.arange(num_samples) % len(SHAPE_CLASSES)
    generator = torch.Generator().manual_seed(seed)
    images = []
    for chunk in labels.split(100):
        out = pipe(
            chunk.tolist(),
            guidance_scale=guidance_scale,
            num_inference_steps=steps,
            solver="euler",
            generator=generator,
            output_type="pt",
        ).images  # (B, 3, H, W) in [0, 1]
        images.append(out * 2 - 1)
    return torch.cat(images), labels


@torch.no_grad()
def score_samples(
    pipe: DCAE15Pipeline,
    classifier: SmallImageClassifier,
    reference: torch.Tensor,
    num_samples: int,
    steps: int,
    seed: int,
    guidance_scale: float,
    per_class: bool = False,
) -> dict:
    """Class accuracy and classifier Frechet distance to `reference` (`classifier_metrics`) of `num_samples`
    class-balanced samples of `pipe` (`generate`): ``{"class_accuracy", "classifier_fd"}``, and with `per_class`
    also ``"class_accuracy_per_class"`` (by class name)."""
    samples, labels = generate(pipe, num_samples, steps, seed=seed, guidance_scale=guidance_scale)
    metrics = classifier_metrics(classifier, samples, labels, reference)
    if per_class:
        predicted = classifier_outputs(classifier, samples)[0].argmax(dim=1)
        metrics["class_accuracy_per_class"] = {
            name: (predicted[labels == k] == k).float().mean().item() for k, name in enumerate(SHAPE_CLASSES)
        }
    return metrics


@torch.no_grad()
def class_samples(pipeline: Path, per_class: int, steps: int, guidance_scale: float) -> list[Image.Image]:
    """`per_class` samples of every class, in `SHAPE_CLASSES` order, from a saved pipeline (euler, seed 0)."""
    pipe = DCAE15Pipeline.from_pretrained(pipeline)
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        [name for name in SHAPE_CLASSES for _ in range(per_class)],
        guidance_scale=guidance_scale,
        solver="euler",
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(0),
    ).images


@dataclass(frozen=True)
class EvaluatedRun:
    """A diffusion run to evaluate: its name and seed (the keys of its rows), its folder, the name of its
    autoencoder (the key of `vaes` and `references`) and its passes per optimisation step."""

    run: str
    seed: int
    folder: Path
    autoencoder: str
    passes_per_step: int


def evaluated_runs(
    out: Path, settings: ModeSettings | SweepSettings | RegimeSettings | DefaultSettings
) -> list[EvaluatedRun]:
    """The diffusion runs of a mode, in the order of its rows: every run of `RUNS` for each seed (smoke, quick,
    full), `sweep_runs` (sweep, regime) or the built-in default's `DEFAULT_RUN` (one pass per step)."""
    if isinstance(settings, ModeSettings):
        return [
            EvaluatedRun(run, seed, usit_run_dir(out, run, seed), run_autoencoder(run), passes_per_step(run))
            for seed in settings.seeds
            for run in RUNS
        ]
    if isinstance(settings, DefaultSettings):
        folder = usit_run_dir(out, DEFAULT_RUN, settings.seed)
        return [EvaluatedRun(DEFAULT_RUN, settings.seed, folder, "ae_struct", passes_per_step=1)]
    return [
        EvaluatedRun(run.name, run.seed, run.folder(out), run.autoencoder.name, run.passes_per_step)
        for run in sweep_runs(settings)
    ]


def diffusion_vaes(
    out: Path, settings: ModeSettings | SweepSettings | RegimeSettings | DefaultSettings
) -> dict[str, AutoencoderDC15]:
    """The autoencoders that the runs of a mode decode with, by name: each with the scaling factor measured for its
    latent cache (`<ae>/vae_diffusion` of the smoke, quick, full and default modes; `<cache>/vae` of every sweep or
    regime autoencoder, in `sweep_autoencoders` order)."""
    if isinstance(settings, ModeSettings):
        return {ae: load_autoencoder(out / ae / "vae_diffusion") for ae in AUTOENCODERS}
    if isinstance(settings, DefaultSettings):
        return {"ae_struct": load_autoencoder(out / "ae_struct" / "vae_diffusion")}
    return {ae.name: load_autoencoder(sweep_cache_dir(out, ae) / "vae") for ae in sweep_autoencoders(settings)}


def evaluate_checkpoints(
    cache_path: Path,
    runs: list[EvaluatedRun],
    vaes: dict[str, AutoencoderDC15],
    classifier: SmallImageClassifier,
    references: dict[str, torch.Tensor],
    num_samples: int,
    sample_steps: int,
) -> list[dict]:
    """Class accuracy and classifier FD at every checkpoint of every run (EMA weights, decoded by the run's
    autoencoder, against its own reference; `score_samples` with seed 1000 + the run's seed), one row per guidance
    scale in `EVAL_GUIDANCE_SCALES`: ``{"run", "seed", "step", "passes", "guidance_scale", "class_accuracy",
    "classifier_fd", "eval_seconds"}``. Rows already in `cache_path` (JSON) are kept, not recomputed; the file is
    rewritten after every checkpoint."""
    rows = json.loads(cache_path.read_text()) if cache_path.exists() else []
    seen = {(r["run"], r["seed"], r["step"], r["guidance_scale"]) for r in rows}
    for entry in runs:
        for checkpoint in list_checkpoints(entry.folder):
            step = checkpoint_step(checkpoint)
            scales = [g for g in EVAL_GUIDANCE_SCALES if (entry.run, entry.seed, step, g) not in seen]
            if not scales:
                continue
            transformer = load_ema_model(checkpoint / "transformer_ema", USiTTransformer2DModel).eval()
            pipe = DCAE15Pipeline(transformer=transformer, vae=vaes[entry.autoencoder])
            pipe.set_progress_bar_config(disable=True)
            for scale in scales:
                start = time.time()
                reference = references[entry.autoencoder]
                metrics = score_samples(
                    pipe,
                    classifier,
                    reference,
                    num_samples,
                    sample_steps,
                    seed=1000 + entry.seed,
                    guidance_scale=scale,
                )
                rows.append(
                    {
                        "run": entry.run,
                        "seed": entry.seed,
                        "step": step,
                        "passes": step * entry.passes_per_step,
                        "guidance_scale": scale,
                        **metrics,
                        "eval_seconds": round(time.time() - start, 1),
                    }
                )
                print(f"[eval] {entry.run} seed {entry.seed} step {step} cfg {scale}: {metrics}", flush=True)
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(rows, indent=1))
    return rows


def evaluate_diffusion(
    out: Path,
    settings: ModeSettings | SweepSettings | RegimeSettings | DefaultSettings,
    classifier: SmallImageClassifier,
    references: dict[str, torch.Tensor],
) -> list[dict]:
    """`evaluate_checkpoints` of every run of a mode (`evaluated_runs`, decoded by `diffusion_vaes`; rows kept in
    `<out>/eval/diffusion.json`) with the mode's `num_samples` and `sample_steps`."""
    return evaluate_checkpoints(
        out / "eval" / "diffusion.json",
        evaluated_runs(out, settings),
        diffusion_vaes(out, settings),
        classifier,
        references,
        settings.num_samples,
        settings.sample_steps,
    )
