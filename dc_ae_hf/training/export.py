"""What a finished run writes, for both trainers: the model folders, the pipeline and their model cards.

- `train_dc_ae.py`: `save_trained_autoencoders` writes `vae/`, one folder per EMA (`vae_ema/`, `vae_ema-<decay>/`),
  `discriminator/` with the GAN, the last validation results and the cards (`write_trained_autoencoder_card`).
- `train_usit.py`: `save_trained_usit` writes `transformer/` (the raw weights), one folder per EMA
  (`transformer_ema/`, `transformer_ema-<decay>/`) and `pipeline/` (`save_pipeline`: the exported EMA transformer,
  the autoencoder, the scheduler, id2label and the card).

The cards themselves are filled by `dc_ae_hf.hub.write_autoencoder_card` / `write_pipeline_card`; the resolved
configuration they describe is the run's `training_config.json` (the trainer's `resolve_config`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from diffusers.training_utils import EMAModel
from torch import nn

from dc_ae_hf.choices import PHASES
from dc_ae_hf.hub import write_autoencoder_card, write_pipeline_card
from dc_ae_hf.metrics.autoencoder import format_markdown_table
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline, default_scheduler
from dc_ae_hf.training.ema import emas_by_decay
from dc_ae_hf.training.run import RunSettings

__all__ = [
    "save_ema_model",
    "save_pipeline",
    "save_trained_autoencoders",
    "save_trained_usit",
    "write_trained_autoencoder_card",
]


def save_ema_model(ema: EMAModel, model, folder) -> None:
    """Save the EMA weights as a `save_pretrained` model folder of `model`'s class and config."""
    ema_model = type(model).from_config(model.config)
    ema.copy_to(ema_model.parameters())
    ema_model.save_pretrained(folder)


# ---------------------------------------------------------------------------------------------------------------
# train_dc_ae.py: the autoencoder folders
# ---------------------------------------------------------------------------------------------------------------


def save_trained_autoencoders(
    run: RunSettings,
    vae,
    state_dict: dict | None,
    emas: dict[str, EMAModel],
    discriminator: nn.Module | None,
    config: dict,
    results: dict | None,
) -> list[Path]:
    """Main process, end of `train_dc_ae.py`: save in `run.output_dir` `vae/` (from `state_dict` when the model was
    sharded), each EMA (`vae_ema/` for the first decay, `vae_ema-<decay>/` for the others), `discriminator/` with
    the GAN, the last validation `results`, and the model cards (naming `run.repo_id` when the run is pushed, else
    the folder). With `run.self_contained` the autoencoder folders carry their code. Returns the autoencoder
    folders, the first EMA's last."""
    output_dir, self_contained = Path(run.output_dir), run.self_contained
    base_model = config["args"].get("pretrained_model_name_or_path")
    if state_dict is not None:
        final = AutoencoderDC15.from_config(vae.config)
        final.load_state_dict(state_dict)
    else:
        final = vae
    final.save_pretrained(output_dir / "vae", self_contained=self_contained)
    folders = [output_dir / "vae"]
    for name, ema in reversed(list(emas.items())):  # the first decay's folder last: it is the one pushed
        ema_model = AutoencoderDC15.from_config(vae.config)
        ema.copy_to(ema_model.parameters())
        ema_model.save_pretrained(output_dir / name, self_contained=self_contained)
        folders.append(output_dir / name)
    if discriminator is not None:
        discriminator.save_pretrained(output_dir / "discriminator")
    table = format_markdown_table(results) if results else ""
    if results:
        (output_dir / "validation_results.json").write_text(json.dumps(results, indent=2))
    for folder in folders:
        suffix = {"vae": "", "vae_ema": " (EMA weights)"}.get(
            folder.name, f" ({folder.name.split('-', 1)[-1]} EMA weights)"
        )
        name = run.repo_id.split("/")[-1] + suffix
        load_id = run.repo_id if run.push_to_hub else str(folder)
        write_trained_autoencoder_card(folder, final, name, load_id, config, table, base_model=base_model)
    return folders


def write_trained_autoencoder_card(
    folder: str | Path,
    vae: nn.Module,
    model_name: str,
    repo_id: str,
    training_config: dict,
    metrics_table: str = "",
    base_model: str | None = None,
) -> Path:
    """Write `<folder>/README.md` from `model_cards/autoencoder.md` for a model trained by `train_dc_ae.py`.

    The card lists the architecture, the resolved training configuration (JSON) and the last validation table.
    """
    args = training_config.get("args", training_config)  # the script's resolved config nests the flags
    phase = args.get("phase")
    provenance = (
        f"Trained with `accelerate launch training/train_dc_ae.py` (dc_ae_hf), DC-AE phase {phase}: "
        f"{PHASES.get(phase, '?')}, for {args.get('max_train_steps')} steps at {args.get('resolution')} px"
        + (f", starting from `{base_model}`" if base_model else " from scratch")
        + ". Resolved training configuration:\n\n```json\n"
        + json.dumps(training_config, indent=2, sort_keys=True, default=str)
        + "\n```"
    )
    return write_autoencoder_card(
        folder,
        vae,
        model_name,
        repo_id,
        source="trained with `training/train_dc_ae.py`",
        provenance=provenance,
        metrics_table=metrics_table,
        base_model=base_model,
    )


