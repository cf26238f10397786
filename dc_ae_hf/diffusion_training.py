"""Pieces of USiT training and evaluation shared by `training/{cache_latents,train_usit,evaluate_usit}.py` and
`benchmarks/bench_train_usit.py` (the loss itself is in `dc_ae_hf/flow_matching.py`).

- :class:`ExponentialWarmupEMAModel`: diffusers' `EMAModel` with the official DC-Gen decay warmup.
- :func:`load_labeled_image_dataset` / :class:`LabeledImageDataset`: class-labelled images for caching latents and
  for encoding on the fly.
- :func:`ema_sample_grid`, :func:`spread_class_labels`, :func:`image_grid`: validation sample grids.
- :func:`save_pipeline` / :func:`write_pipeline_card`: a trained `DCAE15Pipeline` folder and its model card
  (`model_cards/pipeline.md`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import EMAModel
from huggingface_hub import ModelCardData
from PIL import Image

from dc_ae_hf.data.images import (
    TransformedImageDataset,
    find_image_column,
    load_image_dataset,
    to_rgb,
)
from dc_ae_hf.extras import missing_extra
from dc_ae_hf.hub import write_model_card
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline

try:
    import datasets
except ImportError as error:
    raise missing_extra(error, "dc_ae_hf.diffusion_training") from error

__all__ = [
    "ExponentialWarmupEMAModel",
    "LabeledImageDataset",
    "ema_sample_grid",
    "image_grid",
    "load_labeled_image_dataset",
    "save_pipeline",
    "spread_class_labels",
    "transformer_summary",
    "write_pipeline_card",
]


class ExponentialWarmupEMAModel(EMAModel):
    """diffusers `EMAModel` whose decay at optimisation step n is ``decay * (1 - exp(-n / warmup_steps))``.

    This is the official schedule (``dc_gen/apps/utils/ema.py``: ``EMA.step`` with ``ema_warmup_steps=2000``; the
    trainer calls it with the 1-based global step after each optimiser step, as ``EMAModel.step`` counts). diffusers'
    own warmup (``1 - (1 + n / inv_gamma) ** -power``) has another shape, so only ``get_decay`` is replaced;
    everything else (``store/copy_to/restore``, ``save_pretrained/from_pretrained``, ``state_dict``) is the parent's,
    with ``warmup_steps`` added to the saved state.

    Args:
        parameters: the parameters to average.
        decay: the target decay d (official 0.9999).
        warmup_steps: the warmup time constant (official 2000); 0 disables the warmup (constant d).
        **kwargs: `EMAModel` arguments (``model_cls``, ``model_config``, ``foreach``).
    """

    def __init__(self, parameters, decay: float = 0.9999, warmup_steps: int = 2000, **kwargs) -> None:
        super().__init__(parameters, decay=decay, **kwargs)
        self.warmup_steps = self._check_warmup(warmup_steps)

    @staticmethod
    def _check_warmup(warmup_steps) -> int:
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"ema warmup_steps must be an int >= 0, got {warmup_steps!r}")
        return warmup_steps

    def get_decay(self, optimization_step: int) -> float:
        if self.warmup_steps == 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-optimization_step / self.warmup_steps))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.warmup_steps = self._check_warmup(state_dict.get("warmup_steps", self.warmup_steps))


def load_labeled_image_dataset(
    dataset_name: str | None = None,
    train_data_dir: str | os.PathLike | None = None,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    dataset_config_name: str | None = None,
    image_column: str | None = None,
    label_column: str = "label",
    max_images: int | None = None,
) -> tuple[datasets.Dataset, str, dict[str, str] | None, int]:
    """A class-labelled image dataset for class-conditional training (map-style, not streaming).

    Returns ``(dataset, image_column, id2label, num_classes)``: ``id2label`` maps ``"<id>"`` to the class names of a
    ``ClassLabel`` column (an imagefolder's class folders), None for plain integer labels (then ``num_classes`` is
    the largest label + 1). ``max_images`` keeps the first N rows. ValueError for an empty dataset or a missing or
    non-integer label column.
    """
    source = train_data_dir if train_data_dir is not None else dataset_name
    try:
        dataset = load_image_dataset(dataset_name, train_data_dir, split, cache_dir=cache_dir,
                                     dataset_config_name=dataset_config_name)  # fmt: skip
    except datasets.data_files.EmptyDatasetError as error:
        raise ValueError(f"the dataset {str(source)!r} has no images ({error})") from error
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise ValueError(f"--max_images={max_images!r} is not allowed: must be an int >= 1")
        dataset = dataset.select(range(min(max_images, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"the dataset {str(source)!r} (split {split!r}) has no images")
    image_column = find_image_column(dataset, image_column)
    if label_column not in dataset.features:
        raise ValueError(
            f"--label_column={label_column!r} is not a column of the dataset {str(source)!r} (columns: "
            f"{list(dataset.features)}); class-conditional training needs labels"
        )
    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return dataset, image_column, {str(i): name for i, name in enumerate(feature.names)}, feature.num_classes
    labels = dataset[label_column]
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in labels):
        raise ValueError(f"--label_column={label_column!r} must hold class ids (ints >= 0) or be a ClassLabel")
    return dataset, image_column, None, max(labels) + 1


class LabeledImageDataset(TransformedImageDataset):
    """`TransformedImageDataset` that also yields the class label: ``{"pixel_values": (3, R, R), "labels": int}``.

    The label column is read once at construction (cheap: no image is decoded for it).
    """

    def __init__(self, dataset: datasets.Dataset, transform, image_column: str | None = None,
                 label_column: str = "label", seed: int = 0) -> None:  # fmt: skip
        super().__init__(dataset, transform, image_column=image_column, seed=seed)
        if label_column not in dataset.features:
            raise ValueError(
                f"--label_column={label_column!r} is not a column of the dataset: {list(dataset.features)}"
            )
        self.labels = torch.as_tensor(dataset[label_column], dtype=torch.int64)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {**super().__getitem__(index), "labels": self.labels[int(index)]}


def spread_class_labels(num_classes: int, count: int = 8) -> list[int]:
    """``count`` class ids spread evenly over ``0 .. num_classes - 1`` (all classes when there are fewer)."""
    if num_classes <= count:
        return list(range(num_classes))
    return [round(i * (num_classes - 1) / (count - 1)) for i in range(count)] if count > 1 else [0]


def image_grid(images: list[Image.Image], columns: int, padding: int = 2) -> Image.Image:
    """Paste equally sized images into a grid with ``columns`` columns and white ``padding`` between cells."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    width, height = images[0].size
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (columns * (width + padding) + padding, rows * (height + padding) + padding), "white")
    for k, image in enumerate(images):
        row, column = divmod(k, columns)
        grid.paste(to_rgb(image), (padding + column * (width + padding), padding + row * (height + padding)))
    return grid


