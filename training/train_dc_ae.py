"""Train or fine-tune a DC-AE 1.5 autoencoder (`AutoencoderDC15`) with the structured latent space (paper Eq. 1).

    accelerate launch --quiet training/train_dc_ae.py --model_config dc-ae-1.5-f32c128 --train_data_dir DIR \
        --phase 1 --resolution 256 --output_dir runs/phase1 [--use_ema] [--mixed_precision bf16]

Every optimisation step draws c' from `--latent_channel_choices` (`LatentChannelSampler`), encodes the batch once and
decodes each sampled prefix; L1 + LPIPS (+ hinge GAN in phase 3) are averaged over the prefixes with equal weight.
Phases, data, checkpoints, multi-GPU/multi-node commands and the evaluation protocol: docs/training.md. Re-running
the same command resumes from the newest finished checkpoint in `--output_dir`. The outputs are `<output_dir>/vae`,
`<output_dir>/vae_ema` (with `--use_ema`) and `<output_dir>/discriminator` (with the GAN), each a `save_pretrained`
folder.
"""

from __future__ import annotations

import argparse
import json
import os

from dc_ae_hf.choices import NORM_TYPES, PHASES
from dc_ae_hf.presets import AUTOENCODER_PRESETS
from dc_ae_hf.training.arguments import (
    add_channel_arguments,
    add_image_data_arguments,
    add_optimization_arguments,
    add_run_arguments,
    check_before_heavy_imports,
    check_shared_arguments,
    from_flags,
    make_parser,
)

SCRIPT = "train_dc_ae"
DEFAULT_PHASE3_GAN_WEIGHT = 0.1  # not published for DC-AE; a common fixed weight without adaptive balancing
DISC_BETAS = (0.5, 0.9)  # the usual GAN discriminator Adam betas (taming-transformers)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = make_parser(__doc__.split("\n")[0])
    g = p.add_argument_group("model")
    g.add_argument(
        "--model_config", help=f"from scratch: a config.json path or a preset {sorted(AUTOENCODER_PRESETS)}"
    )
    g.add_argument("--pretrained_model_name_or_path", help="fine-tune: a save_pretrained folder or Hub id")
    g.add_argument("--phase", type=int, default=1, choices=sorted(PHASES), help="DC-AE phase (docs/training.md)")
    g.add_argument("--latent_adaptation_stages", type=int, default=1, help="phase 2: stages trained per side")
    g.add_argument("--refinement_stages", type=int, default=1, help="phase 3: decoder stages trained with its head")
    g.add_argument(
        "--freeze_encoder",
        action="store_true",
        help="train only the decoder's share of the phase (Fig. 3 fair protocol: decoder fine-tuned per c')",
    )
    g.add_argument("--gradient_checkpointing", action="store_true")
    add_channel_arguments(p, "structured latent space (paper Eq. 1)", "default: the model's")
    g = add_image_data_arguments(p, resolution=256)
    g.set_defaults(train_batch_size=8)
    g.add_argument("--validation_split", help="validation split (default: hold out images of the training split)")
    g.add_argument("--streaming", action="store_true")
    g.add_argument("--random_crop", action="store_true", help="random crop (default: ADM center crop)")
    g = p.add_argument_group("loss")
    g.add_argument("--l1_weight", type=float, default=1.0)
    g.add_argument("--lpips_weight", type=float, default=1.0)
    g.add_argument("--lpips_net", default="vgg", choices=["vgg", "alex", "squeeze"])
    g.add_argument("--gan_weight", type=float, help=f"default {DEFAULT_PHASE3_GAN_WEIGHT} in phase 3, else 0")
    g.add_argument("--disc_start_step", type=int, default=0, help="first step with the GAN loss (0-based)")
    g.add_argument("--disc_learning_rate", type=float, help="default: --learning_rate")
    g.add_argument("--disc_base_channels", type=int, default=64)
    g.add_argument("--disc_num_layers", type=int, default=3)
    g.add_argument("--disc_norm_type", default="group_norm", choices=NORM_TYPES)
    g = add_optimization_arguments(
        p,
        learning_rate=1e-4,
        betas=(0.9, 0.999),
        lr_scheduler="constant",
        lr_warmup_steps=0,
        max_grad_norm=1.0,
        max_train_steps=10_000,
    )
    g.add_argument("--use_ema", action="store_true")
    g = add_run_arguments(p, output_dir="dc-ae-model", checkpointing_steps=500, every=500)
    g.add_argument("--num_validation_images", type=int, default=8, help="0 disables validation")
    g.add_argument("--validation_channels", type=int, nargs="+", help="default: up to 8 of the model's choices")
    return p.parse_args(argv)


