"""Pieces of `training/train_usit.py` (and `cache_latents.py`, `evaluate_usit.py`, `bench_train_usit.py`): what the
training data is, which transformer config fits it, the official optimiser groups, and validation sample grids.
The loss is in `dc_ae_hf/training/flow_matching.py`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid
from PIL import Image

from dc_ae_hf.checks import invalid
from dc_ae_hf.data.images import LabeledImageDataset, image_transform, load_labeled_image_dataset_from_flags
from dc_ae_hf.data.latent_cache import (
    METADATA_FILE,
    LatentCacheDataset,
    autoencoder_weights_hash,
    check_cache_matches_autoencoder,
)
from dc_ae_hf.labels import check_id2label
from dc_ae_hf.loading import model_subfolder_hint
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USIT_PRESETS, USiTTransformer2DModel
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from dc_ae_hf.training.cards import save_pipeline
from dc_ae_hf.training.optimization import compile_blocks

__all__ = [
    "autoencoder_config",
    "build_transformer",
    "diffusion_dataset",
    "ema_sample_grid",
    "official_parameter_groups",
    "resolve_diffusion_data",
    "resolve_transformer_config",
    "save_trained_pipeline",
    "spread_class_labels",
]


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


def resolve_diffusion_data(args: argparse.Namespace) -> dict:
    """Describe the training data of `train_usit.py` (its parsed flags): latent shape, classes, scaling factor,
    autoencoder, the autoencoder's channel prefixes (None when its config lists none). With a latent cache, `--vae`
    must hold the weights that made it (compared by hash); warnings that a check could not be made are listed under
    `"warnings"`."""
    images = args.train_data_dir is not None or args.dataset_name is not None
    if (args.latent_cache_dir is not None) == images or (args.train_data_dir and args.dataset_name):
        raise ValueError(
            "give exactly one data source: --latent_cache_dir (a latent cache), --train_data_dir or --dataset_name "
            f"(images encoded on the fly); got latent_cache_dir={args.latent_cache_dir!r}, "
            f"train_data_dir={args.train_data_dir!r}, dataset_name={args.dataset_name!r}"
        )
    if args.latent_cache_dir is not None:
        cache = LatentCacheDataset(args.latent_cache_dir)  # checks metadata and that every shard exists
        meta = cache.metadata
        vae = args.vae or meta["autoencoder"]["name_or_path"]
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
                source=Path(args.latent_cache_dir) / METADATA_FILE,
                model="the cache",
            )
            id2label = {str(k): v for k, v in names.items()}
        return {
            "source": "latent_cache",
            "latent_cache_dir": str(args.latent_cache_dir),
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
    if args.vae is None:
        raise ValueError("encoding images on the fly needs --vae (the frozen autoencoder)")
    vae_config = autoencoder_config(args.vae)
    f = 2 ** (len(vae_config["encoder_block_out_channels"]) - 1)
    if args.resolution % f:
        raise invalid("--resolution", args.resolution, f"must be divisible by the autoencoder's compression ratio {f}")
    dataset, _, id2label, num_classes = load_labeled_image_dataset_from_flags(args)
    c = vae_config["latent_channels"]
    choices = vae_config.get("latent_channel_choices")
    return {
        "source": "images",
        "vae": args.vae,
        "latent_shape": [c, args.resolution // f, args.resolution // f],
        "scaling_factor": vae_config["scaling_factor"],
        "num_examples": len(dataset),
        "num_classes": num_classes,
        "id2label": id2label,
        "latent_channel_choices": list(choices) if choices else None,
        "warnings": [],
    }


def resolve_transformer_config(args: argparse.Namespace, data: dict) -> tuple[dict, str]:
    """The transformer config (data-derived sizes unless given) and where it came from; checked against the data."""
    if (args.model_config is None) == (args.pretrained_model_name_or_path is None):
        raise ValueError(
            "give exactly one of --model_config (train from scratch) and --pretrained_model_name_or_path (continue), "
            f"got {args.model_config!r} and {args.pretrained_model_name_or_path!r}"
        )
    c, h, w = data["latent_shape"]
    if h != w:
        raise ValueError(f"USiT needs square latents, the data has {h}x{w}")
    wanted = {
        "in_channels": args.in_channels or c,
        "sample_size": args.sample_size or h,
        "num_classes": args.num_classes or data["num_classes"],
    }
    if args.pretrained_model_name_or_path is not None:
        try:
            config = dict(USiTTransformer2DModel.load_config(args.pretrained_model_name_or_path))
        except (OSError, ValueError) as error:
            hint = model_subfolder_hint(args.pretrained_model_name_or_path, ("transformer",))
            raise invalid(
                "--pretrained_model_name_or_path", args.pretrained_model_name_or_path, f"not loadable ({error}){hint}"
            ) from None
        source = args.pretrained_model_name_or_path
        for key in ("in_channels", "sample_size", "num_classes"):
            if getattr(args, key) is not None and getattr(args, key) != config[key]:
                raise invalid(f"--{key}", getattr(args, key), f"the pretrained model has {key}={config[key]}")
            wanted[key] = config[key]
        old = config.get("class_dropout_prob", 0.1)
        if args.class_dropout_prob is not None and (args.class_dropout_prob > 0) != (old > 0):
            raise invalid(
                "--class_dropout_prob", args.class_dropout_prob, f"must stay {'> 0' if old > 0 else '0'} (null class)"
            )
    elif args.model_config in USIT_PRESETS:
        config, source = dict(USIT_PRESETS[args.model_config]), f"preset {args.model_config}"
    elif Path(args.model_config).is_file() or (Path(args.model_config) / "config.json").is_file():
        path = Path(args.model_config)
        path = path / "config.json" if path.is_dir() else path
        config, source = json.loads(path.read_text()), str(path)
    else:
        raise invalid(
            "--model_config", args.model_config, f"neither a config.json nor a preset {sorted(USIT_PRESETS)}"
        )
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config.update(wanted)
    if args.class_dropout_prob is not None:
        config["class_dropout_prob"] = args.class_dropout_prob
    if config["in_channels"] != c:
        raise invalid("--in_channels", config["in_channels"], f"must equal the data's latent channels {c}")
    if config["sample_size"] != h:
        raise invalid("--sample_size", config["sample_size"], f"must equal the data's latent size {h}")
    if config["num_classes"] != data["num_classes"]:  # one class embedding per class of the data, none unused
        labels = "class ids 0..{}".format(data["num_classes"] - 1)
        if args.pretrained_model_name_or_path is not None and args.num_classes is None:
            raise invalid(
                "--pretrained_model_name_or_path",
                args.pretrained_model_name_or_path,
                f"its transformer has {config['num_classes']} classes but the data has {data['num_classes']} "
                f"({labels}); the transformer's classes must be the data's",
            )
        raise invalid(
            "--num_classes",
            config["num_classes"],
            f"the data has {data['num_classes']} classes ({labels}); leave --num_classes out to take the data's",
        )
    return config, source


def build_transformer(args: argparse.Namespace, config: dict) -> USiTTransformer2DModel:
    """The transformer to train, in training mode: from `--pretrained_model_name_or_path` (with the resolved
    `class_dropout_prob`) or a fresh one from the resolved config (seed torch first for the same initial weights on
    every process)."""
    if args.pretrained_model_name_or_path:
        model = USiTTransformer2DModel.from_pretrained(args.pretrained_model_name_or_path)
        model.register_to_config(class_dropout_prob=config["model"]["config"]["class_dropout_prob"])
    else:
        model = USiTTransformer2DModel.from_config(config["model"]["config"])
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if args.compile:
        compile_blocks(model, args.compile_backend)
    return model.train()


def diffusion_dataset(args: argparse.Namespace, config: dict) -> torch.utils.data.Dataset:
    """The training examples: the latent cache (`{"latents", "labels"}`) or labelled images for encoding on the fly
    (`{"pixel_values", "labels"}`, ADM center crop, optional flips seeded per sample)."""
    if config["data"]["source"] == "latent_cache":
        return LatentCacheDataset(args.latent_cache_dir)
    dataset, image_column, _, _ = load_labeled_image_dataset_from_flags(args)
    transform = image_transform(args.resolution, random_flip=args.random_flip)
    return LabeledImageDataset(dataset, transform, image_column, args.label_column, seed=args.seed)


def save_trained_pipeline(folder: Path, model, ema: EMAModel, vae, args: argparse.Namespace, config: dict, run):
    """Save the EMA transformer with `vae` as a `DCAE15Pipeline` folder with its model card (main process), with its
    code when `--self_contained`."""
    ema_model = USiTTransformer2DModel.from_config(model.config)
    ema.copy_to(ema_model.parameters())
    id2label = {int(k): v for k, v in config["id2label"].items()} if config["id2label"] else None
    if config["augmented"]:
        choices = config["latent_channel_choices"]
        if getattr(args, "channel_sampling", "per_pass") == "per_sample":
            full = ", the full latent on half of each batch" if args.always_include_full else ""
            mode = f"augmented diffusion training (paper Eq. 2), one c' per sample in {choices}, one pass{full}"
        else:
            full = ", always with the full latent" if args.always_include_full else ""
            mode = (
                f"augmented diffusion training (paper Eq. 2), c' in {choices}, "
                f"{args.num_channel_samples} per step{full}"
            )
    else:
        mode = "the plain full-latent objective (--no_augmented baseline)"
    data, steps = config["data"], run.step
    kept = [d for d in getattr(args, "ema_decays", [ema.decay]) if d != ema.decay]
    others = f" (the run also kept EMAs {', '.join(f'{d:g}' for d in kept)})" if kept else ""
    provenance = (
        f"{steps} steps on {data['source']} ({data['num_examples']} examples), batch {args.train_batch_size} x "
        f"{run.accelerator.num_processes} processes x {args.gradient_accumulation_steps} accumulation, SiT flow "
        f"matching with {mode}; AdamW lr {args.learning_rate}, betas ({args.adam_beta1}, {args.adam_beta2}), weight "
        f"decay {args.adam_weight_decay}; EMA {ema.decay:g} (warmup {args.ema_warmup_steps}), which the "
        f"transformer here holds{others}. All settings: training_config.json of the run."
    )
    return save_pipeline(
        folder,
        ema_model.eval(),
        vae,
        id2label,
        self_contained=args.self_contained,
        model_name=run.repo_id.split("/")[-1],
        repo_id=run.repo_id if args.push_to_hub else str(folder),
        description="Class-conditional image generation with a USiT trained by `dc_ae_hf`.",
        source=f"trained with `training/train_usit.py` for {steps} steps",
        provenance=provenance,
        guidance_scale=args.validation_guidance_scale,
        solver="dopri5",
        num_inference_steps=250,
    )


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