@torch.no_grad()
def ema_sample_grid(
    model,
    ema: EMAModel,
    vae,
    class_labels: list[int],
    channels: list[int],
    id2label: dict[int, str] | None = None,
    seed: int = 0,
    guidance_scale: float = 1.0,
    num_inference_steps: int = 16,
    solver: str = "euler",
) -> Image.Image:
    """Samples of the EMA weights through `DCAE15Pipeline`: one row per prefix c' in ``channels``, one column per
    class label, the same seeded noise every call (only the explicit generator is used: the global RNG is untouched).

    The EMA weights are swapped into ``model`` (a `USiTTransformer2DModel`, unwrapped) and the training weights and
    mode restored afterwards (diffusers ``store/copy_to/restore``); sampling runs in eval mode (no label dropout).
    """
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    was_training = model.training
    model.eval()
    try:
        pipe = DCAE15Pipeline(transformer=model, vae=vae, id2label=id2label)  # default FlowMatchEuler scheduler
        pipe.set_progress_bar_config(disable=True)
        images = []
        for c in channels:
            generator = torch.Generator(model.device).manual_seed(seed)
            images += pipe(class_labels, guidance_scale=guidance_scale, generator=generator, latent_channels=c,
                           num_inference_steps=num_inference_steps, solver=solver).images  # fmt: skip
    finally:
        model.train(was_training)
        ema.restore(model.parameters())
    return image_grid(images, columns=len(class_labels))


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
        ),  # fmt: skip
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