if __name__ == "__main__":  # the flags first: --help, argument errors and bad values answer before the heavy imports
    check_before_heavy_imports(check_shared_arguments, parse_args())  # (run_script below does it again, in a ms)

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, set_seed

from dc_ae_hf.checks import check_channel_prefixes, check_int, check_number, invalid
from dc_ae_hf.data.images import load_train_and_validation_datasets
from dc_ae_hf.metrics.autoencoder import evaluate_autoencoder, format_markdown_table
from dc_ae_hf.metrics.lpips import load_lpips, lpips_backbone_checkpoint_path
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.discriminator import PatchDiscriminator
from dc_ae_hf.training.autoencoder import (
    build_autoencoder,
    check_image_folder,
    discriminator_step,
    freeze_frozen_norm_statistics,
    phase_trainable_modules,
    phase_trainable_parameters,
    reconstruct_prefixes,
    resolve_autoencoder_config,
    stage_indices,
    subsample_channels,
)
from dc_ae_hf.training.checkpoints import resolve_resume_checkpoint
from dc_ae_hf.training.ema import make_emas
from dc_ae_hf.training.export import save_trained_autoencoders
from dc_ae_hf.training.losses import generator_adversarial_loss, reconstruction_loss
from dc_ae_hf.training.optimization import OptimizerSettings, make_adamw, make_lr_scheduler
from dc_ae_hf.training.randomness import LatentChannelSampler
from dc_ae_hf.training.run import RunSettings, TrainingRun, check_output_dir, run_script
from dc_ae_hf.visualization import log_images_to_trackers, prefix_reconstruction_grid

logger = get_logger(__name__)


# What a resume must not change (the model, the objective, the data order): each setting is made of these keys of
# the resolved configuration (`resolve_config`; "a.b" is config["a"]["b"]), stored with every checkpoint.
RESUME_SETTINGS = {
    "model": "model.config",
    "trainable_modules": "trainable_modules",
    "objective": ("latent_channel_choices", "args.num_channel_samples", "args.always_include_full"),
    "loss": ("loss_weights", "args.lpips_net", "args.disc_start_step"),
    "ema": "ema_decays",
    "data": ("args.dataset_name", "args.dataset_config_name", "args.train_data_dir", "args.split", "args.streaming"),
    "augmentation": ("args.resolution", "args.random_crop", "args.random_flip", "args.num_validation_images"),
    "batch": ("args.train_batch_size", "args.gradient_accumulation_steps"),
    "seed": "args.seed",
}


