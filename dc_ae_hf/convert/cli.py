"""`python -m dc_ae_hf.convert ...`: turn official DC-Gen / efficientvit releases into diffusers folders.

    python -m dc_ae_hf.convert autoencoder --checkpoint dc-ai/dc-ae-f64c128-1.5 --preset dc-ae-1.5-f64c128 \
        --output converted/dc-ae-1.5-f64c128 [--push_to_hub user/dc-ae-1.5-f64c128-diffusers] [--self_contained]
    python -m dc_ae_hf.convert pipeline --autoencoder dc-ai/dc-ae-f64c128-1.5 \
        --transformer mit-han-lab/dc-ae-f64c128-1.5-usit-2b-in-512px --preset dc-ae-1.5-f64c128-usit-2b \
        --output converted/dc-ae-1.5-f64c128-usit-2b [--push_to_hub user/dc-ae-1.5-usit-2b-diffusers] [--self_contained]

`--self_contained` writes the folder with its code (generated from dc_ae_hf), so plain diffusers loads it with
`trust_remote_code=True`, no dc_ae_hf needed (see `dc_ae_hf.self_contained`). A folder already saved:

    python -m dc_ae_hf.convert self-contained FOLDER [FOLDER ...]   # in place, the weights untouched
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from ..checks import DTYPE_NAMES, NOT_GIVEN, exit_on_user_error, exit_with_error, invalid, parse_dtype
from ..output_folders import card_names, claim_output_folder, clear_output_folder, mark_output_folder
from ..presets import AUTOENCODER_PRESETS, PIPELINE_PRESETS, resolve_autoencoder_preset, resolve_pipeline_preset
from ..self_contained import code_version, make_self_contained
from . import AUTOENCODER_WRITER, PIPELINE_WRITER

# The modules that import torch are imported where a conversion starts (`convert_autoencoder`, `_run`, `main` after
# parsing): `--help` and argument errors answer without them.

logger = logging.getLogger(__name__)


def convert_autoencoder(
    checkpoint: str,
    output: str,
    preset: str | None = None,
    dtype: str = "fp32",
    push_to_hub: str | None = None,
    *,
    scaling_factor: float | None = None,
    latent_channel_choices=NOT_GIVEN,
    self_contained: bool = False,
    log: Callable[[str], None] = logger.info,
) -> Path:
    """Convert an official autoencoder checkpoint to a diffusers folder with a model card; returns the folder.

    Without `preset` the architecture is inferred (`infer_autoencoder_config`): an official one brings its
    `latent_channel_choices` and scaling factor; a DC-AE 1.5-style one of no official architecture needs
    `latent_channel_choices` (prefixes, or None for an unstructured model). `scaling_factor` (finite, > 0) replaces
    the config's. `self_contained` writes the model's code into the folder too (`AutoModel.from_pretrained(folder,
    trust_remote_code=True)` loads it with plain diffusers). `log` receives one line per step (the recognised
    architecture; where the folder was written, before any upload). A failed upload raises
    `dc_ae_hf.hub.HubPushError`; the folder is complete by then.
    """
    from ..checks import SHORT_DTYPE_NAMES  # torch dtypes
    from ..hub import push_folder_to_hub, write_autoencoder_card
    from ..latents import check_scaling_factor
    from .autoencoder import (
        describe_latent_config,
        load_official_autoencoder,
        recognised_preset,
        scaling_factor_is_published,
    )
    from .checkpoint_io import load_original_checkpoint

    output_dir = claim_output_folder(
        output, AUTOENCODER_WRITER, "--output", earlier_output=card_names(AUTOENCODER_WRITER)
    )
    torch_dtype = parse_dtype("dtype", dtype)
    dtype = SHORT_DTYPE_NAMES[torch_dtype]  # one spelling for the weight variant: fp32 / bf16 / fp16
    preset = resolve_autoencoder_preset(preset) if preset is not None else None
    overrides = {}
    if scaling_factor is not None:
        overrides["scaling_factor"] = check_scaling_factor(scaling_factor)
    if latent_channel_choices is not NOT_GIVEN:
        overrides["latent_channel_choices"] = latent_channel_choices
    vae = load_official_autoencoder(load_original_checkpoint(checkpoint), preset=preset, **overrides)
    if dtype != "fp32":  # the weights are fp32; `.to(float32)` would only make diffusers log a dtype notice
        vae = vae.to(torch_dtype)
    source_preset = preset or recognised_preset(vae.config)
    if preset is None and source_preset is not None:
        log(f"recognised the official architecture {source_preset} ({describe_latent_config(vae.config)})")
    scaling_known = scaling_factor is not None or scaling_factor_is_published(source_preset)
    clear_output_folder(output_dir)  # the converter's own earlier output (or nothing): replaced whole
    vae.save_pretrained(
        output_dir,
        safe_serialization=True,
        variant=None if dtype == "fp32" else dtype,
        self_contained=self_contained,
    )

    write_autoencoder_card(
        output_dir,
        vae,
        model_name=preset or output_dir.name,
        repo_id=push_to_hub or str(output_dir),
        description="Deep Compression Autoencoder" + (" 1.5" if vae.config.latent_channel_choices else ""),
        source=f"converted from the official checkpoint `{checkpoint}`",
        scaling_factor=None if scaling_known else f"{vae.config.scaling_factor} (not known)",
        provenance=(
            f"`python -m dc_ae_hf.convert autoencoder --checkpoint {checkpoint}"
            + (f" --preset {preset}" if preset else "")
            + (f" --scaling_factor {scaling_factor}" if scaling_factor is not None else "")
            + (
                " --latent_channel_choices "
                + (" ".join(map(str, latent_channel_choices)) if latent_channel_choices else "none")
                if latent_channel_choices is not NOT_GIVEN
                else ""
            )
            + (" --self_contained" if self_contained else "")
            + "`: official keys mapped one rule per module kind, loaded with `strict=True` after a key-by-key shape "
            "check. The converter is tested against tensors produced by the official DC-Gen code (max abs "
            "difference below 1e-5 in fp32)."
        ),
        metrics_table="",
    )
    mark_output_folder(output_dir, AUTOENCODER_WRITER)
    log(f"wrote {output_dir}")
    if push_to_hub:
        log(f"uploading {output_dir} to the Hub repo {push_to_hub}")
        push_folder_to_hub(output_dir, push_to_hub)
        log(f"pushed {output_dir} to {push_to_hub}")
    return output_dir


# -- argument types: argparse reports their errors as "argument --flag: <message>" -----------------------------


def _number_type(parse, allowed: str, is_allowed):
    """An argparse `type=`: `parse(text)` (int or float), then `is_allowed(value)`; errors say what is `allowed`."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {allowed}") from None
        if not is_allowed(value):
            raise argparse.ArgumentTypeError(f"{text} is not allowed; give {allowed}")
        return value

    return convert


