"""Generation metrics of a class-conditional `DCAE15Pipeline`: FID, Inception Score, precision/recall, FD-DINOv2.

    accelerate launch training/evaluate_usit.py --pipeline runs/usit-h/pipeline --num_samples 50000 \
        --sample_dir runs/usit-h/samples-50k --reference imagenet_train_512.npz \
        --inception_weights_path weights-inception-2015-12-05-6726825d.pth --output_json eval.json --output_markdown eval.md

Sample i gets class label i of the label list (`--class_sampling random`: the official `torch.randint(0, K, (N,))`
with a CPU generator seeded `--class_seed`; `balanced`: i % K) and starting noise from its own generator seeded by
(`--seed`, i), so a sample does not depend on the number of processes or on which run made it (fixed-step solvers;
the adaptive dopri5 error norm spans the batch). Process r makes the samples i with i % num_processes == r and saves
them as `<sample_dir>/<i:06d>.png` (official uint8 quantisation); a rerun skips the PNGs that exist. The main process
then scores samples 0..N-1 with torch-fidelity against `--reference` (an image folder, or an `.npz` of `mu`/`sigma`
from `training/make_reference_statistics.py`; precision/recall need images). Protocol and differences to the
official evaluation: docs/training.md.

Every input is checked before the first sample is generated (the pipeline, the sampling flags, the metric weights,
the reference, the output folders); from the command line a bad one ends the run with one `error: --flag=...` line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from dc_ae_hf.checks import (
    check_guidance_interval,
    check_int,
    check_number,
    exit_with_error,
    invalid,
    is_statistics_file,
)
from dc_ae_hf.choices import INCEPTION_FEATURE_LAYERS, SOLVERS
from dc_ae_hf.training.arguments import check_before_heavy_imports

METRICS = ("fid", "is", "pr")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    # --help prints every flag's default; the required flags have none (SUPPRESS: no "(default: None)").
    p.add_argument("--pipeline", required=True, default=argparse.SUPPRESS, help="DCAE15Pipeline folder or Hub id")
    p.add_argument(
        "--sample_dir", required=True, default=argparse.SUPPRESS, help="where the PNG samples go (reused by reruns)"
    )
    p.add_argument("--num_samples", type=int, default=50_000, help="number of samples (official: 50,000)")
    p.add_argument(
        "--class_sampling",
        default="random",
        choices=["random", "balanced"],
        help="class labels: official random draws, or a balanced cycle i %% K (official: random)",
    )
    p.add_argument("--class_seed", type=int, default=0, help="seed of the random class labels (official: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    p.add_argument("--batch_size", type=int, default=32, help="samples per pipeline call and process (official: 32)")
    p.add_argument("--guidance_scale", type=float, default=1.0, help="1: no guidance; official CFG runs use 1.5")
    p.add_argument(
        "--guidance_interval", type=float, nargs=2, help="flow-time interval with guidance (None: everywhere)"
    )
    p.add_argument("--solver", default="dopri5", choices=SOLVERS, help="ODE solver (official: dopri5)")
    p.add_argument("--num_inference_steps", type=int, default=250, help="euler/heun2 steps (dopri5 is adaptive)")
    p.add_argument("--latent_channels", type=int, help="sample the first c' latent channels (None: all)")
    p.add_argument("--allow_tf32", action="store_true", help="TF32 matmuls on Ampere+ GPUs (the official eval did)")
    p.add_argument("--reference", help="reference image folder or .npz statistics (required for FID, P/R, FD)")
    p.add_argument(
        "--metrics", nargs="+", choices=METRICS, help="None: fid and is, plus pr for a reference image folder"
    )
    p.add_argument(
        "--inception_weights_path", help="torch-fidelity Inception weights (None: $TORCH_HOME, downloaded if missing)"
    )
    p.add_argument("--dinov2", help="DINOv2 model (Hub id or folder) for FD-DINOv2, e.g. facebook/dinov2-large")
    p.add_argument(
        "--fid_feature_layer",
        default="2048",
        choices=INCEPTION_FEATURE_LAYERS,
        help="Inception layer for FID: 2048 (pool3) is the standard; smaller ones only for quick checks",
    )
    p.add_argument("--metrics_batch_size", type=int, default=64, help="images per Inception / DINOv2 batch")
    p.add_argument("--save_cpu_ram", action="store_true", help="torch-fidelity: no data loader worker processes")
    p.add_argument("--output_json", required=True, default=argparse.SUPPRESS, help="the results file to write")
    p.add_argument(
        "--output_markdown",
        "--output_md",
        dest="output_markdown",
        help="also write a markdown table (None: only print it)",
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


ISC_SPLITS = 10  # Inception Score splits (official: 10); fewer samples than splits give NaN
PRC_NEIGHBORHOOD = 3  # k of the k-NN precision/recall (official: 3)


class InputError(ValueError):
    """A bad command-line input, found before sampling; the message names the flag (and the path)."""


def _one_line(error: BaseException) -> str:
    """An exception's message on one line (KeyError's without its quotes)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split()) or type(error).__name__


