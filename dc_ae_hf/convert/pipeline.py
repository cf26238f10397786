"""Official autoencoder + USiT checkpoints -> one `DCAE15Pipeline` folder (model_index.json, vae, transformer,
scheduler, id2label, model card)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..checks import NOT_GIVEN
from ..hub import push_folder_to_hub, write_pipeline_card
from ..labels import check_id2label, load_id2label
from ..models.transformer_usit import USiTTransformer2DModel
from ..output_folders import card_names, claim_output_folder, clear_output_folder, mark_output_folder
from ..pipelines.pipeline_dcae15 import DCAE15Pipeline, default_scheduler, load_imagenet_id2label
from ..presets import PIPELINE_PRESETS, USIT_PRESETS, resolve_pipeline_preset
from . import PIPELINE_WRITER
from .autoencoder import (
    check_scaling_factor,
    describe_latent_config,
    load_official_autoencoder,
    recognised_preset,
    scaling_factor_is_published,
)
from .checkpoint_io import load_original_checkpoint
from .usit import check_num_attention_heads, convert_usit_state_dict, infer_usit_config

logger = logging.getLogger(__name__)


def build_official_pipeline(
    autoencoder: str | os.PathLike,
    transformer: str | os.PathLike,
    preset: str | None = None,
    num_attention_heads: int | None = None,
    scaling_factor: float | None = None,
    id2label: dict[int, str] | str | os.PathLike | None = None,
    ema_decay: float | None = None,
    latent_channel_choices=NOT_GIVEN,
    id2label_name: str = "id2label",
) -> DCAE15Pipeline:
    """Load both official checkpoints (Hub ids or files), convert them strictly and assemble a pipeline.

    Without `preset` both architectures are inferred from the weights: `num_attention_heads` (a positive int) is
    then needed for transformer widths other than the official ones (`AttentionHeadsError` otherwise), and
    `latent_channel_choices` (prefixes, or None for an unstructured model) for a DC-AE 1.5-style autoencoder of no
    official architecture (`LatentStructureError` otherwise). `scaling_factor` (finite, > 0) replaces the
    autoencoder's; an unknown one is written as 1.0 with a `ScalingFactorUnknownWarning`. `ema_decay` picks one EMA
    of an FSDP checkpoint holding several. `id2label` (a dict, or a JSON file read with `dc_ae_hf.labels.load_id2label`,
    checked before any checkpoint is read) defaults to ImageNet-1k for 1000-class models; its ids must be exactly
    `0..num_classes-1` of the transformer. `id2label_name` is how the caller names it in errors (`--id2label`).
    """
    if isinstance(id2label, (str, os.PathLike)):
        load_id2label(id2label, name=id2label_name)  # the file's own problems, before the checkpoints are read
    elif id2label is not None:
        check_id2label(id2label, name=id2label_name)
    spec = resolve_pipeline_preset(preset) if preset is not None else None
    check_num_attention_heads(num_attention_heads)
    ae_overrides = {}
    if scaling_factor is not None:
        ae_overrides["scaling_factor"] = check_scaling_factor(scaling_factor)
    if latent_channel_choices is not NOT_GIVEN:
        ae_overrides["latent_channel_choices"] = latent_channel_choices
    if spec:
        preset_heads = USIT_PRESETS[spec["transformer"]]["num_attention_heads"]
        if num_attention_heads is not None and num_attention_heads != preset_heads:
            raise ValueError(
                f"num_attention_heads={num_attention_heads} contradicts preset={preset!r}, whose transformer has "
                f"{preset_heads} heads; leave num_attention_heads out with a preset."
            )
    vae = load_official_autoencoder(
        load_original_checkpoint(autoencoder), preset=spec["autoencoder"] if spec else None, **ae_overrides
    )

    original = load_original_checkpoint(transformer)
    if spec:
        config = {**USIT_PRESETS[spec["transformer"]], **spec["transformer_overrides"]}
    else:
        config = infer_usit_config(original, num_attention_heads=num_attention_heads, ema_decay=ema_decay)
    model = USiTTransformer2DModel(**config)
    model.load_state_dict(convert_usit_state_dict(original, model=model, ema_decay=ema_decay), strict=True)

    if model.config.in_channels != vae.config.latent_channels:
        raise ValueError(
            f"the transformer expects in_channels={model.config.in_channels} but the autoencoder has "
            f"latent_channels={vae.config.latent_channels}: these checkpoints do not belong together"
        )
    if id2label is None and model.config.num_classes == 1000:
        id2label = load_imagenet_id2label()
    if isinstance(id2label, (str, os.PathLike)):
        id2label = load_id2label(id2label, model.config.num_classes, name=id2label_name)
    elif id2label is not None:
        id2label = check_id2label(id2label, model.config.num_classes, name=id2label_name)
    return DCAE15Pipeline(transformer=model.eval(), vae=vae.eval(), scheduler=default_scheduler(), id2label=id2label)


def convert_pipeline(
    autoencoder: str,
    transformer: str,
    output: str | os.PathLike,
    preset: str | None = None,
    push_to_hub: str | None = None,
    log: Callable[[str], None] = logger.info,
    self_contained: bool = False,
    **kwargs,
) -> Path:
    """`build_official_pipeline` + `save_pretrained` + model card (+ upload); returns the output folder.

    `self_contained` writes the folder with its code (generated from dc_ae_hf): plain diffusers loads it with
    `DiffusionPipeline.from_pretrained(output, trust_remote_code=True)`.

    `log` receives one line per step (the recognised autoencoder architecture, where the folder was written, before
    any upload). A failed upload raises `dc_ae_hf.hub.HubPushError`; the folder is complete by then.
    """
    output = claim_output_folder(output, PIPELINE_WRITER, "--output", earlier_output=card_names(PIPELINE_WRITER))
    pipe = build_official_pipeline(autoencoder, transformer, preset=preset, **kwargs)
    vae = pipe.vae
    ae_preset = PIPELINE_PRESETS[preset]["autoencoder"] if preset else recognised_preset(vae.config)
    if preset is None and ae_preset is not None:
        log(f"autoencoder: recognised the official architecture {ae_preset} ({describe_latent_config(vae.config)})")
    scaling_known = kwargs.get("scaling_factor") is not None or scaling_factor_is_published(ae_preset)
    clear_output_folder(output)  # the converter's own earlier output (or nothing): replaced whole
    pipe.save_pretrained(output, safe_serialization=True, self_contained=self_contained)
    labels = pipe.id2label or {}
    write_pipeline_card(
        output,
        pipe,
        model_name=preset or output.name,
        repo_id=push_to_hub or str(output),
        description="Class-conditional image generation with a USiT diffusion transformer in a DC-AE latent space.",
        source=f"converted from the official checkpoints `{autoencoder}` and `{transformer}`",
        provenance=(
            "`python -m dc_ae_hf.convert pipeline`: both official state dicts are mapped key by key and loaded with "
            "`strict=True`; the converters and samplers are tested against tensors produced by the official DC-Gen "
            "code (velocities and fixed-step samples within 1e-5, dopri5 within 1e-3). Guidance 1.5 and the "
            "adaptive dopri5 sampler are the official evaluation defaults (reference: DC-Gen projects/DC-AE.md)."
        ),
        guidance_scale=1.5,
        example_labels=[labels[i].split(",")[0] for i in (207, 360, 387) if i in labels] or [0, 1],
        scaling_factor=None if scaling_known else f"{vae.config.scaling_factor} (not known)",
    )
    mark_output_folder(output, PIPELINE_WRITER)
    log(f"wrote {output}")
    if push_to_hub:
        log(f"uploading {output} to the Hub repo {push_to_hub}")
        push_folder_to_hub(output, push_to_hub)
        log(f"pushed {output} to {push_to_hub}")
    return output
