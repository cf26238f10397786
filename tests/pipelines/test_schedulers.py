"""Every diffusers flow-matching scheduler samples DCAE15Pipeline's ODE; the others are refused with the fix named.

Each scheduler runs on the official (uniform) grid where its ``set_timesteps`` takes ``sigmas``, and on its own spacing,
and must land near the exact ODE solution (torchdiffeq dopri5 at tight tolerance): a wrong time convention, sign or grid
would land far away.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_AE15_CONFIG
from diffusers import (
    DDIMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepInverseScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    FlowMatchLCMScheduler,
    SASolverScheduler,
    UniPCMultistepScheduler,
)
from helpers import official_usit
from torchdiffeq import odeint

from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.pipelines.pipeline_dcae15 import DEFAULT_SCHEDULER_STEPS, DCAE15Pipeline, default_scheduler
from dc_ae_hf.pipelines.sampling import flow_sigmas, make_ode_func

FLOW = dict(use_flow_sigmas=True, prediction_type="flow_prediction")
STEPS = 12
GUIDANCE = 1.5
# Each applicable scheduler: name -> (factory, largest allowed mean relative distance to the exact solution at STEPS).
# First-order methods (Euler) and those on a coarse spacing of their own land within a few percent, the others within
# 1-2%.
APPLICABLE = {
    "FlowMatchEuler": (FlowMatchEulerDiscreteScheduler, 0.05),
    "FlowMatchEuler shift 3": (lambda: FlowMatchEulerDiscreteScheduler(shift=3.0), 0.05),
    "FlowMatchEuler dynamic shifting": (
        lambda: FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=4, max_image_seq_len=64),
        0.05,
    ),
    "FlowMatchEuler karras": (lambda: FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True), 0.05),
    "FlowMatchHeun": (FlowMatchHeunDiscreteScheduler, 0.01),
    "UniPC": (lambda: UniPCMultistepScheduler(**FLOW), 0.01),
    "UniPC order 3": (lambda: UniPCMultistepScheduler(**FLOW, solver_order=3), 0.01),
    "UniPC flow_shift 3": (lambda: UniPCMultistepScheduler(**FLOW, flow_shift=3.0), 0.01),
    "DPM-Solver++ 2M": (lambda: DPMSolverMultistepScheduler(**FLOW), 0.02),
    "DPM-Solver++ 3M": (lambda: DPMSolverMultistepScheduler(**FLOW, solver_order=3), 0.02),
    "DPM-Solver++ singlestep": (lambda: DPMSolverSinglestepScheduler(**FLOW), 0.02),
    "DEIS": (lambda: DEISMultistepScheduler(**FLOW), 0.05),
    "SA-Solver (ODE)": (lambda: SASolverScheduler(**FLOW, tau_func=lambda t: 0.0), 0.05),
}


@pytest.fixture(scope="module")
def pipe() -> DCAE15Pipeline:
    torch.manual_seed(0)
    pipe = DCAE15Pipeline(transformer=official_usit(), vae=AutoencoderDC15(**TINY_AE15_CONFIG).eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def problem(pipe) -> dict:
    """Noise, labels and the exact guided ODE solution (dopri5, rtol 1e-7, atol 1e-9, float64 state)."""
    torch.manual_seed(1)
    noise, labels = torch.randn(2, 16, 4, 4), torch.tensor([1, 7])
    func = make_ode_func(pipe.transformer, labels, GUIDANCE, None, pipe.transformer.config.num_classes)
    with torch.no_grad():
        exact = odeint(func, noise.double(), torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=1e-7, atol=1e-9)[-1]
    return dict(noise=noise, labels=labels.tolist(), exact=exact.float())


def distance(pipe, problem, **kwargs) -> float:
    out = pipe(problem["labels"], latents=problem["noise"], guidance_scale=GUIDANCE, output_type="latent", **kwargs)
    exact = problem["exact"]
    return float(((out.images - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)).mean())


def with_scheduler(pipe, scheduler) -> DCAE15Pipeline:
    other = DCAE15Pipeline(**{**pipe.components, "scheduler": scheduler})
    other.set_progress_bar_config(disable=True)
    return other


@pytest.mark.parametrize("name", list(APPLICABLE))
def test_every_flow_scheduler_samples_the_ode(pipe, problem, name):
    factory, tolerance = APPLICABLE[name]
    sampler = with_scheduler(pipe, factory())
    takes_sigmas = name.startswith(("FlowMatchEuler", "UniPC"))
    grids = ["uniform", "scheduler"] if takes_sigmas else ["scheduler"]
    for grid in grids:
        error = distance(sampler, problem, num_inference_steps=STEPS, time_grid=grid)
        assert error < tolerance, f"{name} on time_grid={grid!r}: distance {error:.4f} to the exact solution"
    if not takes_sigmas:  # no `sigmas` in set_timesteps: the official grid is refused with the way out named
        with pytest.raises(ValueError, match="takes no `sigmas`.*time_grid='scheduler'"):
            distance(sampler, problem, num_inference_steps=STEPS, time_grid="uniform")
        with pytest.raises(ValueError, match="custom `sigmas`: .* takes no `sigmas`"):
            distance(sampler, problem, sigmas=flow_sigmas(STEPS))


def test_default_sampler_is_unipc_on_the_dense_ends_grid(pipe, problem):
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda module, args: calls.append(float(args[1][0])))
    try:
        error = distance(pipe, problem)  # scheduler None: default_scheduler(), DEFAULT_SCHEDULER_STEPS calls
    finally:
        handle.remove()
    assert len(calls) == DEFAULT_SCHEDULER_STEPS and error < 0.01
    # the model is called at t = 1 - sigma of the dense_ends grid (UniPC starts a hair below sigma = 1)
    np.testing.assert_allclose(calls, 1.0 - flow_sigmas(DEFAULT_SCHEDULER_STEPS), atol=2e-6)
    explicit = with_scheduler(pipe, default_scheduler())
    assert distance(explicit, problem) == error


def test_sigmas_as_numpy_or_list_and_the_unipc_regression(pipe, problem):
    # UniPC with flow sigmas failed in this pipeline ("can't multiply sequence by non-int"): sigmas were a list
    sampler = with_scheduler(pipe, UniPCMultistepScheduler(**FLOW))
    sigmas = np.linspace(1.0, 1.0 / STEPS, STEPS)
    by_grid = distance(sampler, problem, num_inference_steps=STEPS, time_grid="uniform")
    assert distance(sampler, problem, sigmas=sigmas) == pytest.approx(by_grid, abs=1e-6)
    assert distance(sampler, problem, sigmas=sigmas.tolist()) == pytest.approx(by_grid, abs=1e-6)


@pytest.mark.parametrize(
    "scheduler, match",
    [
        (DDIMScheduler(), "DDIMScheduler is not a flow-matching scheduler"),
        (EulerDiscreteScheduler(), "EulerDiscreteScheduler is not a flow-matching scheduler"),
        (UniPCMultistepScheduler(), r"use_flow_sigmas=False.*from_config"),
        (DPMSolverMultistepScheduler(use_flow_sigmas=True), r"prediction_type='epsilon'"),
        (FlowMatchLCMScheduler(), "distilled"),
        (DPMSolverMultistepInverseScheduler(**FLOW), "inverts sampling"),
        (FlowMatchEulerDiscreteScheduler(invert_sigmas=True), "does not run from noise to data"),
    ],
)
def test_schedulers_that_cannot_sample_the_flow_ode_are_refused(pipe, scheduler, match):
    with pytest.raises(ValueError, match=match):
        with_scheduler(pipe, scheduler)([1], num_inference_steps=4, output_type="latent")


def test_grid_arguments_are_checked(pipe):
    kwargs = dict(class_labels=[1], num_inference_steps=4, output_type="latent")
    with pytest.raises(ValueError, match="Unknown time_grid 'linear'"):
        pipe(**kwargs, time_grid="linear")
    with pytest.raises(ValueError, match="solver='euler' runs the official sampler"):
        pipe(**kwargs, solver="euler", time_grid="uniform")
    with pytest.raises(ValueError, match="either `sigmas` or `num_inference_steps`"):
        pipe(**kwargs, sigmas=[1.0, 0.5])
    for bad in ([1.0, 0.5, 0.7], [1.5, 0.5], [1.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="`sigmas` must decrease strictly within"):
            pipe([1], sigmas=bad, output_type="latent")
    with pytest.raises(TypeError, match="`sigmas` must be a sequence of floats"):
        pipe([1], sigmas=["a"], output_type="latent")