def _checked(flag: str, check, *args, **kwargs):
    """``check(*args, **kwargs)``, with its ValueError/TypeError/OSError turned into an InputError naming ``flag``."""
    try:
        return check(*args, **kwargs)
    except (ValueError, TypeError, OSError) as error:
        message = _one_line(error)
        raise InputError(message if message.startswith(flag) else f"{flag}: {message}") from None


def resolve_metrics(args: argparse.Namespace) -> list[str]:
    """The metrics to compute: ``--metrics``, or fid and is (and pr for a reference image folder)."""
    is_stats = args.reference is not None and is_statistics_file(args.reference)
    metrics = args.metrics or (["fid", "is"] + ([] if is_stats or args.reference is None else ["pr"]))
    if args.reference is None and args.metrics is None:
        metrics = ["is"]
    if args.reference is not None and not (
        Path(args.reference).is_dir() or (is_stats and Path(args.reference).is_file())
    ):
        raise InputError(f"--reference={args.reference!r} is neither an image folder nor an existing .npz file")
    if args.reference is None and ({"fid", "pr"} & set(metrics) or args.dinov2):
        raise InputError(f"--metrics {metrics} (and --dinov2) need a --reference image folder or .npz statistics")
    if is_stats and "pr" in metrics:
        raise InputError("--metrics pr (precision/recall) needs reference images; --reference is an .npz file")
    return metrics


def _check_flags(args: argparse.Namespace, metrics: list[str]) -> None:
    """The numbers, seeds and interval of the command line."""
    for flag in ("batch_size", "num_inference_steps", "metrics_batch_size"):
        _checked(f"--{flag}", check_int, f"--{flag}", getattr(args, flag), minimum=1)
    for flag in ("seed", "class_seed"):  # SeedSequence takes non-negative ints
        _checked(f"--{flag}", check_int, f"--{flag}", getattr(args, flag), minimum=0)
    needs = {"is": (ISC_SPLITS, f"the Inception Score splits the samples into {ISC_SPLITS} groups")}
    needs["pr"] = (PRC_NEIGHBORHOOD + 1, f"precision/recall take each sample's {PRC_NEIGHBORHOOD} nearest neighbours")
    needs["fid"] = (2, "FID needs a covariance")
    minimum, why = max((needs[m] for m in metrics), default=(1, ""))
    if args.dinov2 is not None and minimum < 2:
        minimum, why = 2, "FD-DINOv2 needs a covariance"
    _checked("--num_samples", check_int, "--num_samples", args.num_samples, minimum=1)
    if args.num_samples < minimum:
        raise invalid("--num_samples", args.num_samples, f"{why}, so it needs >= {minimum}", InputError)
    _checked("--guidance_scale", check_number, "--guidance_scale", args.guidance_scale)
    _checked("--guidance_interval", check_guidance_interval, args.guidance_interval)
    _checked("--latent_channels", check_int, "--latent_channels", args.latent_channels, minimum=1, optional=True)


def check_flags_without_model(args: argparse.Namespace) -> list[str]:
    """`resolve_metrics` and `_check_flags`: every check that needs neither the pipeline nor a file's contents.
    Returns the metrics to compute."""
    metrics = resolve_metrics(args)
    _check_flags(args, metrics)
    return metrics


if __name__ == "__main__":  # the flags first: --help and argument errors (and bad values) answer before the imports
    check_before_heavy_imports(check_flags_without_model, parse_args())  # (cli below: again, in a millisecond)

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

import dc_ae_hf  # noqa: F401  (registers the pipeline components with diffusers' loader)
from dc_ae_hf.data.images import load_image
from dc_ae_hf.latents import decode_from_diffusion_space
from dc_ae_hf.metrics.dinov2 import Dinov2Model, load_dinov2
from dc_ae_hf.metrics.frechet import load_statistics
from dc_ae_hf.metrics.image import to_uint8
from dc_ae_hf.metrics.image_sets import as_dataset
from dc_ae_hf.metrics.inception import compute_generation_metrics, resolve_inception_weights
from dc_ae_hf.output_folders import claim_output_folder, mark_output_folder
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from dc_ae_hf.training.run import free_destroyed_process_groups

# What --sample_dir's generation_settings.json records; a rerun with other values is refused.
SETTINGS_KEYS = ("pipeline", "num_samples", "class_sampling", "class_seed", "seed", "guidance_scale")
SETTINGS_KEYS += ("guidance_interval", "solver", "latent_channels")