_positive_int = _number_type(int, "a positive int", lambda value: value > 0)
_scaling_factor = _number_type(
    float, "a finite number > 0 (latents are scaled by it)", lambda value: math.isfinite(value) and value > 0
)
_finite_float = _number_type(float, "a finite number", math.isfinite)


def _latent_channel_choice(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not allowed; give increasing positive ints (the channel prefixes) or the single word none"
        ) from None


def _add_structure_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--latent_channel_choices",
        nargs="+",
        type=_latent_channel_choice,
        default=None,
        metavar="C",
        help="the autoencoder's structured latent space (channel prefixes, e.g. 4 8 12 16), or 'none' for an "
        "unstructured model; required for a DC-AE 1.5-style checkpoint of no official architecture (default: from "
        "the official preset the weights match)",
    )
    sub.add_argument(
        "--scaling_factor",
        type=_scaling_factor,
        default=None,
        help="the autoencoder's latent scaling factor, finite and > 0 (default: from the official preset the "
        "weights match; 1.0 with a warning when it is unknown)",
    )


def _parse_choices(parser: argparse.ArgumentParser, values: list | None):
    """`--latent_channel_choices` values -> NOT_GIVEN, None ('none') or a tuple of increasing ints."""
    if values is None:
        return NOT_GIVEN
    if None in values:
        if len(values) > 1:
            parser.error("argument --latent_channel_choices: 'none' must stand alone")
        return None
    if any(b <= a for a, b in zip(values, values[1:])):
        parser.error(f"argument --latent_channel_choices: {values} must be strictly increasing")
    return tuple(values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dc_ae_hf.convert", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ae = commands.add_parser("autoencoder", help="official DC-AE 1.0/1.5 checkpoint -> AutoencoderDC15 folder")
    ae.add_argument("--checkpoint", required=True, help="Hub id, model.safetensors, or a .pt/.pth training checkpoint")
    ae.add_argument(
        "--preset",
        default=None,
        help=f"architecture (default: inferred from the weights); one of {sorted(AUTOENCODER_PRESETS)}",
    )
    ae.add_argument("--output", required=True, help="output folder")
    ae.add_argument("--dtype", default="fp32", choices=DTYPE_NAMES)
    _add_structure_flags(ae)
    ae.add_argument("--push_to_hub", default=None, metavar="REPO_ID", help="also upload the folder to this Hub repo")
    _add_self_contained_flag(ae)

    pipe = commands.add_parser("pipeline", help="official autoencoder + USiT checkpoints -> DCAE15Pipeline folder")
    pipe.add_argument("--autoencoder", required=True, help="Hub id or file of the official autoencoder")
    pipe.add_argument("--transformer", required=True, help="Hub id or file of the official USiT (incl. FSDP EMA .pt)")
    pipe.add_argument(
        "--preset",
        default=None,
        help=f"architectures (default: inferred from the weights); one of {sorted(PIPELINE_PRESETS)}",
    )
    pipe.add_argument("--output", required=True, help="output folder")
    pipe.add_argument(
        "--num_attention_heads",
        type=_positive_int,
        default=None,
        help="USiT attention heads (a positive int; required without --preset for hidden sizes other than the "
        "official 512, 1152, 2048: the count is not in the weights)",
    )
    _add_structure_flags(pipe)
    pipe.add_argument(
        "--ema_decay",
        type=_finite_float,
        default=None,
        help="which EMA of an FSDP checkpoint (default: the only one; required when it holds several)",
    )
    pipe.add_argument(
        "--id2label", default=None, help="JSON file {class id: name} (default: ImageNet-1k for 1000 classes)"
    )
    pipe.add_argument("--push_to_hub", default=None, metavar="REPO_ID", help="also upload the folder to this Hub repo")
    _add_self_contained_flag(pipe)

    code = commands.add_parser(
        "self-contained",
        help="write the code into pipeline or model folders saved by dc_ae_hf, in place (weights untouched), or "
        "regenerate it with this dc_ae_hf: plain diffusers then loads them with trust_remote_code=True",
    )
    code.add_argument("folders", nargs="+", type=Path, help="folders written by save_pretrained")
    return parser


def _add_self_contained_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--self_contained",
        action="store_true",
        help="write the folder with its code (generated from dc_ae_hf): plain diffusers loads it with "
        "trust_remote_code=True, no dc_ae_hf needed",
    )


