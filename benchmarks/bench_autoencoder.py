"""Encode/decode speed and peak memory: AutoencoderDC15 (channels-last path) vs diffusers AutoencoderDC.

Both models hold identical random weights of an official architecture (default DC-AE-1.5-f64c128). For each dtype,
resolution and operation it prints the time of each model, the speed ratio (ours / diffusers, higher is better),
the extra peak memory of each, and the max abs difference of the outputs.

    python benchmarks/bench_autoencoder.py                       # full f64c128 (about 10 min on a 2-core CPU)
    python benchmarks/bench_autoencoder.py --quick               # width/4 model, 256 px, a minute
    python benchmarks/bench_autoencoder.py --device cuda --resolutions 512 1024 --tiled_resolution 2048

Peak memory: on CUDA `torch.cuda.max_memory_allocated`; on CPU the Linux high-water mark of the resident set
(VmHWM, reset through /proc/self/clear_refs) minus the resident set before the operation, after `malloc_trim` has
returned freed heap pages to the system.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import time

import torch
from diffusers import AutoencoderDC

from dc_ae_hf import AUTOENCODER_PRESETS, AutoencoderDC15
from dc_ae_hf.models.autoencoder_dc15 import resolve_autoencoder_preset

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build_models(preset: str, width_divisor: int, dtype: torch.dtype, device: str):
    config = dict(AUTOENCODER_PRESETS[resolve_autoencoder_preset(preset)])
    if width_divisor > 1:
        for key in ("encoder_block_out_channels", "decoder_block_out_channels"):
            config[key] = tuple(w // width_divisor for w in config[key])
    torch.manual_seed(0)
    ours = AutoencoderDC15(**config).eval()
    parent_config = {k: v for k, v in config.items() if k != "latent_channel_choices"}
    theirs = AutoencoderDC(**parent_config).eval()
    theirs.load_state_dict(ours.state_dict())
    ours, theirs = ours.to(device, dtype), theirs.to(device, dtype)
    ours.enable_channels_last()
    return ours, theirs


def run_op(model, op: str, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if op == "encode":
            return model.encode(inputs).latent
        return model.decode(inputs).sample


def time_op(model, op, inputs, repeats: int, device: str) -> tuple[float, torch.Tensor]:
    out = run_op(model, op, inputs)  # warm-up (oneDNN/cuDNN algorithm selection)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = run_op(model, op, inputs)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def peak_memory_mib(model, op, inputs, device: str) -> float:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_op(model, op, inputs)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset VmHWM to the current resident set
    base = _status_kib("VmRSS")
    run_op(model, op, inputs)
    return (_status_kib("VmHWM") - base) / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="dc-ae-1.5-f64c128", choices=sorted(AUTOENCODER_PRESETS))
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--tiled_resolution", type=int, default=1024, help="0 disables the tiled case")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--width_divisor", type=int, default=1, help="shrink every width (quick runs)")
    parser.add_argument("--quick", action="store_true", help="width/4, 256 px only, fp32 + bf16, no tiling")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.quick:
        args.width_divisor, args.resolutions, args.tiled_resolution = 4, [256], 0
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    print(f"# {args.preset} (widths / {args.width_divisor}), device {args.device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    header = "| dtype | input | op | diffusers s | ours s | speed ratio | diffusers MiB | ours MiB | max abs diff |"
    print(header + "\n|" + "---|" * (header.count("|") - 1))
    cases = [(r, False) for r in args.resolutions] + ([(args.tiled_resolution, True)] if args.tiled_resolution else [])
    for dtype_name in args.dtypes:
        ours, theirs = build_models(args.preset, args.width_divisor, DTYPES[dtype_name], args.device)
        f = ours.spatial_compression_ratio
        for resolution, tiled in cases:
            for model in (ours, theirs):
                model.enable_tiling() if tiled else model.disable_tiling()
            generator = torch.Generator().manual_seed(resolution)
            images = (torch.rand(1, 3, resolution, resolution, generator=generator) * 2 - 1).to(args.device)
            latents = torch.randn(
                1, ours.config.latent_channels, resolution // f, resolution // f, generator=generator
            )
            for op, inputs in (("encode", images), ("decode", latents.to(args.device))):
                inputs = inputs.to(DTYPES[dtype_name])
                t_theirs, out_theirs = time_op(theirs, op, inputs, args.repeats, args.device)
                t_ours, out_ours = time_op(ours, op, inputs, args.repeats, args.device)
                m_theirs = peak_memory_mib(theirs, op, inputs, args.device)
                m_ours = peak_memory_mib(ours, op, inputs, args.device)
                diff = (out_ours.float() - out_theirs.float()).abs().max().item()
                label = f"{resolution}px" + (" tiled" if tiled else "")
                print(f"| {dtype_name} | {label} | {op} | {t_theirs:.3f} | {t_ours:.3f} | {t_theirs / t_ours:.2f}x "
                      f"| {m_theirs:.0f} | {m_ours:.0f} | {diff:.2e} |", flush=True)  # fmt: skip
        del ours, theirs


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
