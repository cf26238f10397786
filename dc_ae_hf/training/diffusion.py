"""Pieces of `training/train_usit.py`: what the training data is (`DiffusionDataSettings`, `resolve_diffusion_data`,
`diffusion_dataset`), which transformer config fits it and the model to train, the official optimiser groups, and
validation sample grids. The loss is in `dc_ae_hf/training/flow_matching.py`, the c' choice in
`dc_ae_hf/training/randomness.py`, what a finished run writes in `dc_ae_hf/training/export.py`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid
from PIL import Image

from dc_ae_hf.checks import invalid
from dc_ae_hf.data.images import LabeledImageDataset, image_transform, load_labeled_image_dataset
from dc_ae_hf.data.latent_cache import (
    METADATA_FILE,
    LatentCacheDataset,
    autoencoder_weights_hash,
    check_cache_matches_autoencoder,
)
from dc_ae_hf.labels import check_id2label
from dc_ae_hf.loading import model_subfolder_hint
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from dc_ae_hf.presets import USIT_PRESETS
from dc_ae_hf.training.optimization import compile_blocks

__all__ = [
    "DiffusionDataSettings",
    "autoencoder_config",
    "build_transformer",
    "diffusion_dataset",
    "ema_sample_grid",
    "official_parameter_groups",
    "resolve_diffusion_data",
    "resolve_transformer_config",
    "spread_class_labels",
]


@dataclass(frozen=True)
class DiffusionDataSettings:
    """Where the training examples come from: a latent cache (`latent_cache_dir`) or labelled images encoded on the
    fly by `vae` (`dataset_name` or `train_data_dir`). Each field is `train_usit.py`'s flag of that name."""

    latent_cache_dir: str | os.PathLike | None = None
    vae: str | None = None  # the autoencoder (default with a cache: the one that made it)
    dataset_name: str | None = None
    dataset_config_name: str | None = None
    train_data_dir: str | os.PathLike | None = None
    split: str = "train"
    image_column: str | None = None
    label_column: str = "label"
    cache_dir: str | os.PathLike | None = None  # the Hugging Face datasets cache
    resolution: int = 256  # images: ADM center crop size (px)
    random_flip: bool = False  # images: random horizontal flips, seeded per sample

    def load_images(self):
        """`(dataset, image_column, id2label, num_classes)` of the labelled images (`load_labeled_image_dataset`)."""
        return load_labeled_image_dataset(
            self.dataset_name,
            self.train_data_dir,
            self.split,
            self.cache_dir,
            self.dataset_config_name,
            self.image_column,
            self.label_column,
        )


def spread_class_labels(num_classes: int, count: int = 8) -> list[int]:
    """``count`` class ids spread evenly over ``0 .. num_classes - 1`` (all classes when there are fewer)."""
    if num_classes <= count:
        return list(range(num_classes))
    return [round(i * (num_classes - 1) / (count - 1)) for i in range(count)] if count > 1 else [0]


def autoencoder_config(name: str, flag: str = "--vae") -> dict:
    """The config of an autoencoder folder/Hub id as `AutoencoderDC15` builds it (no weights are loaded)."""
    try:
        with torch.device("meta"):
            return dict(AutoencoderDC15.from_config(AutoencoderDC15.load_config(name)).config)
    except (OSError, ValueError, TypeError) as error:
        hint = model_subfolder_hint(name)
        raise invalid(flag, name, f"it could not be loaded as an autoencoder config ({error}){hint}") from None