def check_arguments(args: argparse.Namespace) -> None:
    """The values that need no weights, checked before the heavy imports (ValueError naming the flag): the preset,
    the output folder (new, empty or this command's own earlier output: `claim_output_folder`) and the --id2label
    file. The conversion checks them again where it uses them."""
    if args.command == "self-contained":
        return  # `make_self_contained` checks each folder
    autoencoder = args.command == "autoencoder"
    if args.preset is not None:
        try:  # the converters' own preset checks, named by the flag
            resolve_autoencoder_preset(args.preset) if autoencoder else resolve_pipeline_preset(args.preset)
        except ValueError:
            presets = AUTOENCODER_PRESETS if autoencoder else PIPELINE_PRESETS
            raise invalid("--preset", args.preset, f"choose one of {sorted(presets)}") from None
    writer = AUTOENCODER_WRITER if autoencoder else PIPELINE_WRITER
    claim_output_folder(args.output, writer, "--output", earlier_output=card_names(writer))
    if getattr(args, "id2label", None) is not None and not Path(args.id2label).is_file():
        raise invalid("--id2label", args.id2label, "must be a JSON file {class id: name}; there is no such file")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    from .pipeline import convert_pipeline

    if args.command == "self-contained":
        for folder in args.folders:
            make_self_contained(folder)
            print(f"wrote the code of {folder} (dc_ae_hf {code_version(folder)})")
        return args.folders[-1]
    choices = _parse_choices(parser, args.latent_channel_choices)
    if args.command == "autoencoder":
        return convert_autoencoder(
            args.checkpoint,
            args.output,
            args.preset,
            args.dtype,
            args.push_to_hub,
            scaling_factor=args.scaling_factor,
            latent_channel_choices=choices,
            self_contained=args.self_contained,
            log=print,
        )
    return convert_pipeline(
        args.autoencoder,
        args.transformer,
        args.output,
        preset=args.preset,
        push_to_hub=args.push_to_hub,
        self_contained=args.self_contained,
        log=print,
        num_attention_heads=args.num_attention_heads,
        scaling_factor=args.scaling_factor,
        latent_channel_choices=choices,
        id2label=args.id2label,
        id2label_name="--id2label",
        ema_decay=args.ema_decay,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse `argv`, convert, print progress to stdout. An input problem (a flag, a file, an output folder that is
    not new, empty or the converter's own) ends as one `error: ...` on stderr and exit status 2, a failed upload as
    one line and exit status 1 (the folder is complete), without a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    exit_on_user_error(check_arguments, args)  # before the heavy imports: a bad value answers at once
    from ..hub import HubPushError
    from .autoencoder import ScalingFactorUnknownWarning
    from .checkpoint_io import ConverterInputError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", ScalingFactorUnknownWarning)
            original_show = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if isinstance(message, ScalingFactorUnknownWarning):  # in the CLI's words, on one line
                    print(f"warning: {message.describe(cli=True)}", file=sys.stderr)
                else:
                    original_show(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            _run(parser, args)
    except ConverterInputError as error:
        exit_with_error(error.describe(cli=True))
    except HubPushError as error:  # the folder is complete; only the upload failed
        exit_with_error(error, 1)
    except (ValueError, TypeError, OSError) as error:
        exit_with_error(error)