# ---------------------------------------------------------------------------------------------------------------
# train_usit.py: the transformer folders and the pipeline
# ---------------------------------------------------------------------------------------------------------------


def save_trained_usit(
    run: RunSettings,
    model: USiTTransformer2DModel,
    emas: dict[str, EMAModel],
    vae,
    config: dict,
    exported_decay: float,
    steps: int,
    num_processes: int,
) -> Path:
    """Main process, end of `train_usit.py`: save in `run.output_dir` `transformer/` (the raw weights), every EMA as
    a model folder (the first too), and `pipeline/`: the EMA of decay `exported_decay` with `vae` as a
    `DCAE15Pipeline` with its card (with its code when `run.self_contained`), trained for `steps` steps on
    `num_processes` processes. Returns the pipeline folder."""
    output_dir, repo_id = Path(run.output_dir), run.repo_id
    model.save_pretrained(output_dir / "transformer")
    for name, ema in emas.items():
        save_ema_model(ema, model, output_dir / name)
    ema = emas_by_decay(emas)[exported_decay]
    ema_model = USiTTransformer2DModel.from_config(model.config)
    ema.copy_to(ema_model.parameters())
    id2label = {int(k): v for k, v in config["id2label"].items()} if config["id2label"] else None
    folder = output_dir / "pipeline"
    return save_pipeline(
        folder,
        ema_model.eval(),
        vae,
        id2label,
        self_contained=run.self_contained,
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id if run.push_to_hub else str(folder),
        description="Class-conditional image generation with a USiT trained by `dc_ae_hf`.",
        source=f"trained with `training/train_usit.py` for {steps} steps",
        provenance=usit_provenance(config, ema.decay, steps, num_processes),
        guidance_scale=config["args"]["validation_guidance_scale"],
        solver="dopri5",
        num_inference_steps=250,
    )


def usit_provenance(config: dict, exported_decay: float, steps: int, num_processes: int) -> str:
    """How the pipeline's transformer was trained, in a few lines, from the run's resolved configuration."""
    args, data = config["args"], config["data"]
    if config["augmented"]:
        choices = config["latent_channel_choices"]
        if args.get("channel_sampling", "per_pass") == "per_sample":
            full = ", the full latent on half of each batch" if args["always_include_full"] else ""
            mode = f"augmented diffusion training (paper Eq. 2), one c' per sample in {choices}, one pass{full}"
        else:
            full = ", always with the full latent" if args["always_include_full"] else ""
            mode = (
                f"augmented diffusion training (paper Eq. 2), c' in {choices}, "
                f"{args['num_channel_samples']} per step{full}"
            )
    else:
        mode = "the plain full-latent objective (--no_augmented baseline)"
    kept = [d for d in args.get("ema_decays", [exported_decay]) if d != exported_decay]
    others = f" (the run also kept EMAs {', '.join(f'{d:g}' for d in kept)})" if kept else ""
    return (
        f"{steps} steps on {data['source']} ({data['num_examples']} examples), batch {args['train_batch_size']} x "
        f"{num_processes} processes x {args['gradient_accumulation_steps']} accumulation, SiT flow "
        f"matching with {mode}; AdamW lr {args['learning_rate']}, betas ({args['adam_beta1']}, {args['adam_beta2']}), "
        f"weight decay {args['adam_weight_decay']}; EMA {exported_decay:g} (warmup {args['ema_warmup_steps']}), which "
        f"the transformer here holds{others}. All settings: training_config.json of the run."
    )


def save_pipeline(
    folder: str | os.PathLike,
    transformer,
    vae,
    id2label: dict[int, str] | None = None,
    self_contained: bool = False,
    **card,
) -> Path:
    """Save ``DCAE15Pipeline(transformer, vae, default_scheduler(), id2label)`` with its model card
    (:func:`write_pipeline_card` with ``card``) as ``folder``, atomically: written to ``<folder>.tmp``, then renamed
    over any previous ``folder``. ``self_contained``: with its code, so plain diffusers loads it
    (``save_pretrained(..., self_contained=True)``)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = DCAE15Pipeline(transformer=transformer, vae=vae, scheduler=default_scheduler(), id2label=id2label)
    pipe.save_pretrained(tmp, safe_serialization=True, self_contained=self_contained)
    write_pipeline_card(tmp, pipe, **card)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