def resolve_config(args: argparse.Namespace) -> dict:
    """Validate every flag and the inputs (without loading weights or training state; nothing is written) and return
    the resolved configuration."""
    check_shared_arguments(args)
    for flag in ("l1_weight", "lpips_weight", "gan_weight"):
        check_number(f"--{flag}", getattr(args, flag), minimum=0, optional=True)
    check_int("--disc_start_step", args.disc_start_step, minimum=0)
    check_int("--num_validation_images", args.num_validation_images, minimum=0)
    check_output_dir(args.output_dir, SCRIPT, "vae")
    gan_weight = args.gan_weight if args.gan_weight is not None else DEFAULT_PHASE3_GAN_WEIGHT * (args.phase == 3)
    if args.l1_weight == 0 and args.lpips_weight == 0:
        raise ValueError("--l1_weight and --lpips_weight are both 0: there is no reconstruction loss")
    if args.fsdp and gan_weight > 0:  # the discriminator's step is written for DDP (models/discriminator.py)
        raise invalid(
            "--gan_weight", gan_weight, "the GAN loss (phase 3) needs DDP, not --fsdp: train phase 3 with DDP"
        )
    if (args.dataset_name is None) == (args.train_data_dir is None):
        raise ValueError(
            "missing or ambiguous data: give exactly one of --dataset_name (a Hub dataset) and --train_data_dir "
            f"(an imagefolder), got dataset_name={args.dataset_name!r} and train_data_dir={args.train_data_dir!r}"
        )
    if args.train_data_dir is not None:
        check_image_folder("--train_data_dir", args.train_data_dir)
    vae, source = resolve_autoencoder_config(
        args.model_config, args.pretrained_model_name_or_path, args.latent_channel_choices, args.resolution
    )
    choices, latent_channels = list(vae.latent_channel_choices), vae.config.latent_channels
    stages = stage_indices(vae)
    if args.phase == 2 and not 1 <= args.latent_adaptation_stages <= min(map(len, stages.values())):
        raise invalid(
            "--latent_adaptation_stages", args.latent_adaptation_stages, f"1..{min(map(len, stages.values()))}"
        )
    if args.phase == 3 and not 1 <= args.refinement_stages <= len(stages["decoder"]):
        raise invalid("--refinement_stages", args.refinement_stages, f"1..{len(stages['decoder'])} (decoder stages)")
    resume = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if args.phase in (2, 3) and args.pretrained_model_name_or_path is None and resume is None:
        # phases 2 and 3 train a few stages and freeze the rest: from random weights the frozen rest stays random
        raise invalid(
            "--phase",
            args.phase,
            f"phase {args.phase} ({PHASES[args.phase]}) keeps the rest of the autoencoder frozen, so it needs trained "
            "weights: give --pretrained_model_name_or_path (e.g. the vae/ folder of the previous phase's run) or "
            "--resume_from_checkpoint, not --model_config (random weights)",
        )
    validation_channels = args.validation_channels or subsample_channels(choices, 8)
    check_channel_prefixes("--validation_channels", validation_channels, latent_channels)
    for c in validation_channels:  # the model's rule: with latent shortcuts (DC-AE 1.0) only the full latent decodes
        vae.check_prefix(c, "--validation_channels")
    if gan_weight > 0:
        disc = PatchDiscriminator(base_channels=args.disc_base_channels, num_layers=args.disc_num_layers)
        if disc.output_size(args.resolution) < 1:
            raise invalid("--disc_num_layers", args.disc_num_layers, f"too deep for --resolution {args.resolution}")
    if args.lpips_weight > 0 and not os.path.exists(lpips_backbone_checkpoint_path(args.lpips_net)):
        load_lpips(args.lpips_net)  # downloads the perceptual weights when it can; else one clear error, now
    phase = (args.phase, args.latent_adaptation_stages, args.refinement_stages, args.freeze_encoder)
    return {
        "args": vars(args),
        "model": {
            "source": source,
            "config": dict(vae.config),
            "spatial_compression_ratio": vae.spatial_compression_ratio,
        },
        "latent_channel_choices": choices,
        "validation_channels": sorted(validation_channels),
        "loss_weights": {"l1": args.l1_weight, "lpips": args.lpips_weight, "gan": gan_weight},
        "phase": args.phase,
        "phase_description": PHASES[args.phase],
        "trainable_modules": phase_trainable_modules(vae, *phase),
        "trainable_parameters": sum(p.numel() for p in phase_trainable_parameters(vae, *phase).values()),
        "total_parameters": sum(p.numel() for p in vae.parameters()),
        "resume_from": None if resume is None else str(resume),
        "ema_decays": args.ema_decays if args.use_ema else None,  # the EMAs kept (--use_ema), the first exported
    }


