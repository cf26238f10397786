"""Transformer calls against accuracy for every sampler of DCAE15Pipeline: the official solvers and diffusers' schedulers.

Every sampler integrates the same probability-flow ODE (SiT flow time, classifier-free guidance); this script measures
how far each lands from its exact solution. The reference is torchdiffeq's dopri5 at rtol 1e-7 / atol 1e-9 on a
float64 state (about 3,000 transformer calls per batch on the bundled toy pipeline). For each sampler it prints the
transformer calls per batch (a guided call evaluates the doubled batch once), the relative L2 distance of the final
latents to the reference (mean, median and max over all samples), the "flips" (samples with a distance above 0.5,
which ended in another mode of the distribution), and the median seconds per batch with the ratio to the official
dopri5 (every batch runs the samplers in turn, the order reversed on alternate batches; a ratio from a loaded machine
is not a speed claim: the load average is printed).

The official dopri5 adapts its steps to the error of the whole batch, so batches keep the issue's size of 40 (one
batch of 40 reproduces the table of the issue that asked for this benchmark). Several batches (``--batches``, different
noise) make the mean less dependent on the few samples that sit near a mode boundary.

    python benchmarks/bench_sampling_calls.py                                  # the bundled toy pipeline, guidance 3
    python benchmarks/bench_sampling_calls.py --guidance_interval 0.2 0.8      # guided only for t in [0.2, 0.8]
    python benchmarks/bench_sampling_calls.py --model <pipeline folder> --guidance_scale 1.5 --output table.md
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from pathlib import Path

import torch
from diffusers import (
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    SASolverScheduler,
    UniPCMultistepScheduler,
)
from safetensors.torch import load_file, save_file
from timing import load_average
from torchdiffeq import odeint

from dc_ae_hf import DCAE15Pipeline
from dc_ae_hf.pipelines.pipeline_dcae15 import DEFAULT_SCHEDULER_STEPS
from dc_ae_hf.pipelines.sampling import make_ode_func

TOY_PIPELINE = Path(__file__).resolve().parents[1] / "dc_ae_hf" / "assets" / "toy-dcae15-shapes"
FLOW = dict(use_flow_sigmas=True, prediction_type="flow_prediction")
FLIP = 0.5  # a relative distance above this: the sample ended in another mode


def samplers(default_steps: int) -> dict[str, tuple[object, dict]]:
    """name -> (scheduler or None for the official solvers, pipeline keyword arguments)."""
    n = default_steps
    table: dict[str, tuple[object, dict]] = {"official dopri5 (atol 1e-6, rtol 1e-3)": (None, {"solver": "dopri5"})}
    for steps in (20, 40):
        table[f"official euler, {steps} steps"] = (None, {"solver": "euler", "num_inference_steps": steps})
    for steps in (8, 16, 32):
        table[f"official heun2, {steps} steps"] = (None, {"solver": "heun2", "num_inference_steps": steps})
    for steps in sorted({12, 17, 20, 24, 34, n}):
        default = " (the default)" if steps == n else ""
        table[f"UniPC (flow, bh2, order 2), dense_ends grid, {steps} steps{default}"] = (
            UniPCMultistepScheduler(**FLOW),
            {"num_inference_steps": steps},
        )
    table[f"UniPC order 2, uniform grid, {n} steps"] = (
        UniPCMultistepScheduler(**FLOW),
        {"num_inference_steps": n, "time_grid": "uniform"},
    )
    table[f"UniPC order 2, own spacing, {n} steps"] = (
        UniPCMultistepScheduler(**FLOW),
        {"num_inference_steps": n, "time_grid": "scheduler"},
    )
    table[f"UniPC order 3, dense_ends grid, {n} steps"] = (
        UniPCMultistepScheduler(**FLOW, solver_order=3),
        {"num_inference_steps": n},
    )
    table[f"UniPC order 2, own spacing, flow_shift 3, {n} steps"] = (
        UniPCMultistepScheduler(**FLOW, flow_shift=3.0),
        {"num_inference_steps": n, "time_grid": "scheduler"},
    )
    table[f"UniPC order 2, karras sigmas, {n} steps"] = (
        UniPCMultistepScheduler(**FLOW, use_karras_sigmas=True),
        {"num_inference_steps": n},
    )
    table[f"DPM-Solver++ 2M (flow), {n} steps"] = (DPMSolverMultistepScheduler(**FLOW), {"num_inference_steps": n})
    table[f"DPM-Solver++ 3M (flow), {n} steps"] = (
        DPMSolverMultistepScheduler(**FLOW, solver_order=3),
        {"num_inference_steps": n},
    )
    table[f"DPM-Solver++ 2M (flow), flow_shift 3, {n} steps"] = (
        DPMSolverMultistepScheduler(**FLOW, flow_shift=3.0),
        {"num_inference_steps": n},
    )
    table[f"DPM-Solver++ 2S singlestep (flow), {n} steps"] = (
        DPMSolverSinglestepScheduler(**FLOW),
        {"num_inference_steps": n},
    )
    table[f"DEIS 2 (flow), {n} steps"] = (DEISMultistepScheduler(**FLOW), {"num_inference_steps": n})
    table[f"SA-Solver (flow, tau 0: ODE), {n} steps"] = (
        SASolverScheduler(**FLOW, tau_func=lambda t: 0.0),
        {"num_inference_steps": n},
    )
    for steps in (20, 40):
        table[f"FlowMatchEuler, uniform grid, {steps} steps"] = (
            FlowMatchEulerDiscreteScheduler(),
            {"num_inference_steps": steps, "time_grid": "uniform"},
        )
        table[f"FlowMatchEuler, dense_ends grid, {steps} steps"] = (
            FlowMatchEulerDiscreteScheduler(),
            {"num_inference_steps": steps},
        )
    table["FlowMatchEuler, shift 3, 20 steps"] = (
        FlowMatchEulerDiscreteScheduler(shift=3.0),
        {"num_inference_steps": 20, "time_grid": "uniform"},
    )
    table["FlowMatchEuler, beta sigmas, 20 steps"] = (
        FlowMatchEulerDiscreteScheduler(use_beta_sigmas=True),
        {"num_inference_steps": 20, "time_grid": "uniform"},
    )
    for steps, shift in ((9, 1.0), (17, 1.0), (9, 3.0)):
        table[f"FlowMatchHeun, shift {shift:g}, {steps} steps"] = (
            FlowMatchHeunDiscreteScheduler(shift=shift),
            {"num_inference_steps": steps},
        )
    return table


class CallCounter:
    """Counts transformer calls (a guided call runs the doubled batch once)."""

    def __init__(self, model: torch.nn.Module):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self.calls += 1


def reference(pipe: DCAE15Pipeline, noise, labels, guidance_scale, guidance_interval, counter, cache=None):
    """The exact ODE solution: torchdiffeq dopri5 at rtol 1e-7, atol 1e-9 on a float64 state.

    ``cache``: a folder keeping each solution (safetensors, named by a hash of the weights, noise, labels and
    guidance), so that a rerun with other samplers skips the ~3,000 calls per batch.
    """
    key = None
    if cache is not None:
        digest = hashlib.sha256()
        for tensor in [*pipe.transformer.state_dict().values(), noise, labels]:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(repr((guidance_scale, guidance_interval)).encode())
        key = Path(cache) / f"reference-{digest.hexdigest()[:24]}.safetensors"
        if key.is_file():
            stored = load_file(key)
            return stored["solution"], int(stored["calls"])
    null = pipe.transformer.config.num_classes
    func = make_ode_func(pipe.transformer, labels, guidance_scale, guidance_interval, null)
    grid = torch.tensor([0.0, 1.0], dtype=torch.float64)
    start = counter.calls
    solution = odeint(func, noise.double(), grid, method="dopri5", rtol=1e-7, atol=1e-9)[-1].float()
    calls = counter.calls - start
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        save_file({"solution": solution.contiguous(), "calls": torch.tensor(calls)}, key)
    return solution, calls


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(TOY_PIPELINE), help="pipeline folder (default: the bundled toy pipeline)")
    p.add_argument("--guidance_scale", type=float, default=3.0)
    p.add_argument("--guidance_interval", type=float, nargs=2, default=None, metavar=("T_LO", "T_HI"))
    p.add_argument("--batches", type=int, default=3, help="batches of different noise (default 3)")
    p.add_argument("--batch_size", type=int, default=40)
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        help="batch b draws its noise with seed + b (default 1: seed 0 chose the dense_ends grid)",
    )
    p.add_argument("--only", nargs="*", default=None, help="run only the samplers whose name contains one of these")
    p.add_argument("--output", default=None, help="also write the table to this markdown file")
    p.add_argument("--reference_cache", default=None, help="folder to keep the exact solutions in, for reruns")
    args = p.parse_args(argv)
    if args.batches < 1 or args.batch_size < 1:
        p.error(f"--batches and --batch_size must be >= 1, got {args.batches} and {args.batch_size}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    start_load = load_average()
    torch.set_grad_enabled(False)
    pipe = DCAE15Pipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    cfg = pipe.transformer.config
    counter = CallCounter(pipe.transformer)
    interval = tuple(args.guidance_interval) if args.guidance_interval else None
    table = samplers(DEFAULT_SCHEDULER_STEPS)
    if args.only:
        table = {name: entry for name, entry in table.items() if any(word in name for word in args.only)}
    errors = {name: [] for name in table}
    calls = {name: [] for name in table}
    seconds = {name: [] for name in table}
    reference_calls = []
    for batch in range(args.batches):
        generator = torch.Generator().manual_seed(args.seed + batch)
        noise = torch.randn(args.batch_size, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=generator)
        labels = torch.arange(args.batch_size) % cfg.num_classes
        exact, used = reference(pipe, noise, labels, args.guidance_scale, interval, counter, args.reference_cache)
        reference_calls.append(used)
        order = list(table) if batch % 2 == 0 else list(reversed(table))
        for name in order:
            scheduler, kwargs = table[name]
            pipe.scheduler = scheduler
            start_calls, start = counter.calls, time.perf_counter()
            out = pipe(
                labels.tolist(),
                latents=noise.clone(),
                guidance_scale=args.guidance_scale,
                guidance_interval=interval,
                output_type="latent",
                **kwargs,
            ).images
            seconds[name].append(time.perf_counter() - start)
            calls[name].append(counter.calls - start_calls)
            distance = (out - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)
            errors[name].extend(distance.tolist())
        print(f"# batch {batch + 1}/{args.batches} done (reference: {used} calls)", flush=True)

    official = "official dopri5 (atol 1e-6, rtol 1e-3)"
    lines = [
        f"# {args.model}: guidance {args.guidance_scale:g}"
        + (f", interval {list(interval)}" if interval else ", no interval")
        + f"; {args.batches} batches of {args.batch_size} (seeds {args.seed}..{args.seed + args.batches - 1}); "
        f"reference: dopri5 rtol 1e-7 / atol 1e-9, {statistics.mean(reference_calls):.0f} calls per batch; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; at start: {start_load}",
        "",
        "| sampler | transformer calls | error mean | error median | error max | flips | s per batch | time ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in table:
        e = errors[name]
        flips = sum(value > FLIP for value in e)
        ratio = ""
        if official in seconds:
            ratio = f"{statistics.median(a / b for a, b in zip(seconds[name], seconds[official], strict=True)):.2f}"
        lines.append(
            f"| {name} | {statistics.mean(calls[name]):.0f} | {100 * statistics.mean(e):.2f}% | "
            f"{100 * statistics.median(e):.2f}% | {100 * max(e):.1f}% | {flips}/{len(e)} | "
            f"{statistics.median(seconds[name]):.2f} | {ratio} |"
        )
    lines += ["", f"# done; {load_average()}"]
    text = "\n".join(lines)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
