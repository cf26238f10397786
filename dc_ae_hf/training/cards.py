"""What the trainers publish: the model card of a trained autoencoder and a trained pipeline folder with its card
(the cards themselves are filled by `dc_ae_hf.hub.write_autoencoder_card` / `write_pipeline_card`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from torch import nn

from dc_ae_hf.hub import transformer_summary, write_autoencoder_card, write_pipeline_card
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline, default_scheduler
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