def resolve_diffusion_data(settings: DiffusionDataSettings) -> dict:
    """Describe the training data: latent shape, classes, scaling factor, autoencoder, the autoencoder's channel
    prefixes (None when its config lists none). With a latent cache, `vae` must hold the weights that made it
    (compared by hash); warnings that a check could not be made are listed under `"warnings"`."""
    images = settings.train_data_dir is not None or settings.dataset_name is not None
    if (settings.latent_cache_dir is not None) == images or (settings.train_data_dir and settings.dataset_name):
        raise ValueError(
            "give exactly one data source: --latent_cache_dir (a latent cache), --train_data_dir or --dataset_name "
            f"(images encoded on the fly); got latent_cache_dir={settings.latent_cache_dir!r}, "
            f"train_data_dir={settings.train_data_dir!r}, dataset_name={settings.dataset_name!r}"
        )
    if settings.latent_cache_dir is not None:
        cache = LatentCacheDataset(settings.latent_cache_dir)  # checks metadata and that every shard exists
        meta = cache.metadata
        vae = settings.vae or meta["autoencoder"]["name_or_path"]
        vae_config = autoencoder_config(vae)
        check_cache_matches_autoencoder(meta, vae_config, vae)  # the architecture first: cheap
        weights = autoencoder_weights_hash(AutoencoderDC15.from_pretrained(vae))
        warning = check_cache_matches_autoencoder(meta, vae_config, vae, weights_hash=weights)
        c, h, w = meta["latent_shape"]
        num_classes = int(meta["num_classes"])
        id2label = None
        if meta["id2label"]:  # the one check of every id2label (ids exactly 0..num_classes-1)
            names = check_id2label(
                meta["id2label"],
                num_classes,
                name="id2label of --latent_cache_dir",
                source=Path(settings.latent_cache_dir) / METADATA_FILE,
                model="the cache",
            )
            id2label = {str(k): v for k, v in names.items()}
        return {
            "source": "latent_cache",
            "latent_cache_dir": str(settings.latent_cache_dir),
            "vae": vae,
            "vae_weights_hash": weights,
            "latent_shape": [c, h, w],
            "scaling_factor": meta["scaling_factor"],
            "num_examples": len(cache),
            "num_classes": num_classes,
            "id2label": id2label,
            "flip": meta["flip"],
            "latent_channel_choices": meta["autoencoder"]["latent_channel_choices"],
            "warnings": [warning] if warning else [],
        }
    if settings.vae is None:
        raise ValueError("encoding images on the fly needs --vae (the frozen autoencoder)")
    vae_config = autoencoder_config(settings.vae)
    f = 2 ** (len(vae_config["encoder_block_out_channels"]) - 1)
    r = settings.resolution
    if r % f:
        raise invalid("--resolution", r, f"must be divisible by the autoencoder's compression ratio {f}")
    dataset, _, id2label, num_classes = settings.load_images()
    c = vae_config["latent_channels"]
    choices = vae_config.get("latent_channel_choices")
    return {
        "source": "images",
        "vae": settings.vae,
        "latent_shape": [c, r // f, r // f],
        "scaling_factor": vae_config["scaling_factor"],
        "num_examples": len(dataset),
        "num_classes": num_classes,
        "id2label": id2label,
        "latent_channel_choices": list(choices) if choices else None,
        "warnings": [],
    }


def resolve_transformer_config(
    data: dict,
    model_config: str | os.PathLike | None = None,
    pretrained_model_name_or_path: str | os.PathLike | None = None,
    in_channels: int | None = None,
    sample_size: int | None = None,
    num_classes: int | None = None,
    class_dropout_prob: float | None = None,
) -> tuple[dict, str]:
    """The transformer config and where it came from: a preset or config.json (`model_config`, from scratch) or a
    pretrained model's, with the sizes of `data` (`resolve_diffusion_data`) unless given, checked against the data."""
    if (model_config is None) == (pretrained_model_name_or_path is None):
        raise ValueError(
            "give exactly one of --model_config (train from scratch) and --pretrained_model_name_or_path (continue), "
            f"got {model_config!r} and {pretrained_model_name_or_path!r}"
        )
    c, h, w = data["latent_shape"]
    if h != w:
        raise ValueError(f"USiT needs square latents, the data has {h}x{w}")
    given = {"in_channels": in_channels, "sample_size": sample_size, "num_classes": num_classes}
    wanted = {
        "in_channels": in_channels or c,
        "sample_size": sample_size or h,
        "num_classes": num_classes or data["num_classes"],
    }
    if pretrained_model_name_or_path is not None:
        try:
            config = dict(USiTTransformer2DModel.load_config(pretrained_model_name_or_path))
        except (OSError, ValueError) as error:
            hint = model_subfolder_hint(pretrained_model_name_or_path, ("transformer",))
            raise invalid(
                "--pretrained_model_name_or_path", pretrained_model_name_or_path, f"not loadable ({error}){hint}"
            ) from None
        source = pretrained_model_name_or_path
        for key, value in given.items():
            if value is not None and value != config[key]:
                raise invalid(f"--{key}", value, f"the pretrained model has {key}={config[key]}")
            wanted[key] = config[key]
        old = config.get("class_dropout_prob", 0.1)
        if class_dropout_prob is not None and (class_dropout_prob > 0) != (old > 0):
            raise invalid(
                "--class_dropout_prob", class_dropout_prob, f"must stay {'> 0' if old > 0 else '0'} (null class)"
            )
    elif model_config in USIT_PRESETS:
        config, source = dict(USIT_PRESETS[model_config]), f"preset {model_config}"
    elif Path(model_config).is_file() or (Path(model_config) / "config.json").is_file():
        path = Path(model_config)
        path = path / "config.json" if path.is_dir() else path
        config, source = json.loads(path.read_text()), str(path)
    else:
        raise invalid("--model_config", model_config, f"neither a config.json nor a preset {sorted(USIT_PRESETS)}")
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config.update(wanted)
    if class_dropout_prob is not None:
        config["class_dropout_prob"] = class_dropout_prob
    if config["in_channels"] != c:
        raise invalid("--in_channels", config["in_channels"], f"must equal the data's latent channels {c}")
    if config["sample_size"] != h:
        raise invalid("--sample_size", config["sample_size"], f"must equal the data's latent size {h}")
    if config["num_classes"] != data["num_classes"]:  # one class embedding per class of the data, none unused
        labels = "class ids 0..{}".format(data["num_classes"] - 1)
        if pretrained_model_name_or_path is not None and num_classes is None:
            raise invalid(
                "--pretrained_model_name_or_path",
                pretrained_model_name_or_path,
                f"its transformer has {config['num_classes']} classes but the data has {data['num_classes']} "
                f"({labels}); the transformer's classes must be the data's",
            )
        raise invalid(
            "--num_classes",
            config["num_classes"],
            f"the data has {data['num_classes']} classes ({labels}); leave --num_classes out to take the data's",
        )
    return config, source


def build_transformer(
    config: dict,
    pretrained_model_name_or_path: str | os.PathLike | None = None,
    gradient_checkpointing: bool = False,
    compile_backend: str | None = None,
) -> USiTTransformer2DModel:
    """The transformer to train, in training mode: a fresh one from the resolved `config` (seed torch first for the
    same initial weights on every process), or `pretrained_model_name_or_path` with the config's
    `class_dropout_prob`. `compile_backend`: `torch.compile` every block with it (`compile_blocks`); None: not."""
    if pretrained_model_name_or_path:
        model = USiTTransformer2DModel.from_pretrained(pretrained_model_name_or_path)
        model.register_to_config(class_dropout_prob=config["class_dropout_prob"])
    else:
        model = USiTTransformer2DModel.from_config(config)
    if gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if compile_backend is not None:
        compile_blocks(model, compile_backend)
    return model.train()


def diffusion_dataset(settings: DiffusionDataSettings, seed: int = 0) -> torch.utils.data.Dataset:
    """The training examples: the latent cache (`{"latents", "labels"}`) or labelled images for encoding on the fly
    (`{"pixel_values", "labels"}`, ADM center crop, optional flips seeded per sample by `seed`)."""
    if settings.latent_cache_dir is not None:
        return LatentCacheDataset(settings.latent_cache_dir)
    dataset, image_column, _, _ = settings.load_images()
    transform = image_transform(settings.resolution, random_flip=settings.random_flip)
    return LabeledImageDataset(dataset, transform, image_column, settings.label_column, seed=seed)


def official_parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups of the official recipe: no weight decay on the parameters the official `no_wd_keys`
    ("norm.weight", "bias", matched by substring) select in a USiT, i.e. the biases and the final LayerNorm weight."""
    no_decay = {n for n, _ in model.named_parameters() if n.endswith("bias") or n == "norm_out.weight"}
    return [
        {"params": [p for n, p in model.named_parameters() if n not in no_decay], "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if n in no_decay], "weight_decay": 0.0},
    ]


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
        pipe = DCAE15Pipeline(transformer=model, vae=vae, id2label=id2label)  # scheduler None: default_scheduler()
        pipe.set_progress_bar_config(disable=True)
        images = []
        for c in channels:
            generator = torch.Generator(model.device).manual_seed(seed)
            output = pipe(
                class_labels,
                guidance_scale=guidance_scale,
                generator=generator,
                latent_channels=c,
                num_inference_steps=num_inference_steps,
                solver=solver,
            )
            images += output.images
    finally:
        model.train(was_training)
        ema.restore(model.parameters())
    return make_image_grid(images, rows=len(channels), cols=len(class_labels))
