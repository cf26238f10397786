"""Generation metrics of a class-conditional `DCAE15Pipeline`: FID, Inception Score, precision/recall, FD-DINOv2.

    accelerate launch training/evaluate_usit.py --pipeline runs/usit-h/pipeline --num_samples 50000 \
        --sample_dir runs/usit-h/samples-50k --reference imagenet_train_512.npz \
        --inception_weights_path weights-inception-2015-12-05-6726825d.pth --output_json eval.json --output_md eval.md

Sample i gets class label i of the label list (`--class_sampling random`: the official `torch.randint(0, K, (N,))`
with a CPU generator seeded `--class_seed`; `balanced`: i % K) and starting noise from its own generator seeded by
(`--seed`, i), so a sample does not depend on the number of processes or on which run made it (fixed-step solvers;
the adaptive dopri5 error norm spans the batch). Process r makes the samples i with i % num_processes == r and saves
them as `<sample_dir>/<i:06d>.png` (official uint8 quantisation); a rerun skips the PNGs that exist. The main process
then scores samples 0..N-1 with torch-fidelity against `--reference` (an image folder, or an `.npz` of `mu`/`sigma`
from `training/make_reference_statistics.py`; precision/recall need images). Protocol and differences to the
official evaluation: docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image
from torch.utils.data import Dataset

import dc_ae_hf  # noqa: F401  (registers the pipeline components with diffusers' loader)
from dc_ae_hf.data.images import load_image
from dc_ae_hf.latents import decode_from_diffusion_space
from dc_ae_hf.metrics.generation import compute_generation_metrics
from dc_ae_hf.metrics.image import to_uint8
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from dc_ae_hf.sampling import SOLVERS

METRICS = ("fid", "is", "pr")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pipeline", required=True, help="DCAE15Pipeline folder or Hub id")
    p.add_argument("--sample_dir", required=True, help="where the PNG samples go (reused by reruns)")
    p.add_argument("--num_samples", type=int, default=50_000, help="official: 50,000")
    p.add_argument("--class_sampling", default="random", choices=["random", "balanced"], help="official: random")
    p.add_argument("--class_seed", type=int, default=0, help="seed of the random class labels (official: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    p.add_argument("--batch_size", type=int, default=32, help="samples per pipeline call and process (official 32)")
    p.add_argument("--guidance_scale", type=float, default=1.0, help="1: no guidance; official CFG runs use 1.5")
    p.add_argument("--guidance_interval", type=float, nargs=2, help="flow-time interval with guidance (default: all)")
    p.add_argument("--solver", default="dopri5", choices=SOLVERS, help="official: dopri5")
    p.add_argument("--num_inference_steps", type=int, default=250, help="euler/heun2 steps (dopri5 is adaptive)")
    p.add_argument("--latent_channels", type=int, help="sample the first c' latent channels (default: all)")
    p.add_argument("--allow_tf32", action="store_true", help="TF32 matmuls on Ampere+ GPUs (the official eval did)")
    p.add_argument("--reference", help="reference image folder or .npz statistics (required for FID, P/R, FD)")
    p.add_argument("--metrics", nargs="+", choices=METRICS, help="default: fid and is, plus pr for an image folder")
    p.add_argument("--inception_weights_path", help="torch-fidelity Inception weights (needed offline)")
    p.add_argument("--dinov2", help="DINOv2 model (Hub id or folder) for FD-DINOv2, e.g. facebook/dinov2-large")
    p.add_argument(
        "--fid_feature_layer",
        default="2048",
        choices=["64", "192", "768", "2048"],
        help="Inception layer for FID: 2048 (pool3) is the standard; smaller ones only for quick checks",
    )
    p.add_argument("--metrics_batch_size", type=int, default=64)
    p.add_argument("--save_cpu_ram", action="store_true", help="torch-fidelity: no data loader worker processes")
    p.add_argument("--output_json", required=True)
    p.add_argument("--output_md", help="also write a markdown table")
    return p.parse_args(argv)


def class_labels(num_samples: int, num_classes: int, class_sampling: str, class_seed: int = 0) -> list[int]:
    """The label of every sample: official random draws (``sample_class.py``) or a balanced cycle i % K."""
    if class_sampling == "random":
        generator = torch.Generator().manual_seed(class_seed)
        return torch.randint(0, num_classes, (num_samples,), generator=generator).tolist()
    if class_sampling == "balanced":
        return [i % num_classes for i in range(num_samples)]
    raise ValueError(f"--class_sampling={class_sampling!r} is not allowed: choose random or balanced")


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` that depends only on (seed, index)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class PNGSamples(Dataset):
    """Samples 0..N-1 of a sample folder as uint8 (3, H, W) tensors (the format torch-fidelity reads)."""

    def __init__(self, folder: str | os.PathLike, num_samples: int) -> None:
        self.paths = [Path(folder) / f"{i:06d}.png" for i in range(num_samples)]
        missing = [p.name for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} samples are missing in {str(folder)!r}, e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        array = np.asarray(load_image(self.paths[index]))
        return torch.from_numpy(array.copy()).permute(2, 0, 1)  # (3, H, W) uint8


def resolve_metrics(args: argparse.Namespace) -> list[str]:
    is_stats = args.reference is not None and str(args.reference).endswith(".npz")
    metrics = args.metrics or (["fid", "is"] + ([] if is_stats or args.reference is None else ["pr"]))
    if args.reference is None and args.metrics is None:
        metrics = ["is"]
    if args.reference is not None and not (
        Path(args.reference).is_dir() or (is_stats and Path(args.reference).is_file())
    ):
        raise ValueError(f"--reference={args.reference!r} is neither an image folder nor an existing .npz file")
    if args.reference is None and ({"fid", "pr"} & set(metrics) or args.dinov2):
        raise ValueError(f"--metrics {metrics} (and --dinov2) need a --reference image folder or .npz statistics")
    if is_stats and "pr" in metrics:
        raise ValueError("--metrics pr (precision/recall) needs reference images; --reference is an .npz file")
    return metrics


def main(args: argparse.Namespace) -> dict:
    for flag in ("num_samples", "batch_size", "num_inference_steps", "metrics_batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag}={getattr(args, flag)!r} is not allowed: must be >= 1")
    metrics = resolve_metrics(args)
    if args.allow_tf32:  # entry-script global flag, as the official evaluation ran
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    accelerator = Accelerator()
    pipe = DCAE15Pipeline.from_pretrained(args.pipeline).to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    num_classes = pipe.transformer.config.num_classes
    labels = class_labels(args.num_samples, num_classes, args.class_sampling, args.class_seed)
    settings = {k: getattr(args, k) for k in ("pipeline", "num_samples", "class_sampling", "class_seed", "seed",
                                             "guidance_scale", "guidance_interval", "solver", "latent_channels")}  # fmt: skip
    settings["num_inference_steps"] = None if args.solver == "dopri5" else args.num_inference_steps
    sample_dir = Path(args.sample_dir)
    settings_file = sample_dir / "generation_settings.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        raise ValueError(
            f"--sample_dir={str(sample_dir)!r} holds samples made with other settings ({settings_file.name}: "
            f"{settings_file.read_text()}); use a new --sample_dir"
        )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        sample_dir.mkdir(parents=True, exist_ok=True)
        settings_file.write_text(json.dumps(settings, indent=2))
    accelerator.wait_for_everyone()

    # ---- generation: this process's missing samples ---------------------------------------------------------
    start = time.perf_counter()
    mine = [i for i in range(accelerator.process_index, args.num_samples, accelerator.num_processes)
            if not (sample_dir / f"{i:06d}.png").is_file()]  # fmt: skip
    for offset in range(0, len(mine), args.batch_size):
        batch = mine[offset : offset + args.batch_size]
        generators = [torch.Generator(accelerator.device).manual_seed(sample_seed(args.seed, i)) for i in batch]
        latents = pipe(
            [labels[i] for i in batch],
            guidance_scale=args.guidance_scale,
            generator=generators,
            guidance_interval=args.guidance_interval,
            num_inference_steps=args.num_inference_steps,
            latent_channels=args.latent_channels,
            solver=args.solver,
            output_type="latent",
        ).images
        with torch.no_grad():
            images = decode_from_diffusion_space(pipe.vae, latents.to(pipe.vae.dtype))  # (B, 3, H, W)
        for i, image in zip(batch, to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()):  # official quantisation
            tmp = sample_dir / f"{i:06d}.png.tmp"
            Image.fromarray(image).save(tmp, format="PNG")
            os.replace(tmp, sample_dir / f"{i:06d}.png")  # atomic: a PNG is complete or absent
    generation_seconds = time.perf_counter() - start
    accelerator.print(f"generated {len(mine)} samples on process 0 in {generation_seconds:.1f} s")
    accelerator.wait_for_everyone()

    # ---- metrics (main process) -------------------------------------------------------------------------------
    result = None
    if accelerator.is_main_process:
        start = time.perf_counter()
        values = compute_generation_metrics(
            PNGSamples(sample_dir, args.num_samples), args.reference, fid="fid" in metrics,
            inception_score="is" in metrics, precision_recall="pr" in metrics,
            inception_weights_path=args.inception_weights_path, dinov2=args.dinov2,
            batch_size=args.metrics_batch_size, device=accelerator.device, save_cpu_ram=args.save_cpu_ram,
            feature_layer_fid=args.fid_feature_layer,
        )  # fmt: skip
        result = {"metrics": values, "settings": settings, "reference": args.reference, "dinov2": args.dinov2,
                  "fid_feature_layer": args.fid_feature_layer,
                  "metrics_seconds": round(time.perf_counter() - start, 2),
                  "class_counts": np.bincount(labels, minlength=num_classes).tolist()}  # fmt: skip
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(result, indent=2))
        table = "| metric | value |\n|---|---|\n" + "".join(f"| {k} | {v:.4f} |\n" for k, v in values.items())
        note = (f"\n{args.num_samples} samples from `{args.pipeline}` ({args.class_sampling} classes, solver "
                f"{args.solver}, guidance {args.guidance_scale}) against `{args.reference}`.\n")  # fmt: skip
        if args.output_md:
            Path(args.output_md).write_text(table + note)
        print(table + note)
    accelerator.end_training()
    return result


if __name__ == "__main__":
    main(parse_args())
