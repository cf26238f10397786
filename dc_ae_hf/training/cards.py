"""Model cards of what the trainers write (huggingface_hub `ModelCard` templates in `model_cards/`), and the
trained pipeline folder itself.

- :func:`write_trained_autoencoder_card`: `model_cards/autoencoder.md` for a `train_dc_ae.py` result.
- :func:`write_pipeline_card` / :func:`save_pipeline`: `model_cards/pipeline.md` and a `DCAE15Pipeline` folder for a
  `train_usit.py` result (also used by the toy recipe and the converters' pipeline assembly).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from diffusers import FlowMatchEulerDiscreteScheduler
from huggingface_hub import ModelCardData
from torch import nn

from dc_ae_hf.hub import write_model_card
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from dc_ae_hf.training.autoencoder import PHASES

__all__ = ["save_pipeline", "transformer_summary", "write_pipeline_card", "write_trained_autoencoder_card"]


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
    config = vae.config
    structured = bool(getattr(config, "latent_channel_choices", None))
    choices = list(getattr(vae, "latent_channel_choices", None) or [config.latent_channels])
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
    card_data = ModelCardData(
        library_name="diffusers",
        license="other",
        tags=["dc-ae", "autoencoder", "dc_ae_hf"],
        base_model=base_model if base_model and "/" in base_model and not Path(base_model).exists() else None,
    )
    return write_model_card(
        folder,
        "autoencoder",
        card_data,
        model_name=model_name,
        description="Deep Compression Autoencoder"
        + (" with a structured latent space (decode from any channel prefix)." if structured else "."),
        source="trained with `training/train_dc_ae.py`",
        repo_id=repo_id,
        structured=structured,
        example_channels=choices[0],
        spatial_compression=vae.spatial_compression_ratio,
        latent_channels=config.latent_channels,
        channel_choices=", ".join(str(c) for c in choices) if structured else "no",
        shortcuts="yes (DC-AE 1.0)" if getattr(vae, "has_latent_shortcuts", False) else "no",
        scaling_factor=config.scaling_factor,
        num_parameters=f"{sum(p.numel() for p in vae.parameters()) / 1e6:.1f}M",
        provenance=provenance,
        metrics_table=metrics_table,
    )


def transformer_summary(model) -> str:
    """One line: depth, width, heads and parameter count of a `USiTTransformer2DModel`."""
    cfg = model.config
    parameters = sum(p.numel() for p in model.parameters())
    return (
        f"USiT, {cfg.num_layers} layers ({cfg.num_layers + 1} blocks), hidden "
        f"{cfg.num_attention_heads * cfg.attention_head_dim}, {cfg.num_attention_heads} heads, patch {cfg.patch_size}, "
        f"{parameters / 1e6:.2f}M parameters"
    )


def write_pipeline_card(
    folder: str | os.PathLike,
    pipe,
    model_name: str,
    repo_id: str,
    description: str,
    source: str,
    provenance: str,
    metrics_table: str = "",
    guidance_scale: float = 1.0,
    solver: str = "dopri5",
    num_inference_steps: int = 250,
) -> Path:
    """Render `model_cards/pipeline.md` for a `DCAE15Pipeline` and save it as ``<folder>/README.md``."""
    vae, model = pipe.vae, pipe.transformer
    id2label = pipe.config.id2label or {}
    example = [id2label[k].split(",")[0] for k in sorted(id2label, key=int)[:2]]
    size = model.config.sample_size
    return write_model_card(
        folder,
        "pipeline",
        ModelCardData(
            library_name="diffusers", license="other", tags=["dc-ae", "usit", "class-conditional", "dc_ae_hf"]
        ),
        model_name=model_name,
        description=description,
        source=source,
        repo_id=repo_id,
        example_labels=json.dumps(example or [0, 1]),
        guidance_scale=guidance_scale,
        solver=solver,
        num_inference_steps=num_inference_steps,
        autoencoder=f"{type(vae).__name__}, f{vae.spatial_compression_ratio}c{vae.config.latent_channels}",
        transformer=transformer_summary(model),
        latent_shape=f"{model.config.in_channels}x{size}x{size}",
        scaling_factor=vae.config.scaling_factor,
        num_classes=model.config.num_classes,
        provenance=provenance,
        metrics_table=metrics_table,
    )


def save_pipeline(folder: str | os.PathLike, transformer, vae, id2label: dict[int, str] | None = None, **card) -> Path:
    """Save ``DCAE15Pipeline(transformer, vae, FlowMatchEulerDiscreteScheduler(), id2label)`` with its model card
    (:func:`write_pipeline_card` with ``card``) as ``folder``, atomically: written to ``<folder>.tmp``, then renamed
    over any previous ``folder``."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = DCAE15Pipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), id2label=id2label
    )
    pipe.save_pretrained(tmp, safe_serialization=True)
    write_pipeline_card(tmp, pipe, **card)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