def image_loaders(args: argparse.Namespace) -> tuple:
    """The loaders of the training images (shuffled unless streamed, seeded) and of the held-out validation images
    (None without them)."""
    train_dataset, validation_dataset = load_train_and_validation_datasets(
        args.dataset_name,
        args.train_data_dir,
        args.split,
        args.validation_split,
        args.num_validation_images,
        args.resolution,
        args.random_crop,
        args.random_flip,
        args.image_column,
        args.streaming,
        args.cache_dir,
        args.seed,
    )
    loader_generator = torch.Generator().manual_seed(args.seed)  # worker seeds independent of the global RNG
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        shuffle=not args.streaming,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
        generator=loader_generator,
    )
    validation_loader = None
    if validation_dataset is not None:
        validation_loader = torch.utils.data.DataLoader(validation_dataset, batch_size=args.train_batch_size)
    return train_dataloader, validation_loader


def validate(args, run, vae, ema, loader, channels, lpips_model, step):
    """PSNR/SSIM/LPIPS per prefix on the validation images and the Fig. 3 grid; logged to the trackers."""
    accelerator = run.accelerator
    unwrapped = accelerator.unwrap_model(vae)
    if ema is not None:  # validate the EMA weights
        ema.store(unwrapped.parameters())
        ema.copy_to(unwrapped.parameters())
    results = grid = None
    # sharded: every rank must take part in the forward passes; otherwise the main process only.
    if accelerator.is_main_process or run.sharded or accelerator.distributed_type == DistributedType.FSDP:
        results = evaluate_autoencoder(unwrapped, loader, channels, lpips_model=lpips_model, device=accelerator.device)
        images = torch.cat([batch["pixel_values"] for _, batch in zip(range(4), loader)])[:4]  # the grid's rows
        grid = prefix_reconstruction_grid(unwrapped, images, channels)
    if ema is not None:
        ema.restore(unwrapped.parameters())
    freeze_frozen_norm_statistics(unwrapped)
    if accelerator.is_main_process:
        accelerator.log({f"val/{m}_c{c}": v for c, row in results.items() for m, v in row.items()}, step=step)
        (run.output_dir / "validation").mkdir(parents=True, exist_ok=True)
        grid.save(run.output_dir / "validation" / f"prefix_grid-{step}.png")
        log_images_to_trackers(accelerator, {"val/prefix_grid": grid}, step)
        logger.info(f"step {step} validation:\n{format_markdown_table(results)}")
    accelerator.wait_for_everyone()
    return results


