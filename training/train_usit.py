"""Train a USiT (U-ViT + SiT flow matching) on DC-AE latents with augmented diffusion training (paper Eq. 2).

    accelerate launch training/train_usit.py --latent_cache_dir latents/in1k-512-f64c128 --model_config usit-h \
        --output_dir runs/usit-h --mixed_precision bf16 --max_train_steps 500000

Each step draws channel prefixes c' (`LatentChannelSampler`, default choices: the autoencoder's) and averages the
flow-matching loss of one pass per prefix on `latents[:, :c']` (`dc_ae_hf.flow_matching.flow_matching_loss`);
`--no_augmented` trains on the full latent only. Data: a latent cache from `training/cache_latents.py` or images
encoded on the fly (`--train_data_dir`/`--dataset_name` + `--vae`). Re-running the same command resumes from the
newest finished checkpoint in `--output_dir`. Outputs: `<output_dir>/pipeline` (vae + EMA transformer + scheduler +
id2label + model card, loads with `DCAE15Pipeline.from_pretrained`) and `<output_dir>/transformer` (raw weights).
Recipe, multi-GPU/multi-node commands and the differences to the official trainer: docs/training.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, set_seed
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from dc_ae_hf.data.images import image_transform
from dc_ae_hf.data.latent_cache import LatentCacheDataset, check_cache_matches_autoencoder
from dc_ae_hf.diffusion_training import (
    ExponentialWarmupEMAModel,
    LabeledImageDataset,
    ema_sample_grid,
    load_labeled_image_dataset,
    save_pipeline,
    spread_class_labels,
)
from dc_ae_hf.flow_matching import flow_matching_loss
from dc_ae_hf.hub import HubPushError, push_folder_to_hub
from dc_ae_hf.latents import encode_to_diffusion_space
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USIT_PRESETS, USiTTransformer2DModel
from dc_ae_hf.sampling import SOLVERS
from dc_ae_hf.training_utils import (
    LatentChannelSampler,
    check_channel_choices,
    gather_process_states,
    invalid_flag,
    load_process_state,
    make_accelerator,
    read_checkpoint_metadata,
    register_pretrained_hooks,
    resolve_resume_checkpoint,
    save_checkpoint,
    save_process_states,
)
from dc_ae_hf.visualization import log_images_to_trackers

logger = get_logger(__name__)
SUPPORTED_DISTRIBUTED = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_argument_group("model")
    g.add_argument("--model_config", help=f"from scratch: a preset {sorted(USIT_PRESETS)} or a config.json")
    g.add_argument("--pretrained_model_name_or_path", help="continue from a USiT save_pretrained folder or Hub id")
    g.add_argument("--sample_size", type=int, help="default: the data's latent size")
    g.add_argument("--in_channels", type=int, help="default: the data's latent channels")
    g.add_argument("--num_classes", type=int, help="default: the data's number of classes")
    g.add_argument("--class_dropout_prob", type=float, help="label dropout to the null class (default: model config)")
    g.add_argument("--gradient_checkpointing", action="store_true")
    g = p.add_argument_group("augmented diffusion training (paper Eq. 2)")
    g.add_argument("--latent_channel_choices", type=int, nargs="+", help="prefixes c' (default: the autoencoder's)")
    g.add_argument("--num_channel_samples", type=int, default=1, help="prefixes drawn per step (official k)")
    g.add_argument("--always_include_full", action="store_true", help="always one pass on the full latent")
    g.add_argument("--no_augmented", action="store_true", help="baseline: the full latent only")
    g = p.add_argument_group("data")
    g.add_argument("--latent_cache_dir", help="latent cache from training/cache_latents.py (the default input)")
    g.add_argument("--train_data_dir", help="imagefolder, encoded on the fly with --vae")
    g.add_argument("--dataset_name", help="Hub dataset, encoded on the fly with --vae")
    g.add_argument("--dataset_config_name")
    g.add_argument("--split", default="train")
    g.add_argument("--image_column")
    g.add_argument("--label_column", default="label")
    g.add_argument("--cache_dir", help="Hugging Face datasets cache")
    g.add_argument("--vae", help="autoencoder (default with a cache: the one that made it)")
    g.add_argument("--resolution", type=int, default=256, help="on the fly: ADM center crop size")
    g.add_argument("--random_flip", action="store_true", help="on the fly: random horizontal flips (official: off)")
    g.add_argument("--train_batch_size", type=int, default=32, help="per process")
    g.add_argument("--dataloader_num_workers", type=int, default=0)
    g = p.add_argument_group("optimisation (defaults: the official USiT recipe)")
    g.add_argument("--learning_rate", type=float, default=1e-4)
    g.add_argument("--adam_beta1", type=float, default=0.99)
    g.add_argument("--adam_beta2", type=float, default=0.99)
    g.add_argument("--adam_weight_decay", type=float, default=0.0)
    g.add_argument("--adam_epsilon", type=float, default=1e-8)
    g.add_argument("--lr_scheduler", default="constant_with_warmup", help="diffusers get_scheduler name")
    g.add_argument("--lr_warmup_steps", type=int, default=5000)
    g.add_argument("--max_grad_norm", type=float, help="default: no clipping (official)")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], help="default: the accelerate config")
    g.add_argument("--max_train_steps", type=int, default=500_000)
    g.add_argument("--ema_decay", type=float, default=0.9999)
    g.add_argument("--ema_warmup_steps", type=int, default=2000, help="decay * (1 - exp(-step / this)); 0: off")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("checkpoints, validation, logging")
    g.add_argument("--output_dir", default="usit-model")
    g.add_argument("--checkpointing_steps", type=int, default=5000)
    g.add_argument("--checkpoints_total_limit", type=int)
    g.add_argument("--resume_from_checkpoint", help="'latest' (default when omitted), 'none' or a checkpoint folder")
    g.add_argument("--validation_steps", type=int, default=5000, help="sample grids from the EMA model")
    g.add_argument("--validation_class_labels", type=int, nargs="*", help="default: 8 classes spread out; none: off")
    g.add_argument("--validation_channels", type=int, nargs="+", help="one grid row per c' (default: full latent)")
    g.add_argument("--validation_solver", default="euler", choices=SOLVERS)
    g.add_argument("--validation_num_inference_steps", type=int, default=16)
    g.add_argument("--validation_guidance_scale", type=float, default=1.0)
    g.add_argument("--report_to", default="tensorboard", choices=["tensorboard", "wandb", "none"])
    g.add_argument("--logging_dir", default="logs", help="relative to --output_dir")
    g.add_argument("--push_to_hub", action="store_true")
    g.add_argument("--hub_model_id", help="default: the name of --output_dir")
    g.add_argument("--dry_run", action="store_true", help="print the resolved configuration (JSON) and exit")
    return p.parse_args(argv)


def _autoencoder_config(name: str, flag: str) -> dict:
    """The config of an autoencoder folder/Hub id as `AutoencoderDC15` builds it (no weights are loaded)."""
    try:
        with torch.device("meta"):
            return dict(AutoencoderDC15.from_config(AutoencoderDC15.load_config(name)).config)
    except (OSError, ValueError, TypeError) as error:
        invalid_flag(flag, name, f"it could not be loaded as an autoencoder config ({error})")


def resolve_data(args: argparse.Namespace) -> dict:
    """Describe the training data: latent shape, classes, scaling factor, autoencoder, channel prefixes."""
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
        vae_config = _autoencoder_config(vae, "vae")
        check_cache_matches_autoencoder(meta, vae_config, vae)
        c, h, w = meta["latent_shape"]
        return {"source": "latent_cache", "latent_cache_dir": str(args.latent_cache_dir), "vae": vae,
                "latent_shape": [c, h, w], "scaling_factor": meta["scaling_factor"], "num_examples": len(cache),
                "num_classes": int(meta["num_classes"]), "id2label": meta["id2label"], "flip": meta["flip"],
                "latent_channel_choices": meta["autoencoder"]["latent_channel_choices"]}  # fmt: skip
    if args.vae is None:
        raise ValueError("encoding images on the fly needs --vae (the frozen autoencoder)")
    vae_config = _autoencoder_config(args.vae, "vae")
    f = 2 ** (len(vae_config["encoder_block_out_channels"]) - 1)
    if args.resolution % f:
        invalid_flag("resolution", args.resolution, f"must be divisible by the autoencoder's compression ratio {f}")
    dataset, _, id2label, num_classes = load_labeled_image_dataset(
        args.dataset_name, args.train_data_dir, args.split, args.cache_dir, args.dataset_config_name,
        args.image_column, args.label_column,
    )  # fmt: skip
    c = vae_config["latent_channels"]
    choices = vae_config.get("latent_channel_choices") or [c]
    return {"source": "images", "vae": args.vae, "latent_shape": [c, args.resolution // f, args.resolution // f],
            "scaling_factor": vae_config["scaling_factor"], "num_examples": len(dataset), "num_classes": num_classes,
            "id2label": id2label, "latent_channel_choices": list(choices)}  # fmt: skip


def resolve_model_config(args: argparse.Namespace, data: dict) -> tuple[dict, str]:
    """The transformer config (data-derived sizes unless given) and where it came from; checked against the data."""
    if (args.model_config is None) == (args.pretrained_model_name_or_path is None):
        raise ValueError(
            "give exactly one of --model_config (train from scratch) and --pretrained_model_name_or_path (continue), "
            f"got {args.model_config!r} and {args.pretrained_model_name_or_path!r}"
        )
    c, h, w = data["latent_shape"]
    if h != w:
        raise ValueError(f"USiT needs square latents, the data has {h}x{w}")
    wanted = {"in_channels": args.in_channels or c, "sample_size": args.sample_size or h,
              "num_classes": args.num_classes or data["num_classes"]}  # fmt: skip
    if args.pretrained_model_name_or_path is not None:
        try:
            config = dict(USiTTransformer2DModel.load_config(args.pretrained_model_name_or_path))
        except (OSError, ValueError) as error:
            invalid_flag(
                "pretrained_model_name_or_path", args.pretrained_model_name_or_path, f"not loadable ({error})"
            )
        source = args.pretrained_model_name_or_path
        for key in ("in_channels", "sample_size", "num_classes"):
            if getattr(args, key) is not None and getattr(args, key) != config[key]:
                invalid_flag(key, getattr(args, key), f"the pretrained model has {key}={config[key]}")
            wanted[key] = config[key]
        old = config.get("class_dropout_prob", 0.1)
        if args.class_dropout_prob is not None and (args.class_dropout_prob > 0) != (old > 0):
            invalid_flag(
                "class_dropout_prob", args.class_dropout_prob, f"must stay {'> 0' if old > 0 else '0'} (null class)"
            )
    elif args.model_config in USIT_PRESETS:
        config, source = dict(USIT_PRESETS[args.model_config]), f"preset {args.model_config}"
    elif Path(args.model_config).is_file() or (Path(args.model_config) / "config.json").is_file():
        path = Path(args.model_config)
        path = path / "config.json" if path.is_dir() else path
        config, source = json.loads(path.read_text()), str(path)
    else:
        invalid_flag("model_config", args.model_config, f"neither a config.json nor a preset {sorted(USIT_PRESETS)}")
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config.update(wanted)
    if args.class_dropout_prob is not None:
        config["class_dropout_prob"] = args.class_dropout_prob
    if config["in_channels"] != c:
        invalid_flag("in_channels", config["in_channels"], f"must equal the data's latent channels {c}")
    if config["sample_size"] != h:
        invalid_flag("sample_size", config["sample_size"], f"must equal the data's latent size {h}")
    if config["num_classes"] < data["num_classes"]:
        invalid_flag("num_classes", config["num_classes"], f"the data has {data['num_classes']} classes")
    return config, source


def resolve_config(args: argparse.Namespace) -> dict:
    """Validate every flag and the data (no weights are loaded) and return the resolved configuration."""
    for flag in ("max_train_steps", "checkpointing_steps", "validation_steps", "train_batch_size",
                 "gradient_accumulation_steps", "num_channel_samples", "resolution",
                 "validation_num_inference_steps"):  # fmt: skip
        if getattr(args, flag) < 1:
            invalid_flag(flag, getattr(args, flag), "must be >= 1")
    for flag in ("lr_warmup_steps", "ema_warmup_steps", "dataloader_num_workers", "adam_weight_decay"):
        if getattr(args, flag) < 0:
            invalid_flag(flag, getattr(args, flag), "must be >= 0")
    if args.max_grad_norm is not None and args.max_grad_norm <= 0:
        invalid_flag("max_grad_norm", args.max_grad_norm, "must be > 0 (or omitted: no clipping, official)")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        invalid_flag("checkpoints_total_limit", args.checkpoints_total_limit, "must be >= 1 (or omitted: keep all)")
    if not 0 < args.ema_decay < 1:
        invalid_flag("ema_decay", args.ema_decay, "must be in (0, 1)")
    if args.learning_rate <= 0:
        invalid_flag("learning_rate", args.learning_rate, "must be > 0")
    if args.lr_warmup_steps >= args.max_train_steps and args.lr_scheduler != "constant":
        # legal, but with the official 5000-step warm-up a short run silently trains at a fraction of the LR
        peak = args.learning_rate * args.max_train_steps / max(1, args.lr_warmup_steps)
        warnings.warn(
            f"--lr_warmup_steps={args.lr_warmup_steps} >= --max_train_steps={args.max_train_steps}: the learning rate "
            f"peaks at {peak:.3g}, never reaching --learning_rate={args.learning_rate}; for a short run pass e.g. "
            f"--lr_warmup_steps {max(1, args.max_train_steps // 20)}",
            UserWarning,
            stacklevel=2,
        )
    if args.report_to != "none" and importlib.util.find_spec(args.report_to) is None:
        invalid_flag(
            "report_to", args.report_to, f"the {args.report_to} package is not installed (or use --report_to none)"
        )
    data = resolve_data(args)
    model_config, source = resolve_model_config(args, data)
    try:
        with torch.device("meta"):
            model = USiTTransformer2DModel.from_config(model_config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"invalid transformer configuration from {source}: {error}") from error
    c = model.config.in_channels
    if args.no_augmented:
        if args.latent_channel_choices or args.num_channel_samples != 1 or args.always_include_full:
            raise ValueError("--no_augmented trains on the full latent only; drop --latent_channel_choices, "
                             "--num_channel_samples and --always_include_full")  # fmt: skip
        choices = [c]
    else:
        choices = sorted(args.latent_channel_choices or data["latent_channel_choices"])
        if not args.latent_channel_choices and choices == [c]:
            # an unstructured autoencoder: the choices fall back to [c], so "augmented" would be the plain objective
            raise ValueError(
                f"augmented training (the default) needs channel prefixes c' < {c}, but the autoencoder "
                f"{data['vae']!r} has no structured latent space (no latent_channel_choices in its config"
                f"{' or the cache metadata' if data['source'] == 'latent_cache' else ''}; the choices fall back to "
                f"[{c}], the full latent only). Pass --latent_channel_choices C1 C2 ... if it is structured but was "
                "saved without the list, or --no_augmented to train on the full latent"
            )
        check_channel_choices(choices, c, "--latent_channel_choices")
        LatentChannelSampler(choices, args.num_channel_samples)  # validates the list and the sample count
        if args.always_include_full and choices[-1] != c:
            invalid_flag(
                "latent_channel_choices", choices, f"--always_include_full needs the full latent {c} in the list"
            )
    validation_labels = spread_class_labels(data["num_classes"]) if args.validation_class_labels is None else (
        args.validation_class_labels)  # fmt: skip
    bad = [y for y in validation_labels if not 0 <= y < model.config.num_classes]
    if bad:
        invalid_flag("validation_class_labels", bad, f"class ids must be in 0..{model.config.num_classes - 1}")
    validation_channels = args.validation_channels or [c]
    check_channel_choices(validation_channels, c, "--validation_channels")
    if args.validation_guidance_scale != 1 and model.config.class_dropout_prob == 0:
        invalid_flag("validation_guidance_scale", args.validation_guidance_scale, "!= 1 needs class_dropout_prob > 0")
    resume = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    return {
        "args": vars(args),
        "data": {k: v for k, v in data.items() if k != "id2label"},
        "id2label": data["id2label"],
        "model": {
            "source": source,
            "config": dict(model.config),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "augmented": not args.no_augmented,
        "latent_channel_choices": choices,
        "validation": {"class_labels": validation_labels, "channels": sorted(validation_channels)},
        "resume_from": None if resume is None else str(resume),
    }


def validate(args, accelerator, model, ema, vae, config, step) -> None:
    """Sample a grid from the EMA weights (one row per validation c'); saved and logged by the main process."""
    if accelerator.is_main_process:
        id2label = {int(k): v for k, v in config["id2label"].items()} if config["id2label"] else None
        grid = ema_sample_grid(
            model, ema, vae, config["validation"]["class_labels"], config["validation"]["channels"],
            id2label=id2label, seed=args.seed, guidance_scale=args.validation_guidance_scale,
            num_inference_steps=args.validation_num_inference_steps, solver=args.validation_solver,
        )  # fmt: skip
        folder = Path(args.output_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        grid.save(folder / f"step-{step:07d}.png")
        log_images_to_trackers(accelerator, {"samples": grid}, step)
    accelerator.wait_for_everyone()


def main(args: argparse.Namespace) -> dict:
    config = resolve_config(args)  # on every process (`datasets` locks its cache while building it)
    if args.dry_run:
        print(json.dumps(config, indent=2, default=str))
        return config
    output_dir = Path(args.output_dir)
    accelerator = make_accelerator(
        output_dir, args.mixed_precision, args.report_to, args.logging_dir, args.gradient_accumulation_steps, args.seed
    )
    if accelerator.distributed_type not in SUPPORTED_DISTRIBUTED:
        raise ValueError(
            f"train_usit.py supports DDP (single- or multi-node, training/configs/ddp.yaml), not "
            f"{accelerator.distributed_type}: its fp32 EMA of replicated parameters is the official recipe and "
            "sharded (FSDP/DeepSpeed) EMA is not implemented; see docs/training.md"
        )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    config["accelerate"] = {"distributed_type": str(accelerator.distributed_type), "mixed_precision":
                            accelerator.mixed_precision, "num_processes": accelerator.num_processes}  # fmt: skip
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "training_config.json").write_text(json.dumps(config, indent=2, default=str))

    # ---- models --------------------------------------------------------------------------------------------
    set_seed(args.seed)  # the same initial weights on every process
    if args.pretrained_model_name_or_path:
        model = USiTTransformer2DModel.from_pretrained(args.pretrained_model_name_or_path)
        model.register_to_config(class_dropout_prob=config["model"]["config"]["class_dropout_prob"])
    else:
        model = USiTTransformer2DModel.from_config(config["model"]["config"])
    model.train()
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    on_the_fly = config["data"]["source"] == "images"
    vae = None
    if on_the_fly or accelerator.is_main_process:  # encoder (on the fly) / decoder (validation grids, pipeline)
        vae = AutoencoderDC15.from_pretrained(config["data"]["vae"]).requires_grad_(False).eval()
        vae.to(accelerator.device)  # fp32, as the official code runs the autoencoder
    sampler = LatentChannelSampler(config["latent_channel_choices"], args.num_channel_samples,
                                   args.always_include_full, seed=args.seed,
                                   process_index=accelerator.process_index)  # fmt: skip
    set_seed(args.seed, device_specific=True)  # t, noise and label dropout differ across processes

    # ---- data ----------------------------------------------------------------------------------------------
    if on_the_fly:
        with accelerator.main_process_first():
            dataset, image_column, _, _ = load_labeled_image_dataset(
                args.dataset_name, args.train_data_dir, args.split, args.cache_dir, args.dataset_config_name,
                args.image_column, args.label_column,
            )  # fmt: skip
        transform = image_transform(args.resolution, random_flip=args.random_flip)  # ADM center crop
        train_dataset = LabeledImageDataset(dataset, transform, image_column, args.label_column, seed=args.seed)
    else:
        train_dataset = LatentCacheDataset(args.latent_cache_dir)
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset, batch_size=args.train_batch_size, shuffle=True, drop_last=True,
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed),  # worker seeds independent of the global RNG
    )  # fmt: skip

    # ---- optimisation --------------------------------------------------------------------------------------
    # official no_wd_keys ("norm.weight", "bias") by substring: biases and the final LayerNorm weight only
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or n == "norm_out.weight"]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or n == "norm_out.weight")]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.adam_weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
    )  # fmt: skip
    # accelerate steps a prepared scheduler once per process and step: scale the step counts accordingly
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)  # fmt: skip
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, lr_scheduler
    )
    unwrapped = accelerator.unwrap_model(model)
    # EMA after prepare: DDP has broadcast the main process's weights (official: EMA 0.9999, warmup 2000)
    ema = ExponentialWarmupEMAModel(unwrapped.parameters(), decay=args.ema_decay, warmup_steps=args.ema_warmup_steps,
                                    model_cls=USiTTransformer2DModel, model_config=unwrapped.config)  # fmt: skip
    ema.to(accelerator.device)

    # ---- checkpoints: transformer + EMA save_pretrained folders, accelerate state, per-process c' sampler ----
    sampler_states: list[torch.Tensor] = []

    def extra_save(folder):
        save_process_states(folder, "latent_channel_sampler", sampler_states)
        ema.save_pretrained(str(Path(folder) / "transformer_ema"))

    def extra_load(folder):
        state = load_process_state(folder, "latent_channel_sampler", accelerator.process_index)
        if state is not None:
            sampler.load_state_dict({"generator_state": state})
        loaded = ExponentialWarmupEMAModel.from_pretrained(str(Path(folder) / "transformer_ema"),
                                                           model_cls=USiTTransformer2DModel)  # fmt: skip
        ema.load_state_dict(loaded.state_dict())
        ema.to(accelerator.device)

    register_pretrained_hooks(accelerator, {"transformer": model}, extra_save=extra_save, extra_load=extra_load)

    def checkpoint(step, epoch, batch_in_epoch):
        sampler_states[:] = gather_process_states(accelerator, sampler.generator.get_state())
        save_checkpoint(accelerator, output_dir, step, args.checkpoints_total_limit,
                        metadata={"epoch": epoch, "batch_in_epoch": batch_in_epoch})  # fmt: skip

    global_step, epoch, skip_batches = 0, 0, 0
    if config["resume_from"] is not None:
        accelerator.load_state(config["resume_from"])
        meta = read_checkpoint_metadata(config["resume_from"])
        global_step, epoch, skip_batches = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        accelerator.print(f"Resumed from {Path(config['resume_from']).name}")
    if accelerator.is_main_process and args.report_to != "none":
        flat = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in vars(args).items()}
        accelerator.init_trackers("train_usit", config=flat)

    # ---- training loop -------------------------------------------------------------------------------------
    logger.info(f"{config['model']['source']}: {config['model']['parameters'] / 1e6:.2f}M parameters, data "
                f"{config['data']['source']} ({config['data']['num_examples']} examples), c' choices "
                f"{config['latent_channel_choices']}", main_process_only=True)  # fmt: skip
    progress = tqdm(total=args.max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process)
    micro_step, step_loss = 0, 0.0
    while global_step < args.max_train_steps:
        if hasattr(train_dataset, "set_epoch"):
            train_dataset.set_epoch(epoch)
        train_dataloader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_dataloader, skip_batches) if skip_batches else train_dataloader
        loader.set_epoch(epoch)
        batch_in_epoch = skip_batches
        for batch in loader:
            batch_in_epoch += 1
            if micro_step % args.gradient_accumulation_steps == 0:
                channels = sampler()  # paper Eq. 2: the prefixes c' of this optimisation step
            micro_step += 1
            labels = batch["labels"]  # (B,)
            if on_the_fly:
                with torch.no_grad():
                    latents = encode_to_diffusion_space(vae, batch["pixel_values"])  # (B, C, h, w), scaled
            else:
                latents = batch["latents"]  # (B, C, h, w), cached already scaled
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss, logs = flow_matching_loss(model, latents, labels, channels)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += loss.detach() / args.gradient_accumulation_steps
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            ema.step(unwrapped.parameters())
            progress.update(1)
            logs = {k: v.item() for k, v in logs.items()}  # this process, last micro-batch, per prefix
            logs.update(loss=accelerator.reduce(step_loss, reduction="mean").item(), ema_decay=ema.cur_decay_value,
                        lr=lr_scheduler.get_last_lr()[0], channels=float(np.mean(channels)))  # fmt: skip
            step_loss = 0.0
            progress.set_postfix(loss=f"{logs['loss']:.4f}", c=channels)
            accelerator.log(logs, step=global_step)
            done = global_step >= args.max_train_steps
            if global_step % args.checkpointing_steps == 0 or done:
                checkpoint(global_step, epoch, batch_in_epoch)
            if config["validation"]["class_labels"] and (global_step % args.validation_steps == 0 or done):
                validate(args, accelerator, unwrapped, ema, vae, config, global_step)
            if done:
                break
        if batch_in_epoch == 0:
            raise ValueError("the training data yielded no batch: fewer examples than --train_batch_size x processes")
        epoch, skip_batches = epoch + 1, 0
    progress.close()

    # ---- final pipeline (EMA transformer), model card, Hub ---------------------------------------------------
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped.save_pretrained(output_dir / "transformer")
        ema_model = USiTTransformer2DModel.from_config(unwrapped.config)
        ema.copy_to(ema_model.parameters())
        id2label = {int(k): v for k, v in config["id2label"].items()} if config["id2label"] else None
        repo_id, final = args.hub_model_id or output_dir.resolve().name, output_dir / "pipeline"
        mode = (f"augmented diffusion training (paper Eq. 2), c' in {config['latent_channel_choices']}, "
                f"{args.num_channel_samples} per step{', always with the full latent' * args.always_include_full}"
                if config["augmented"] else "the plain full-latent objective (--no_augmented baseline)")  # fmt: skip
        save_pipeline(
            final, ema_model.eval(), vae, id2label, model_name=repo_id.split("/")[-1],
            repo_id=repo_id if args.push_to_hub else str(final),
            description="Class-conditional image generation with a USiT trained by `dc_ae_hf`.",
            source=f"trained with `training/train_usit.py` for {global_step} steps", provenance=(
                f"{global_step} steps on {config['data']['source']} ({config['data']['num_examples']} examples), "
                f"batch {args.train_batch_size} x {accelerator.num_processes} processes x "
                f"{args.gradient_accumulation_steps} accumulation, SiT flow matching with {mode}; AdamW lr "
                f"{args.learning_rate}, betas ({args.adam_beta1}, {args.adam_beta2}), weight decay "
                f"{args.adam_weight_decay}; EMA {args.ema_decay} (warmup {args.ema_warmup_steps}), which the "
                "transformer here holds. All settings: training_config.json of the run."
            ),
            guidance_scale=args.validation_guidance_scale, solver="dopri5", num_inference_steps=250,
        )  # fmt: skip
    push_failure = None
    if accelerator.is_main_process and args.push_to_hub:
        try:
            push_folder_to_hub(final, repo_id)
            logger.info(f"pushed {final} to {repo_id}")
        except HubPushError as error:  # one line naming the repo and the complete local folder, then exit 1
            push_failure = error
    accelerator.end_training()
    if push_failure is not None:
        raise SystemExit(f"error: {push_failure}")
    return config


if __name__ == "__main__":
    main(parse_args())
