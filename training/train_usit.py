"""Train a USiT (U-ViT + SiT flow matching) on DC-AE latents with augmented diffusion training (paper Eq. 2).

    accelerate launch --quiet training/train_usit.py --latent_cache_dir latents/in1k-512-f64c128 \
        --model_config usit-h --output_dir runs/usit-h --mixed_precision bf16 --max_train_steps 500000

Each optimisation step draws channel prefixes c' (`LatentChannelSampler`, default choices: the autoencoder's) and
averages the flow-matching loss of one pass per prefix on `latents[:, :c']` (`flow_matching_loss`, the official
recipe); `--channel_sampling per_sample` instead gives every sample its own c' and trains them all in one pass (the
mask form of Eq. 2, the cost of plain training); `--no_augmented` trains on the full latent only. Data: a latent cache from `training/cache_latents.py` (its autoencoder's weights
must be `--vae`'s) or images encoded on the fly (`--train_data_dir`/`--dataset_name` + `--vae`). Re-running the same
command resumes from the newest finished checkpoint in `--output_dir`. Outputs: `<output_dir>/pipeline` (vae + EMA
transformer + scheduler + id2label + model card, loads with `DCAE15Pipeline.from_pretrained`) and
`<output_dir>/transformer` (raw weights). Recipe, multi-GPU/multi-node commands and the differences to the official
trainer: docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import warnings

from dc_ae_hf.choices import SOLVERS
from dc_ae_hf.presets import USIT_PRESETS
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

SCRIPT = "train_usit"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = make_parser(__doc__.split("\n")[0])
    g = p.add_argument_group("model")
    g.add_argument("--model_config", help=f"from scratch: a preset {sorted(USIT_PRESETS)} or a config.json")
    g.add_argument("--pretrained_model_name_or_path", help="continue from a USiT save_pretrained folder or Hub id")
    g.add_argument("--sample_size", type=int, help="default: the data's latent size")
    g.add_argument("--in_channels", type=int, help="default: the data's latent channels")
    g.add_argument("--num_classes", type=int, help="default: the data's number of classes")
    g.add_argument("--class_dropout_prob", type=float, help="label dropout to the null class (default: model config)")
    g.add_argument("--gradient_checkpointing", action="store_true")
    g = add_channel_arguments(p, "augmented diffusion training (paper Eq. 2)", "default: the autoencoder's")
    g.add_argument(
        "--channel_sampling",
        choices=["per_pass", "per_sample"],
        default="per_pass",
        help="per_pass: one pass per drawn c' on the whole batch (official); per_sample: a c' per sample, one pass",
    )
    g.add_argument("--no_augmented", action="store_true", help="baseline: the full latent only")
    g = add_image_data_arguments(p, resolution=256)
    g.add_argument("--latent_cache_dir", help="latent cache from training/cache_latents.py (the default input)")
    g.add_argument("--label_column", default="label")
    g.add_argument("--vae", help="autoencoder (default with a cache: the one that made it)")
    g = add_optimization_arguments(
        p,
        title="optimisation (defaults: the official USiT recipe)",
        learning_rate=1e-4,
        betas=(0.99, 0.99),
        lr_scheduler="constant_with_warmup",
        lr_warmup_steps=5000,
        max_grad_norm=None,
        max_train_steps=500_000,
    )
    g.add_argument("--ema_warmup_steps", type=int, default=2000, help="decay * (1 - exp(-step / this)); 0: off")
    g.add_argument("--pipeline_ema_decay", type=float, help="the EMA in the exported pipeline (default: the first)")
    g = add_run_arguments(p, output_dir="usit-model", checkpointing_steps=5000, every=5000)
    g.add_argument("--validation_class_labels", type=int, nargs="*", help="default: 8 classes spread out; none: off")
    g.add_argument("--validation_channels", type=int, nargs="+", help="one grid row per c' (default: full latent)")
    g.add_argument("--validation_solver", default="euler", choices=SOLVERS)
    g.add_argument("--validation_num_inference_steps", type=int, default=16)
    g.add_argument("--validation_guidance_scale", type=float, default=1.0)
    return p.parse_args(argv)


if __name__ == "__main__":  # the flags first: --help, argument errors and bad values answer before the heavy imports
    check_before_heavy_imports(check_shared_arguments, parse_args())  # (run_script below does it again, in a ms)

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, set_seed

from dc_ae_hf.checks import check_channel_prefixes, check_int, invalid
from dc_ae_hf.latents import encode_to_diffusion_space
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.training.checkpoints import resolve_resume_checkpoint
from dc_ae_hf.training.diffusion import (
    DiffusionDataSettings,
    build_transformer,
    diffusion_dataset,
    ema_sample_grid,
    official_parameter_groups,
    resolve_diffusion_data,
    resolve_transformer_config,
    spread_class_labels,
)
from dc_ae_hf.training.ema import make_emas
from dc_ae_hf.training.export import save_trained_usit
from dc_ae_hf.training.flow_matching import flow_matching_loss
from dc_ae_hf.training.optimization import OptimizerSettings, make_adamw, make_lr_scheduler
from dc_ae_hf.training.randomness import LatentChannelSampler, diffusion_channel_choices
from dc_ae_hf.training.run import RunSettings, TrainingRun, check_output_dir, run_script
from dc_ae_hf.visualization import log_images_to_trackers

logger = get_logger(__name__)
SUPPORTED_DISTRIBUTED = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


# What a resume must not change (the model, the objective, the data order): each setting is made of these keys of
# the resolved configuration (`resolve_config`; "a.b" is config["a"]["b"]), stored with every checkpoint.
RESUME_SETTINGS = {
    "model": "model.config",
    "objective": ("augmented", "latent_channel_choices", "args.num_channel_samples"),
    "channel_sampling": "args.channel_sampling",
    "always_include_full": "args.always_include_full",
    "data": ("data.source", "data.latent_cache_dir", "args.train_data_dir", "args.dataset_name", "args.split"),
    "vae": "vae_identity",
    "resolution_and_flip": "image_transform",
    "batch": ("args.train_batch_size", "args.gradient_accumulation_steps"),
    "seed": "args.seed",
    "ema": ("args.ema_decays", "args.ema_warmup_steps"),
}


def resolve_config(args: argparse.Namespace) -> dict:
    """Validate every flag and the data (no training state is loaded, nothing is written) and return the resolved
    configuration."""
    check_shared_arguments(args)
    check_int("--validation_num_inference_steps", args.validation_num_inference_steps, minimum=1)
    check_int("--ema_warmup_steps", args.ema_warmup_steps, minimum=0)
    check_output_dir(args.output_dir, SCRIPT, "transformer")
    if args.pipeline_ema_decay is not None and args.pipeline_ema_decay not in args.ema_decays:
        raise invalid("--pipeline_ema_decay", args.pipeline_ema_decay, f"must be one of --ema_decay {args.ema_decays}")
    data = resolve_diffusion_data(from_flags(DiffusionDataSettings, args))
    for warning in data.pop("warnings"):
        warnings.warn(warning, UserWarning, stacklevel=2)
    model_config, source = resolve_transformer_config(
        data,
        args.model_config,
        args.pretrained_model_name_or_path,
        args.in_channels,
        args.sample_size,
        args.num_classes,
        args.class_dropout_prob,
    )
    try:
        with torch.device("meta"):
            model = USiTTransformer2DModel.from_config(model_config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"invalid transformer configuration from {source}: {error}") from error
    c = model.config.in_channels
    choices = diffusion_channel_choices(
        c,
        args.latent_channel_choices,
        data["latent_channel_choices"],
        augmented=not args.no_augmented,
        num_samples=args.num_channel_samples,
        always_include_full=args.always_include_full,
        channel_sampling=args.channel_sampling,
        autoencoder=data["vae"],
        from_latent_cache=data["source"] == "latent_cache",
    )
    labels = args.validation_class_labels
    labels = spread_class_labels(data["num_classes"]) if labels is None else labels
    bad = [y for y in labels if not 0 <= y < model.config.num_classes]
    if bad:
        raise invalid("--validation_class_labels", bad, f"class ids must be in 0..{model.config.num_classes - 1}")
    validation_channels = check_channel_prefixes("--validation_channels", args.validation_channels or [c], c)
    untrained = sorted(set(validation_channels) - set(choices))
    if labels and untrained:  # refused now, not by the pipeline at the first validation, hours into the run
        raise invalid(
            "--validation_channels",
            validation_channels,
            f"{untrained} are not among the prefixes c' this run trains "
            f"{choices}: a grid there would show an untrained model",
        )
    if args.validation_guidance_scale != 1 and model.config.class_dropout_prob == 0:
        raise invalid("--validation_guidance_scale", args.validation_guidance_scale, "needs class_dropout_prob > 0")
    resume = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    return {
        "args": vars(args),
        "data": {k: v for k, v in data.items() if k != "id2label"},
        "id2label": data["id2label"],
        "model": {"source": source, "config": dict(model.config), "parameters": model.num_parameters()},
        "augmented": not args.no_augmented,
        "latent_channel_choices": choices,
        "validation": {"class_labels": labels, "channels": sorted(validation_channels)},
        "resume_from": None if resume is None else str(resume),
        # the autoencoder as a resume must keep it: its weights (a latent cache records their hash) or its name
        "vae_identity": data.get("vae_weights_hash", data["vae"]),
        # images encoded on the fly: their crop size and flips (a latent cache fixed its own)
        "image_transform": [args.resolution, args.random_flip] if data["source"] == "images" else None,
    }


def validate(args, run, model, ema, vae, config, step) -> None:
    """Sample a grid from the EMA weights (one row per validation c'); saved and logged by the main process."""
    model, emas = run.full_models(model, {"ema": ema})  # sharded: gathered (every process takes part)
    if run.accelerator.is_main_process:
        ema = emas["ema"]
        id2label = {int(k): v for k, v in config["id2label"].items()} if config["id2label"] else None
        grid = ema_sample_grid(
            model,
            ema,
            vae,
            config["validation"]["class_labels"],
            config["validation"]["channels"],
            id2label=id2label,
            seed=args.seed,
            guidance_scale=args.validation_guidance_scale,
            num_inference_steps=args.validation_num_inference_steps,
            solver=args.validation_solver,
        )
        folder = run.output_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        grid.save(folder / f"step-{step:07d}.png")
        log_images_to_trackers(run.accelerator, {"samples": grid}, step)
    run.accelerator.wait_for_everyone()


def main(args: argparse.Namespace) -> dict:
    config = resolve_config(args)  # on every process (`datasets` locks its cache while building it)
    if args.dry_run:
        print(json.dumps(config, indent=2, default=str))
        return config
    run = TrainingRun(from_flags(RunSettings, args), config, SCRIPT, RESUME_SETTINGS)
    accelerator = run.accelerator
    if accelerator.distributed_type not in SUPPORTED_DISTRIBUTED:
        raise ValueError(
            f"train_usit.py runs DDP (training/configs/ddp.yaml) or its own FSDP2 (--fsdp, "
            f"training/configs/fsdp2.yaml), not accelerate's {accelerator.distributed_type}: see docs/training.md"
        )

    # ---- models: the transformer (same initial weights on every process), the frozen autoencoder ---------------
    set_seed(args.seed)
    compile_backend = args.compile_backend if args.compile else None
    model = build_transformer(
        config["model"]["config"], args.pretrained_model_name_or_path, args.gradient_checkpointing, compile_backend
    )
    model = run.shard(model)  # --fsdp: sharded per block; otherwise DDP in prepare
    on_the_fly = config["data"]["source"] == "images"
    vae = None
    if on_the_fly or accelerator.is_main_process:  # encoder (on the fly) / decoder (validation grids, pipeline)
        vae = AutoencoderDC15.from_pretrained(config["data"]["vae"]).requires_grad_(False).eval()
        vae.to(accelerator.device)  # fp32, as the official code runs the autoencoder
    sampler = LatentChannelSampler(
        config["latent_channel_choices"],
        args.num_channel_samples,
        args.always_include_full,
        args.seed,
        accelerator.process_index,
    )

    # ---- data: the latent cache, or images encoded on the fly ----------------------------------------------------
    with accelerator.main_process_first():  # the main process builds the `datasets` cache once
        train_dataset = diffusion_dataset(from_flags(DiffusionDataSettings, args), args.seed)
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )

    # ---- optimisation (official: AdamW, constant LR after warm-up, no clipping, EMA 0.9999 with warm-up) -------
    optimization = from_flags(OptimizerSettings, args)
    optimizer = make_adamw(official_parameter_groups(model, args.adam_weight_decay), optimization)
    lr_scheduler = make_lr_scheduler(optimization, optimizer, accelerator.num_processes)
    model, optimizer, train_dataloader, lr_scheduler = run.prepare(model, optimizer, train_dataloader, lr_scheduler)
    unwrapped = accelerator.unwrap_model(model)
    # after prepare: DDP has broadcast the main process's weights; one EMA per --ema_decay (sharded with --fsdp)
    emas = make_emas(
        unwrapped,
        USiTTransformer2DModel,
        "transformer_ema",
        args.ema_decays,
        accelerator.device,
        args.ema_warmup_steps,
    )
    ema = next(iter(emas.values()))  # the first decay: validation grids
    run.track(models={"transformer": model}, emas=emas)
    run.resume()
    run.init_trackers(SCRIPT)
    logger.info(
        f"{config['model']['source']}: {config['model']['parameters'] / 1e6:.2f}M parameters, data "
        f"{config['data']['source']} ({config['data']['num_examples']} examples), c' {config['latent_channel_choices']}"
    )

    # ---- training loop ---------------------------------------------------------------------------------------
    per_sample = args.channel_sampling == "per_sample"
    for step, micro_batches in run.steps(train_dataloader):
        channels = None if per_sample else sampler(step)  # paper Eq. 2: this step's prefixes c', one pass each
        for micro_batch, batch in enumerate(micro_batches):
            labels = batch["labels"]  # (B,)
            if per_sample:  # a prefix per sample, all in one pass: int64 (B,)
                channels = sampler.per_sample(step, labels.shape[0], micro_batch)
            if on_the_fly:
                with torch.no_grad():
                    latents = encode_to_diffusion_space(vae, batch["pixel_values"])  # (B, C, h, w), scaled
            else:
                latents = batch["latents"]  # (B, C, h, w), cached already scaled
            with run.accumulate(model):
                with accelerator.autocast():
                    loss, logs = flow_matching_loss(model, latents, labels, channels)
                run.record(logs)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        for each in emas.values():
            each.step(unwrapped.parameters())
        run.log(
            step,
            lr=lr_scheduler.get_last_lr()[0],
            ema_decay=ema.cur_decay_value,
            c=float(np.mean(channels.tolist() if per_sample else channels)),
        )
        run.save_checkpoint_if_due(step)
        if config["validation"]["class_labels"] and run.due(step, args.validation_steps):
            validate(args, run, unwrapped, ema, vae, config, step)

    # ---- save: the raw and the EMA transformers, the pipeline (EMA) with its model card ------------------------
    accelerator.wait_for_everyone()
    trained, emas = run.full_models(model, emas)  # sharded: gathered on the main process
    if accelerator.is_main_process:
        exported = args.ema_decay if args.pipeline_ema_decay is None else args.pipeline_ema_decay
        save_trained_usit(run.settings, trained, emas, vae, config, exported, run.step, accelerator.num_processes)
    run.finish(push_folder=run.output_dir / "pipeline", repo_id=run.repo_id)
    return config


if __name__ == "__main__":
    run_script(main, parse_args)