def class_labels(num_samples: int, num_classes: int, class_sampling: str, class_seed: int = 0) -> list[int]:
    """The label of every sample: official random draws (``sample_class.py``) or a balanced cycle i % K."""
    if class_sampling == "random":
        generator = torch.Generator().manual_seed(class_seed)
        return torch.randint(0, num_classes, (num_samples,), generator=generator).tolist()
    if class_sampling == "balanced":
        return [i % num_classes for i in range(num_samples)]
    raise invalid("--class_sampling", class_sampling, "choose random or balanced", InputError)


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


def _check_reference(args: argparse.Namespace, metrics: list[str]) -> None:
    """An image folder with enough images, or a statistics file with the arrays the metrics need."""
    if args.reference is None or not ({"fid", "pr"} & set(metrics) or args.dinov2):
        return  # the Inception Score alone does not read it
    where = f"--reference={args.reference!r}"
    if not is_statistics_file(args.reference):
        images = _checked("--reference", as_dataset, args.reference, "--reference")
        if len(images) < 2:
            raise InputError(f"{where} holds {len(images)} image; FID and precision/recall need at least 2")
        if "pr" in metrics and len(images) <= PRC_NEIGHBORHOOD:
            raise InputError(f"{where} holds {len(images)} images; precision/recall need > {PRC_NEIGHBORHOOD}")
        return
    if "fid" in metrics:
        try:
            mu, _ = load_statistics(args.reference)
        except (OSError, ValueError, KeyError) as error:
            raise InputError(f"{where} is not a usable FID statistics file: {_one_line(error)}") from None
        if mu.shape[0] != int(args.fid_feature_layer):
            raise InputError(
                f"{where} holds {mu.shape[0]}-d statistics, but --fid_feature_layer {args.fid_feature_layer} gives "
                f"{args.fid_feature_layer}-d features: use the layer the file was made with "
                "(make_reference_statistics.py --fid_feature_layer)"
            )
    if args.dinov2 is not None:
        try:
            load_statistics(args.reference, prefix="dinov2")
        except (OSError, ValueError, KeyError) as error:
            raise InputError(f"{where} is not usable for FD-DINOv2: {_one_line(error)}") from None