def main(args: argparse.Namespace) -> dict:
    config = resolve_config(args)
    if args.dry_run:
        print(json.dumps(config, indent=2, default=str))
        return config
    run = TrainingRun(from_flags(RunSettings, args), config, SCRIPT, RESUME_SETTINGS)
    accelerator = run.accelerator
    accelerate_sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    gan_weight = config["loss_weights"]["gan"]
    if accelerate_sharded and gan_weight > 0:  # phase 3: the discriminator's step is DDP's
        raise ValueError(f"the GAN loss (--gan_weight {gan_weight}) needs DDP, not {accelerator.distributed_type}")
    if accelerator.distributed_type == DistributedType.FSDP and args.use_ema:
        raise ValueError(
            "--use_ema is not supported with accelerate's FSDP config; use --fsdp (training/configs/fsdp2.yaml: "
            "sharded EMAs), DDP or DeepSpeed ZeRO-2"
        )

    # ---- models: the autoencoder (only this phase's parameters train), LPIPS, the discriminator, the EMA ---------
    set_seed(args.seed)
    vae, trainable = build_autoencoder(
        config["model"]["config"],
        config["trainable_modules"],
        args.pretrained_model_name_or_path,
        args.latent_channel_choices,
        args.gradient_checkpointing,
        args.compile_backend if args.compile else None,
    )
    # --fsdp: the encoder and decoder are units too, since the narrower prefixes are decoded outside `forward`
    vae = run.shard(vae, extra_units=("encoder", "decoder"))
    trainable = {name: p for name, p in vae.named_parameters() if name in trainable}  # sharded ones with --fsdp
    lpips_model = load_lpips(args.lpips_net, accelerator.device) if args.lpips_weight > 0 else None
    disc = None
    if gan_weight > 0:
        disc = PatchDiscriminator(
            base_channels=args.disc_base_channels, num_layers=args.disc_num_layers, norm_type=args.disc_norm_type
        ).train()
    # with --use_ema: one per --ema_decay, the first validated and exported as vae_ema/
    emas = make_emas(vae, AutoencoderDC15, "vae_ema", config["ema_decays"] or [], accelerator.device)
    ema = emas.get("vae_ema")
    choices = config["latent_channel_choices"]
    sampler = LatentChannelSampler(
        choices, args.num_channel_samples, args.always_include_full, args.seed, accelerator.process_index
    )

    # ---- data: training images and held-out validation images ----------------------------------------------------
    with accelerator.main_process_first():  # the main process builds the `datasets` cache once
        train_dataloader, validation_loader = image_loaders(args)

    # ---- optimisation ------------------------------------------------------------------------------------------
    optimization = from_flags(OptimizerSettings, args)
    optimizer = make_adamw(list(trainable.values()), optimization)
    lr_scheduler = make_lr_scheduler(optimization, optimizer, accelerator.num_processes)
    vae, optimizer, train_dataloader, lr_scheduler = run.prepare(vae, optimizer, train_dataloader, lr_scheduler)
    models = {"vae": vae}
    if disc is not None:
        disc_optimizer = make_adamw(disc.parameters(), optimization, lr=args.disc_learning_rate, betas=DISC_BETAS)
        disc_scheduler = make_lr_scheduler(optimization, disc_optimizer, accelerator.num_processes)
        disc, disc_optimizer, disc_scheduler = accelerator.prepare(disc, disc_optimizer, disc_scheduler)
        models["discriminator"] = disc
    unwrapped_vae = accelerator.unwrap_model(vae)
    run.track(models=models, emas=emas)
    run.resume()
    run.init_trackers(SCRIPT)
    logger.info(f"phase {args.phase}: {PHASES[args.phase]}; trainable modules {config['trainable_modules']}")

    # ---- training loop -----------------------------------------------------------------------------------------
    validation_results = None
    for step, micro_batches in run.steps(train_dataloader):
        channels = sampler(step)  # paper Eq. 1: the prefixes c' of this optimisation step
        gan_active = disc is not None and step > args.disc_start_step
        for batch in micro_batches:
            images = batch["pixel_values"]  # (B, 3, R, R) in [-1, 1]
            with run.accumulate(*models.values()):
                # autoencoder: every prefix's reconstruction against the same images (+ the fixed discriminator)
                with accelerator.autocast():
                    reconstructions = reconstruct_prefixes(
                        vae, images, channels, decoder=unwrapped_vae, decode_repeats=run.sharded
                    )
                    losses = reconstruction_loss(
                        reconstructions, images, lpips_model, args.l1_weight, args.lpips_weight
                    )
                    loss = losses["loss"]
                    if gan_active:
                        losses["g_loss"] = generator_adversarial_loss(reconstructions, accelerator.unwrap_model(disc))
                        loss = loss + gan_weight * losses["g_loss"]
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(vae.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if gan_active:  # discriminator: the real images and every prefix's reconstruction
                    losses["d_loss"] = discriminator_step(
                        accelerator, disc, disc_optimizer, disc_scheduler, images, reconstructions, args.max_grad_norm
                    )
            run.record(losses)
        for each in emas.values():
            each.step(unwrapped_vae.parameters())
        run.log(step, lr=lr_scheduler.get_last_lr()[0], c=np.mean(channels))
        run.save_checkpoint_if_due(step)
        if validation_loader is not None and run.due(step, args.validation_steps):
            validation_results = validate(
                args, run, vae, ema, validation_loader, config["validation_channels"], lpips_model, step
            )

    # ---- save: vae, vae_ema, discriminator folders with their model cards ------------------------------------------
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(vae) if accelerate_sharded else None  # collective for sharded models
    trained, emas = run.full_models(vae, emas)  # --fsdp: gathered on the main process
    folders = []
    if accelerator.is_main_process:
        disc_model = accelerator.unwrap_model(disc) if disc is not None else None
        folders = save_trained_autoencoders(
            run.settings, trained, state_dict, emas, disc_model, config, validation_results
        )
    run.finish(push_folder=folders[-1] if folders else None, repo_id=run.repo_id)  # the EMA weights with --use_ema
    return config


if __name__ == "__main__":
    run_script(main, parse_args)
