"""Train or fine-tune a DC-AE 1.5 autoencoder (`AutoencoderDC15`) with the structured latent space (paper Eq. 1).

    accelerate launch training/train_dc_ae.py --model_config dc-ae-1.5-f32c128 --train_data_dir DIR \
        --phase 1 --resolution 256 --output_dir runs/phase1 [--use_ema] [--mixed_precision bf16]

Every step draws c' from `--latent_channel_choices` (`LatentChannelSampler`), encodes the batch once and decodes each
sampled prefix; L1 + LPIPS (+ hinge GAN in phase 3) are averaged over the prefixes with equal weight. Phases, data,
checkpoints, multi-GPU/multi-node commands and the evaluation protocol: docs/training.md. Re-running the same
command resumes from the newest finished checkpoint in `--output_dir`. The outputs are `<output_dir>/vae`,
`<output_dir>/vae_ema` (with `--use_ema`) and `<output_dir>/discriminator` (with the GAN), each a
`save_pretrained` folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from dc_ae_hf.autoencoder_training import (
    PHASES,
    freeze_frozen_norm_statistics,
    load_autoencoder_config,
    phase_trainable_modules,
    phase_trainable_parameters,
    reconstruct_prefixes,
    stage_indices,
    subsample_channels,
    write_trained_autoencoder_card,
)
from dc_ae_hf.data.images import collate_images, load_train_and_validation_datasets
from dc_ae_hf.hub import HubPushError, push_folder_to_hub
from dc_ae_hf.losses import generator_adversarial_loss, hinge_d_loss, reconstruction_loss
from dc_ae_hf.metrics.autoencoder import evaluate_autoencoder, format_markdown_table
from dc_ae_hf.metrics.lpips import load_lpips
from dc_ae_hf.models.autoencoder_dc15 import AUTOENCODER_PRESETS, AutoencoderDC15
from dc_ae_hf.models.discriminator import NORM_TYPES, PatchDiscriminator
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
from dc_ae_hf.visualization import log_images_to_trackers, prefix_reconstruction_grid

logger = get_logger(__name__)
DEFAULT_PHASE3_GAN_WEIGHT = 0.1  # not published for DC-AE; a common fixed weight without adaptive balancing
DISC_BETAS = (0.5, 0.9)  # the usual GAN discriminator Adam betas (taming-transformers)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_argument_group("model")
    g.add_argument(
        "--model_config", help=f"train from scratch: a config.json path or a preset {sorted(AUTOENCODER_PRESETS)}"
    )
    g.add_argument("--pretrained_model_name_or_path", help="fine-tune: a save_pretrained folder or Hub id")
    g.add_argument("--latent_channel_choices", type=int, nargs="+", help="prefixes c' (default: the model's)")
    g.add_argument("--num_channel_samples", type=int, default=1, help="prefixes drawn per step")
    g.add_argument("--always_include_full", action="store_true", help="always reconstruct from the full latent too")
    g.add_argument("--phase", type=int, default=1, choices=sorted(PHASES), help="DC-AE phase (docs/training.md)")
    g.add_argument("--latent_adaptation_stages", type=int, default=1, help="phase 2: stages trained per side")
    g.add_argument("--refinement_stages", type=int, default=1, help="phase 3: decoder stages trained with its head")
    g.add_argument(
        "--freeze_encoder",
        action="store_true",
        help="train only the decoder's share of the phase (Fig. 3 fair protocol: decoder fine-tuned per c')",
    )
    g.add_argument("--gradient_checkpointing", action="store_true")
    g = p.add_argument_group("data")
    g.add_argument("--dataset_name", help="Hub dataset id")
    g.add_argument("--dataset_config_name")
    g.add_argument("--train_data_dir", help="imagefolder directory")
    g.add_argument("--split", default="train")
    g.add_argument("--validation_split", help="validation split (default: hold out images of the training split)")
    g.add_argument("--image_column", help="default: the dataset's first image column")
    g.add_argument("--streaming", action="store_true")
    g.add_argument("--cache_dir")
    g.add_argument("--resolution", type=int, default=256)
    g.add_argument("--random_crop", action="store_true", help="random crop (default: ADM center crop)")
    g.add_argument("--random_flip", action="store_true")
    g.add_argument("--train_batch_size", type=int, default=8, help="per process")
    g.add_argument("--dataloader_num_workers", type=int, default=0)
    g = p.add_argument_group("loss")
    g.add_argument("--l1_weight", type=float, default=1.0)
    g.add_argument("--lpips_weight", type=float, default=1.0)
    g.add_argument("--lpips_net", default="vgg", choices=["vgg", "alex", "squeeze"])
    g.add_argument("--gan_weight", type=float, help=f"default {DEFAULT_PHASE3_GAN_WEIGHT} in phase 3, else 0")
    g.add_argument("--disc_start_step", type=int, default=0, help="first step with the GAN loss")
    g.add_argument("--disc_learning_rate", type=float, help="default: --learning_rate")
    g.add_argument("--disc_base_channels", type=int, default=64)
    g.add_argument("--disc_num_layers", type=int, default=3)
    g.add_argument("--disc_norm_type", default="group_norm", choices=NORM_TYPES)
    g = p.add_argument_group("optimisation")
    g.add_argument("--learning_rate", type=float, default=1e-4)
    g.add_argument("--adam_beta1", type=float, default=0.9)
    g.add_argument("--adam_beta2", type=float, default=0.999)
    g.add_argument("--adam_weight_decay", type=float, default=0.0)
    g.add_argument("--adam_epsilon", type=float, default=1e-8)
    g.add_argument("--lr_scheduler", default="constant", help="diffusers.optimization.get_scheduler name")
    g.add_argument("--lr_warmup_steps", type=int, default=0)
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="0 disables clipping")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], help="default: the accelerate config")
    g.add_argument("--max_train_steps", type=int, default=10_000)
    g.add_argument("--use_ema", action="store_true")
    g.add_argument("--ema_decay", type=float, default=0.9999)
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("checkpoints, validation, logging")
    g.add_argument("--output_dir", default="dc-ae-model")
    g.add_argument("--checkpointing_steps", type=int, default=500)
    g.add_argument("--checkpoints_total_limit", type=int)
    g.add_argument("--resume_from_checkpoint", help="'latest' (default when omitted), 'none' or a checkpoint folder")
    g.add_argument("--validation_steps", type=int, default=500)
    g.add_argument("--num_validation_images", type=int, default=8, help="0 disables validation")
    g.add_argument("--validation_channels", type=int, nargs="+", help="default: up to 8 of the model's choices")
    g.add_argument("--report_to", default="tensorboard", choices=["tensorboard", "wandb", "none"])
    g.add_argument("--logging_dir", default="logs", help="relative to --output_dir")
    g.add_argument("--push_to_hub", action="store_true")
    g.add_argument("--hub_model_id", help="default: the name of --output_dir")
    g.add_argument("--dry_run", action="store_true", help="print the resolved configuration (JSON) and exit")
    return p.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> dict:
    """Validate every flag (without loading weights or data) and return the resolved configuration."""
    for flag in ("max_train_steps", "checkpointing_steps", "validation_steps", "train_batch_size",
                 "gradient_accumulation_steps", "num_channel_samples", "resolution"):  # fmt: skip
        if getattr(args, flag) < 1:
            invalid_flag(flag, getattr(args, flag), "must be >= 1")
    for flag in ("l1_weight", "lpips_weight", "gan_weight", "disc_start_step", "num_validation_images",
                 "lr_warmup_steps", "max_grad_norm", "dataloader_num_workers"):  # fmt: skip
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            invalid_flag(flag, getattr(args, flag), "must be >= 0")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        invalid_flag("checkpoints_total_limit", args.checkpoints_total_limit, "must be >= 1 (or omitted: keep all)")
    if not 0 < args.ema_decay < 1:
        invalid_flag("ema_decay", args.ema_decay, "must be in (0, 1)")
    if args.learning_rate <= 0:
        invalid_flag("learning_rate", args.learning_rate, "must be > 0")
    gan_weight = args.gan_weight if args.gan_weight is not None else DEFAULT_PHASE3_GAN_WEIGHT * (args.phase == 3)
    if args.l1_weight == 0 and args.lpips_weight == 0:
        raise ValueError("--l1_weight and --lpips_weight are both 0: there is no reconstruction loss")
    if args.report_to != "none" and importlib.util.find_spec(args.report_to) is None:
        invalid_flag(
            "report_to", args.report_to, f"the {args.report_to} package is not installed (or use --report_to none)"
        )
    # Data.
    if (args.dataset_name is None) == (args.train_data_dir is None):
        raise ValueError(
            "missing or ambiguous data: give exactly one of --dataset_name (a Hub dataset) and --train_data_dir "
            f"(an imagefolder), got dataset_name={args.dataset_name!r} and train_data_dir={args.train_data_dir!r}"
        )
    if args.train_data_dir is not None:
        data_dir = Path(args.train_data_dir)
        if not data_dir.is_dir():
            invalid_flag("train_data_dir", args.train_data_dir, "must be an existing imagefolder directory")
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in data_dir.rglob("*")):
            invalid_flag("train_data_dir", args.train_data_dir, f"contains no images ({sorted(IMAGE_SUFFIXES)})")
    # Model: build it on the meta device (no memory, no weights) to check the flags against its structure.
    model_config, source = load_autoencoder_config(args.model_config, args.pretrained_model_name_or_path)
    latent_channels = int(model_config.get("latent_channels", 32))
    if args.latent_channel_choices is not None:
        check_channel_choices(args.latent_channel_choices, latent_channels, "--latent_channel_choices")
        model_config["latent_channel_choices"] = tuple(args.latent_channel_choices)
    try:
        with torch.device("meta"):
            vae = AutoencoderDC15.from_config(model_config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"invalid model configuration from {source} / --latent_channel_choices: {error}") from error
    choices = list(vae.latent_channel_choices)
    f = vae.spatial_compression_ratio
    if args.resolution % f:
        invalid_flag("resolution", args.resolution, f"must be divisible by the model's spatial compression ratio {f}")
    stages = stage_indices(vae)
    if args.phase == 2 and not 1 <= args.latent_adaptation_stages <= min(map(len, stages.values())):
        invalid_flag("latent_adaptation_stages", args.latent_adaptation_stages, f"1..{min(map(len, stages.values()))}")
    if args.phase == 3 and not 1 <= args.refinement_stages <= len(stages["decoder"]):
        invalid_flag("refinement_stages", args.refinement_stages, f"1..{len(stages['decoder'])} (decoder stages)")
    validation_channels = args.validation_channels or subsample_channels(choices, 8)
    check_channel_choices(validation_channels, latent_channels, "--validation_channels")
    if vae.has_latent_shortcuts and validation_channels != [latent_channels]:
        invalid_flag(
            "validation_channels", validation_channels, f"[{latent_channels}] only (model with latent shortcuts)"
        )
    if gan_weight > 0:
        disc = PatchDiscriminator(base_channels=args.disc_base_channels, num_layers=args.disc_num_layers)
        if disc.output_size(args.resolution) < 1:
            invalid_flag("disc_num_layers", args.disc_num_layers, f"too deep for --resolution {args.resolution}")
    resume = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    trainable = phase_trainable_parameters(
        vae, args.phase, args.latent_adaptation_stages, args.refinement_stages, args.freeze_encoder
    )
    return {
        "args": vars(args),
        "model": {"source": source, "config": dict(vae.config), "spatial_compression_ratio": f},
        "latent_channel_choices": choices,
        "validation_channels": sorted(validation_channels),
        "loss_weights": {"l1": args.l1_weight, "lpips": args.lpips_weight, "gan": gan_weight},
        "phase": args.phase,
        "phase_description": PHASES[args.phase],
        "trainable_modules": phase_trainable_modules(
            vae, args.phase, args.latent_adaptation_stages, args.refinement_stages, args.freeze_encoder
        ),
        "trainable_parameters": sum(p.numel() for p in trainable.values()),
        "total_parameters": sum(p.numel() for p in vae.parameters()),
        "resume_from": None if resume is None else str(resume),
    }


def validate(args, accelerator, vae, ema, loader, channels, lpips_model, step):
    """PSNR/SSIM/LPIPS per prefix on the validation images and the Fig. 3 grid; logged to the trackers."""
    unwrapped = accelerator.unwrap_model(vae)
    if ema is not None:  # validate the EMA weights
        ema.store(unwrapped.parameters())
        ema.copy_to(unwrapped.parameters())
    results, grid = None, None
    # FSDP: every rank must take part in the forward passes (parameters are sharded); otherwise the main process only.
    if accelerator.is_main_process or accelerator.distributed_type == DistributedType.FSDP:
        results = evaluate_autoencoder(unwrapped, loader, channels, lpips_model=lpips_model, device=accelerator.device)
        grid_images = []
        for batch in loader:  # the first (up to) 4 validation images are the grid's rows
            grid_images.append(batch["pixel_values"])
            if sum(map(len, grid_images)) >= 4:
                break
        grid = prefix_reconstruction_grid(unwrapped, torch.cat(grid_images)[:4], channels)
    if ema is not None:
        ema.restore(unwrapped.parameters())
    freeze_frozen_norm_statistics(unwrapped)
    if accelerator.is_main_process:
        logs = {f"val/{metric}_c{c}": value for c, row in results.items() for metric, value in row.items()}
        accelerator.log(logs, step=step)
        grid_dir = Path(args.output_dir) / "validation"
        grid_dir.mkdir(parents=True, exist_ok=True)
        grid.save(grid_dir / f"prefix_grid-{step}.png")
        log_images_to_trackers(accelerator, {"val/prefix_grid": grid}, step)
        logger.info(f"step {step} validation:\n{format_markdown_table(results)}")
    accelerator.wait_for_everyone()
    return results


def main(args: argparse.Namespace) -> dict:
    config = resolve_config(args)
    if args.dry_run:
        print(json.dumps(config, indent=2, default=str))
        return config
    output_dir = Path(args.output_dir)
    accelerator = make_accelerator(
        output_dir, args.mixed_precision, args.report_to, args.logging_dir, args.gradient_accumulation_steps, args.seed
    )
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    gan_weight = config["loss_weights"]["gan"]
    if sharded and gan_weight > 0:
        raise ValueError(f"the GAN loss (--gan_weight {gan_weight}) needs DDP, not {accelerator.distributed_type}")
    if accelerator.distributed_type == DistributedType.FSDP and args.use_ema:
        raise ValueError("--use_ema is not supported with FSDP (sharded parameters); use DDP or DeepSpeed ZeRO-2")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "training_config.json").write_text(json.dumps(config, indent=2, default=str))
    set_seed(args.seed)

    # ---- models --------------------------------------------------------------------------------------------
    if args.pretrained_model_name_or_path:
        vae = AutoencoderDC15.from_pretrained(args.pretrained_model_name_or_path)
        if args.latent_channel_choices:  # give the model its (new) structure; saved with its config
            vae.register_to_config(latent_channel_choices=tuple(args.latent_channel_choices))
    else:
        vae = AutoencoderDC15.from_config(config["model"]["config"])
    vae.requires_grad_(False)
    trainable = phase_trainable_parameters(
        vae, args.phase, args.latent_adaptation_stages, args.refinement_stages, args.freeze_encoder
    )
    for parameter in trainable.values():
        parameter.requires_grad_(True)
    if args.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    vae.train()
    freeze_frozen_norm_statistics(vae)
    lpips_model = load_lpips(args.lpips_net, accelerator.device) if args.lpips_weight > 0 else None
    disc = None
    if gan_weight > 0:
        disc = PatchDiscriminator(
            base_channels=args.disc_base_channels, num_layers=args.disc_num_layers, norm_type=args.disc_norm_type
        ).train()
    ema = None
    if args.use_ema:
        ema = EMAModel(vae.parameters(), decay=args.ema_decay, model_cls=AutoencoderDC15, model_config=vae.config)
        ema.to(accelerator.device)
    sampler = LatentChannelSampler(
        config["latent_channel_choices"], args.num_channel_samples, args.always_include_full,
        seed=args.seed, process_index=accelerator.process_index,
    )  # fmt: skip

    # ---- data ----------------------------------------------------------------------------------------------
    with accelerator.main_process_first():  # the main process builds the `datasets` cache once
        train_dataset, validation_dataset = load_train_and_validation_datasets(
            args.dataset_name, args.train_data_dir, args.split, args.validation_split, args.num_validation_images,
            args.resolution, args.random_crop, args.random_flip, args.image_column, args.streaming, args.cache_dir,
            args.seed,
        )  # fmt: skip
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        shuffle=not args.streaming,
        collate_fn=collate_images,
        num_workers=args.dataloader_num_workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),  # worker seeds independent of the global RNG
    )
    validation_loader = None
    if validation_dataset is not None:
        validation_loader = torch.utils.data.DataLoader(
            validation_dataset, batch_size=args.train_batch_size, collate_fn=collate_images,
            generator=torch.Generator().manual_seed(args.seed),  # never touch the global RNG of training
        )  # fmt: skip

    # ---- optimisation --------------------------------------------------------------------------------------
    def adamw(parameters, lr, betas):
        return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=args.adam_weight_decay,
                                 eps=args.adam_epsilon)  # fmt: skip

    def scheduler(optimizer):  # accelerate steps a prepared scheduler once per process
        return get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                             num_training_steps=args.max_train_steps * accelerator.num_processes)  # fmt: skip

    optimizer = adamw(list(trainable.values()), args.learning_rate, (args.adam_beta1, args.adam_beta2))
    lr_scheduler = scheduler(optimizer)
    vae, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        vae, optimizer, train_dataloader, lr_scheduler
    )
    models = [vae]
    if disc is not None:
        disc_optimizer = adamw(disc.parameters(), args.disc_learning_rate or args.learning_rate, DISC_BETAS)
        disc_scheduler = scheduler(disc_optimizer)
        disc, disc_optimizer, disc_scheduler = accelerator.prepare(disc, disc_optimizer, disc_scheduler)
        models.append(disc)
    unwrapped_vae = accelerator.unwrap_model(vae)

    # ---- checkpoints: save_pretrained folders + accelerate state + per-process c' sampler state ---------------
    sampler_states: list[torch.Tensor] = []

    def extra_save(folder):
        save_process_states(folder, "latent_channel_sampler", sampler_states)
        if ema is not None:
            ema.save_pretrained(str(Path(folder) / "vae_ema"))

    def extra_load(folder):
        state = load_process_state(folder, "latent_channel_sampler", accelerator.process_index)
        if state is not None:
            sampler.load_state_dict({"generator_state": state})
        if ema is not None:
            if not (Path(folder) / "vae_ema").is_dir():
                raise ValueError(f"--use_ema is set but {folder} holds no vae_ema/ (it was saved without --use_ema)")
            loaded = EMAModel.from_pretrained(str(Path(folder) / "vae_ema"), model_cls=AutoencoderDC15)
            ema.load_state_dict(loaded.state_dict())
            ema.to(accelerator.device)

    if accelerator.distributed_type == DistributedType.FSDP:  # accelerate writes the sharded model state itself
        accelerator.register_save_state_pre_hook(
            lambda m, w, folder: accelerator.is_main_process and extra_save(folder)
        )
        accelerator.register_load_state_pre_hook(lambda m, folder: extra_load(folder))
    else:
        named = {"vae": vae, **({"discriminator": disc} if disc is not None else {})}
        register_pretrained_hooks(accelerator, named, extra_save=extra_save, extra_load=extra_load)

    def checkpoint(step, epoch, batch_in_epoch):
        sampler_states[:] = gather_process_states(accelerator, sampler.generator.get_state())
        meta = {"epoch": epoch, "batch_in_epoch": batch_in_epoch}
        save_checkpoint(accelerator, output_dir, step, args.checkpoints_total_limit, metadata=meta)

    global_step, epoch, skip_batches = 0, 0, 0
    resume = config["resume_from"]
    if resume is not None:
        accelerator.load_state(resume)
        meta = read_checkpoint_metadata(resume)
        global_step, epoch, skip_batches = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        logger.info(f"Resumed from {Path(resume).name} (step {global_step})", main_process_only=True)
        accelerator.print(f"Resumed from {Path(resume).name}")
    if accelerator.is_main_process and args.report_to != "none":
        flat = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in vars(args).items()}
        accelerator.init_trackers("train_dc_ae", config=flat)

    # ---- training loop -------------------------------------------------------------------------------------
    logger.info(f"phase {args.phase}: {PHASES[args.phase]}; trainable modules {config['trainable_modules']}")
    progress = tqdm(total=args.max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process)
    validation_results = None
    while global_step < args.max_train_steps:
        train_dataset.set_epoch(epoch)
        train_dataloader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_dataloader, skip_batches) if skip_batches else train_dataloader
        loader.set_epoch(epoch)
        batch_in_epoch = skip_batches
        for batch in loader:
            batch_in_epoch += 1
            images = batch["pixel_values"]  # (B, 3, R, R) in [-1, 1]
            channels = sampler()  # paper Eq. 1: c' for this step
            gan_active = disc is not None and global_step >= args.disc_start_step
            with accelerator.accumulate(*models):
                with accelerator.autocast():
                    reconstructions = reconstruct_prefixes(vae, images, channels, decoder=unwrapped_vae)
                    losses = reconstruction_loss(
                        reconstructions, images, lpips_model, args.l1_weight, args.lpips_weight
                    )
                    loss = losses["loss"]
                    if gan_active:
                        losses["g_loss"] = generator_adversarial_loss(reconstructions, accelerator.unwrap_model(disc))
                        loss = loss + gan_weight * losses["g_loss"]
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(vae.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if gan_active:  # discriminator: real and all prefix reconstructions in one forward
                    with accelerator.autocast():
                        fakes = [reconstruction.detach() for reconstruction in reconstructions]
                        logits = disc(torch.cat([images, *fakes]))  # (B + K*B, 1, h, w)
                        real, fake = logits.split([images.shape[0], logits.shape[0] - images.shape[0]])
                        losses["d_loss"] = hinge_d_loss(real, fake)
                    accelerator.backward(losses["d_loss"])
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(disc.parameters(), args.max_grad_norm)
                    disc_optimizer.step()
                    disc_scheduler.step()
                    disc_optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            if ema is not None:
                ema.step(unwrapped_vae.parameters())
            progress.update(1)
            logs = {k: v.detach().item() for k, v in losses.items()}
            logs.update(lr=lr_scheduler.get_last_lr()[0], channels=float(np.mean(channels)))
            progress.set_postfix(loss=f"{logs['loss']:.4f}", c=channels)
            accelerator.log(logs, step=global_step)
            done = global_step >= args.max_train_steps
            if global_step % args.checkpointing_steps == 0 or done:
                checkpoint(global_step, epoch, batch_in_epoch)
            if validation_loader is not None and (global_step % args.validation_steps == 0 or done):
                validation_results = validate(
                    args, accelerator, vae, ema, validation_loader, config["validation_channels"], lpips_model,
                    global_step,
                )  # fmt: skip
            if done:
                break
        if batch_in_epoch == 0:
            raise ValueError("the training data yielded no batch: fewer images than --train_batch_size x processes")
        epoch, skip_batches = epoch + 1, 0
    progress.close()

    # ---- final models, model card, Hub ----------------------------------------------------------------------
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(vae) if sharded else None  # collective for sharded models
    if accelerator.is_main_process:
        final = AutoencoderDC15.from_config(unwrapped_vae.config) if sharded else unwrapped_vae
        if sharded:
            final.load_state_dict(state_dict)
        final.save_pretrained(output_dir / "vae")
        folders = [output_dir / "vae"]
        if ema is not None:
            ema_model = AutoencoderDC15.from_config(unwrapped_vae.config)
            ema.copy_to(ema_model.parameters())
            ema_model.save_pretrained(output_dir / "vae_ema")
            folders.append(output_dir / "vae_ema")
        if disc is not None:
            accelerator.unwrap_model(disc).save_pretrained(output_dir / "discriminator")
        repo_id = args.hub_model_id or output_dir.resolve().name
        table = format_markdown_table(validation_results) if validation_results else ""
        if validation_results:
            (output_dir / "validation_results.json").write_text(json.dumps(validation_results, indent=2))
        for folder in folders:
            name = repo_id.split("/")[-1] + (" (EMA weights)" if folder.name == "vae_ema" else "")
            load_id = repo_id if args.push_to_hub else str(folder)
            write_trained_autoencoder_card(
                folder, final, name, load_id, config, table, base_model=args.pretrained_model_name_or_path
            )
    push_failure = None
    if accelerator.is_main_process and args.push_to_hub:
        try:
            push_folder_to_hub(folders[-1], repo_id)  # the EMA weights when trained with --use_ema
            logger.info(f"pushed {folders[-1]} to {repo_id}")
        except HubPushError as error:  # one line naming the repo and the complete local folder, then exit 1
            push_failure = error
    accelerator.end_training()
    if push_failure is not None:
        raise SystemExit(f"error: {push_failure}")
    return config


if __name__ == "__main__":
    main(parse_args())
