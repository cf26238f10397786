"""Encode/decode speed and peak memory: AutoencoderDC15 (default and channels-last) vs diffusers AutoencoderDC.

All three hold identical random weights of an official architecture (default DC-AE-1.5-f32c128). For each dtype,
resolution and operation they run in interleaved rounds (see `benchmarks/timing.py`); the table gives the median
seconds of diffusers' model, the median per-round speed ratio of ours (default path) and ours with
`enable_channels_last()` against it (higher is better), the achieved GFLOP/s of diffusers' model (FLOPs counted by
`torch.utils.flop_counter.FlopCounterMode`) as a share of a dense GEMM measured in the same run, the extra peak
memory, and the max abs difference of the outputs.

    python benchmarks/bench_autoencoder.py                       # f32c128, 128 + 256 px, fp32 (a few minutes)
    python benchmarks/bench_autoencoder.py --quick               # width/4 model, 256 px, under a minute
    python benchmarks/bench_autoencoder.py --device cuda --preset dc-ae-1.5-f64c128 --resolutions 512 1024 \
        --tiled_resolution 2048

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

import torch
from diffusers import AutoencoderDC
from timing import gemm_gflops, interleaved, load_average, median_ratio
from torch.utils.flop_counter import FlopCounterMode

from dc_ae_hf import AUTOENCODER_PRESETS, AutoencoderDC15
from dc_ae_hf.checks import DTYPES as DTYPES_BY_NAME
from dc_ae_hf.models.autoencoder_dc15 import resolve_autoencoder_preset

DTYPES = {name: DTYPES_BY_NAME[name] for name in ("fp32", "bf16")}  # the dtypes measured here


def build_models(preset: str, width_divisor: int, dtype: torch.dtype, device: str) -> dict[str, torch.nn.Module]:
    config = dict(AUTOENCODER_PRESETS[resolve_autoencoder_preset(preset)])
    if width_divisor > 1:
        for key in ("encoder_block_out_channels", "decoder_block_out_channels"):
            config[key] = tuple(w // width_divisor for w in config[key])
    torch.manual_seed(0)
    ours = AutoencoderDC15(**config).eval()
    parent_config = {k: v for k, v in config.items() if k != "latent_channel_choices"}
    diffusers_model = AutoencoderDC(**parent_config).eval()
    diffusers_model.load_state_dict(ours.state_dict())
    channels_last = AutoencoderDC15(**config).eval()
    channels_last.load_state_dict(ours.state_dict())
    models = {"diffusers": diffusers_model, "ours": ours, "ours channels-last": channels_last}
    models = {name: model.to(device, dtype) for name, model in models.items()}
    models["ours channels-last"].enable_channels_last()
    return models


def run_op(model, op: str, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if op == "encode":
            return model.encode(inputs).latent
        return model.decode(inputs).sample


def count_flops(model, op: str, inputs: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        run_op(model, op, inputs)
    return counter.get_total_flops()


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
    parser.add_argument("--preset", default="dc-ae-1.5-f32c128", choices=sorted(AUTOENCODER_PRESETS))
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=sorted(DTYPES))
    parser.add_argument("--tiled_resolution", type=int, default=0, help="also a tiled case at this size (0: none)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per cell")
    parser.add_argument("--width_divisor", type=int, default=1, help="shrink every width (quick runs)")
    parser.add_argument("--quick", action="store_true", help="width/4, 256 px only, 3 rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.quick:
        args.width_divisor, args.resolutions, args.rounds = 4, [256], 3
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")

    print(
        f"# {args.preset} (widths / {args.width_divisor}), device {args.device}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, {args.rounds} interleaved rounds; {load_average()}"
    )
    header = (
        "| dtype | input | op | diffusers s | ours / diffusers | channels-last / diffusers | diffusers GFLOP/s "
        "(% of GEMM) | diffusers MiB | ours MiB | max abs diff |"
    )
    print(header + "\n|" + "---|" * (header.count("|") - 1))
    cases = [(r, False) for r in args.resolutions] + ([(args.tiled_resolution, True)] if args.tiled_resolution else [])
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        # the GEMM reference in fp32 only (a bf16 torch.mm of this size takes minutes on this CPU)
        gemm = gemm_gflops(2048, dtype, args.device) if dtype == torch.float32 else None
        models = build_models(args.preset, args.width_divisor, dtype, args.device)
        f = models["ours"].spatial_compression_ratio
        for resolution, tiled in cases:
            for model in models.values():
                model.enable_tiling() if tiled else model.disable_tiling()
            generator = torch.Generator().manual_seed(resolution)
            images = torch.rand(1, 3, resolution, resolution, generator=generator) * 2 - 1
            latents = torch.randn(
                1, models["ours"].config.latent_channels, resolution // f, resolution // f, generator=generator
            )
            for op, inputs in (("encode", images), ("decode", latents)):
                inputs = inputs.to(args.device, dtype)
                candidates = {name: lambda m=model, o=op, x=inputs: run_op(m, o, x) for name, model in models.items()}
                times = interleaved(candidates, args.rounds, args.device)
                seconds = statistics.median(times["diffusers"])
                gflops = count_flops(models["diffusers"], op, inputs) / seconds / 1e9
                memory = {
                    name: peak_memory_mib(models[name], op, inputs, args.device) for name in ("diffusers", "ours")
                }
                reference = run_op(models["diffusers"], op, inputs).float()
                diff = max(
                    (run_op(models[name], op, inputs).float() - reference).abs().max().item()
                    for name in ("ours", "ours channels-last")
                )
                label = f"{resolution}px" + (" tiled" if tiled else "")
                print(
                    f"| {dtype_name} | {label} | {op} | {seconds:.3f} "
                    f"| {median_ratio(times, 'diffusers', 'ours'):.2f}x "
                    f"| {median_ratio(times, 'diffusers', 'ours channels-last'):.2f}x "
                    f"| {gflops:.0f} ({f'{100 * gflops / gemm:.0f}%' if gemm else 'n/a'}) "
                    f"| {memory['diffusers']:.0f} | {memory['ours']:.0f} | {diff:.1e} |",
                    flush=True,
                )
        del models
        if gemm:
            print(f"\n{dtype_name} GEMM 2048^3 (torch.mm): {gemm:.0f} GFLOP/s")
    print(f"# done; {load_average()}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