def _check_writable_folder(folder: Path, where: str) -> None:
    """Create ``folder`` (and its parents) and write and delete a file in it; ``where`` names it in the error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as error:
        raise InputError(f"{where} is not a writable folder ({error.strerror or _one_line(error)})") from None


SAMPLE_WRITER = "training/evaluate_usit.py --sample_dir"  # the writer recorded in a --sample_dir it made


def _check_outputs(args: argparse.Namespace) -> None:
    # a new or empty folder, or this script's own samples (resumed): a folder of other images would be scored as
    # samples. Samples of earlier versions are recognised by their generation_settings.json.
    claim_output_folder(
        args.sample_dir, SAMPLE_WRITER, "--sample_dir", lambda folder: (folder / "generation_settings.json").is_file()
    )
    _check_writable_folder(Path(args.sample_dir), f"--sample_dir={args.sample_dir!r}")
    for flag in ("output_json", "output_markdown"):
        path = getattr(args, flag)
        if path is None:
            continue
        if Path(path).is_dir():
            raise InputError(f"--{flag}={path!r} is a folder; give the file to write")
        folder = Path(path).absolute().parent
        _check_writable_folder(folder, f"--{flag}={path!r}: its folder {str(folder)!r}")


def _check_metric_weights(args: argparse.Namespace) -> tuple[str, Dinov2Model | None]:
    """The Inception weights file (a plain state dict; downloaded to $TORCH_HOME when no path is given) and the
    DINOv2 model, loaded on the CPU and kept for scoring; its width must match FD-DINOv2 statistics in
    ``--reference``."""
    weights = _checked(
        "--inception_weights_path", resolve_inception_weights, args.inception_weights_path, "--inception_weights_path"
    )
    model = None
    if args.dinov2 is not None:
        try:
            model = load_dinov2(args.dinov2)
        except (OSError, ValueError) as error:
            raise InputError(f"--dinov2={args.dinov2!r} cannot be loaded: {_one_line(error)}") from None
        if args.reference is not None and is_statistics_file(args.reference):
            mu, _ = load_statistics(args.reference, prefix="dinov2")
            if mu.shape[0] != model.config.hidden_size:
                raise InputError(
                    f"--reference={args.reference!r} holds {mu.shape[0]}-d FD-DINOv2 statistics, but --dinov2="
                    f"{args.dinov2!r} gives {model.config.hidden_size}-d features"
                )
    return weights, model


def load_pipeline(args: argparse.Namespace, device: torch.device) -> DCAE15Pipeline:
    """Load ``--pipeline`` and check the sampling flags against it (latent channels, guidance, solver)."""
    try:
        pipe = DCAE15Pipeline.from_pretrained(args.pipeline)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        raise InputError(f"--pipeline={args.pipeline!r} cannot be loaded: {_one_line(error)}") from None
    try:
        pipe.check_inputs(
            args.batch_size,
            args.guidance_scale,
            args.num_inference_steps,
            None,
            args.latent_channels,
            args.solver,
            "pt",  # the samples are decoded: the vae must decode the sampled channels
        )
    except (ValueError, TypeError) as error:
        raise InputError(
            f"--latent_channels / --guidance_scale / --solver do not fit --pipeline={args.pipeline!r}: "
            f"{_one_line(error)}"
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _check_settings(settings: dict, sample_dir: Path) -> None:
    """Samples already in ``sample_dir`` must come from the same settings."""
    settings_file = sample_dir / "generation_settings.json"
    if not settings_file.is_file():
        return
    try:
        previous = json.loads(settings_file.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"--sample_dir={str(sample_dir)!r}: {settings_file.name} is unreadable ({error})") from None
    if previous != settings:
        raise InputError(
            f"--sample_dir={str(sample_dir)!r} holds samples made with other settings ({settings_file.name}: "
            f"{json.dumps(previous)}); use a new --sample_dir"
        )


def main(args: argparse.Namespace) -> dict:
    # ---- inputs, all checked before the first sample ----------------------------------------------------------
    metrics = check_flags_without_model(args)
    _check_reference(args, metrics)
    _check_outputs(args)
    if args.allow_tf32:  # entry-script global flag, as the official evaluation ran
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    accelerator = Accelerator()
    # Only the main process scores; the others stop with it if its metric inputs are bad (accelerate launch).
    inception_weights, dinov2 = _check_metric_weights(args) if accelerator.is_main_process else (None, None)
    pipe = load_pipeline(args, accelerator.device)
    num_classes = pipe.transformer.config.num_classes
    labels = class_labels(args.num_samples, num_classes, args.class_sampling, args.class_seed)
    settings = {key: getattr(args, key) for key in SETTINGS_KEYS}
    settings["num_inference_steps"] = None if args.solver == "dopri5" else args.num_inference_steps
    sample_dir = Path(args.sample_dir)
    _check_settings(settings, sample_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (sample_dir / "generation_settings.json").write_text(json.dumps(settings, indent=2))
        mark_output_folder(sample_dir, SAMPLE_WRITER)
    accelerator.wait_for_everyone()

    # ---- generation: this process's missing samples ---------------------------------------------------------
    start = time.perf_counter()
    indices = range(accelerator.process_index, args.num_samples, accelerator.num_processes)
    mine = [i for i in indices if not (sample_dir / f"{i:06d}.png").is_file()]
    batches = range(0, len(mine), args.batch_size)
    for offset in tqdm(batches, desc="sampling", unit="batch", disable=not accelerator.is_local_main_process):
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
            PNGSamples(sample_dir, args.num_samples),
            args.reference,
            fid="fid" in metrics,
            inception_score="is" in metrics,
            precision_recall="pr" in metrics,
            inception_weights_path=inception_weights,
            dinov2=dinov2.to(accelerator.device) if dinov2 is not None else None,
            batch_size=args.metrics_batch_size,
            device=accelerator.device,
            isc_splits=ISC_SPLITS,
            prc_neighborhood=PRC_NEIGHBORHOOD,
            save_cpu_ram=args.save_cpu_ram,
            feature_layer_fid=args.fid_feature_layer,
        )
        result = {
            "metrics": values,
            "settings": settings,
            "reference": args.reference,
            "dinov2": args.dinov2,
            "fid_feature_layer": args.fid_feature_layer,
            "metrics_seconds": round(time.perf_counter() - start, 2),
            "class_counts": np.bincount(labels, minlength=num_classes).tolist(),
        }
        Path(args.output_json).write_text(json.dumps(result, indent=2))
        table = "| metric | value |\n|---|---|\n" + "".join(f"| {k} | {v:.4f} |\n" for k, v in values.items())
        note = (
            f"\n{args.num_samples} samples from `{args.pipeline}` ({args.class_sampling} classes, solver "
            f"{args.solver}, guidance {args.guidance_scale}) against `{args.reference}`.\n"
        )
        if args.output_markdown:
            Path(args.output_markdown).write_text(table + note)
        print(table + note)
    accelerator.end_training()
    return result


def cli(argv: list[str] | None = None) -> dict:
    """``main(parse_args(argv))``; a bad input ends the run with one ``error: ...`` line on stderr and exit status 2,
    like a flag argparse refuses (other failures keep their traceback)."""
    args = parse_args(argv)
    try:
        result = main(args)
    except InputError as error:
        exit_with_error(_one_line(error))
    free_destroyed_process_groups()  # gloo threads joined before the interpreter ends (see there)
    return result


if __name__ == "__main__":
    cli()
