"""Official USiT ODE samplers (SiT flow time: t = 0 noise -> t = 1 data) and classifier-free guidance.

Official code: ``dc_gen/c2icore/diffusioncore/models/base.py`` (``forward_with_cfg``, ``generate``) and
``dc_gen/c2icore/diffusioncore/models/sit_sampler/{transport,integrators}.py`` (``Sampler.sample_ode`` ->
``torchdiffeq.odeint`` on ``torch.linspace(0, 1, num_steps)``). ``heun2`` and ``dopri5`` are torchdiffeq's own
solvers, imported when first used (torchdiffeq is needed for them only); ``euler`` is written out here with the
exact arithmetic of torchdiffeq's (bit-identical, tested), so it needs nothing beyond torch. Results match the
official sampler up to floating-point noise.

Conventions here:
- ``num_inference_steps`` is the number of solver steps N on the grid ``linspace(0, 1, N + 1)`` (the official
  ``num_steps`` counts grid points, i.e. official 9 == N = 8 here). Euler makes N model calls (none at t = 1),
  heun2 makes 2N; dopri5 is adaptive (atol 1e-6, rtol 1e-3) and needs no step count.
- With guidance (scale != 1) the model runs on the doubled batch [x, x] with labels [y, null] (official
  ``forward_with_cfg``). The official ``generate`` also integrates the doubled state and writes the guided velocity
  into both halves; the two halves are then identical at every step, so integrating the batch x alone is the same
  computation (torchdiffeq's RMS error norm over [x, x] equals the one over x). Doing so lets the guidance scale change
  between steps (``guidance_scale`` may be a callable, read at every model evaluation) and lets a step without
  guidance run the conditional batch only. The adaptive dopri5 error norm is taken over the whole batch, so dopri5
  results depend on the batch composition (as in the official sampler).
- Outside a guidance interval the official sampler sets the scale to 1, which is the conditional velocity: only the
  conditional batch is computed there (same numbers, half the transformer work).

These are plain functions used by ``DCAE15Pipeline`` and by the trainers' sample/eval code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from dc_ae_hf.checks import check_guidance_interval
from dc_ae_hf.choices import SOLVERS, TIME_GRIDS

# The "dense_ends" grid: relative step density on flow-time intervals (t_start, t_end, density). The guided velocity
# of a USiT varies fastest near noise and near data: the adaptive dopri5 sampler spends most of its steps there, and
# a fixed step's local error is largest there. The weights were chosen with a step density proportional to the cube
# root of a second-order step's local error along exact trajectories of the bundled toy pipeline (one batch, seed 0):
# 42% of the steps in the first 20% of the time, 24% in the last 15%. Accuracy per call, on other batches:
# docs/benchmarks.md (benchmarks/bench_sampling_calls.py).
DENSE_ENDS_DENSITY = ((0.0, 0.2, 4.0), (0.2, 0.85, 1.0), (0.85, 1.0, 3.0))
# A velocity model: (x (B, C, H, W), t (B,), labels (B,)) -> velocity tensor or an output with `.sample`.
VelocityModel = Callable[..., object]
StepCallback = Callable[[int, float, torch.Tensor], torch.Tensor | None]
# A guidance scale, or a function returning the current one (read at every model evaluation: dynamic guidance).
GuidanceScale = float | Callable[[], float]


def _model_velocity(model: VelocityModel, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    dtype = next(model.parameters()).dtype if isinstance(model, torch.nn.Module) else x.dtype
    out = model(x.to(dtype), t, labels)
    out = out.sample if hasattr(out, "sample") else out
    return out.to(x.dtype)


def guided_velocity(
    model: VelocityModel,
    x: torch.Tensor,
    t: torch.Tensor | float,
    class_labels: torch.Tensor,
    guidance_scale: float = 1.0,
    guidance_interval: Sequence[float] | None = None,
    null_class_id: int | None = None,
) -> torch.Tensor:
    """Classifier-free guided velocity for a (non-doubled) batch (official ``forward_with_cfg``).

    Runs the model once on [x, x] with labels [y, null] and returns ``uncond + s * (cond - uncond)`` on all
    channels, shape of ``x``. With ``guidance_interval=(t_lo, t_hi)`` the scale is only applied where
    t_lo <= t <= t_hi; outside it the official code sets the scale to 1 (``use_guidance_interval``), i.e. the
    conditional velocity. A scale of 1 (given, or for every sample outside the interval) runs the conditional batch
    only (official ``generate`` skips the doubling at scale 1). ``null_class_id`` defaults to
    ``model.config.num_classes``.
    """
    b = x.shape[0]
    t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
    t = t.expand(b) if t.ndim == 0 else t
    scale = torch.full((b,), float(guidance_scale), device=x.device)
    interval = check_guidance_interval(guidance_interval)
    if interval is not None and guidance_scale != 1.0:  # official: cfg_scale = 1.0 outside [t_min, t_max]
        inside = (t >= interval[0]) & (t <= interval[1])
        if not bool(inside.any()):  # one host read per step, in the sampler (not in the model's forward)
            guidance_scale = 1.0
        scale = torch.where(inside, scale, torch.ones_like(scale))
    if guidance_scale == 1.0:
        return _model_velocity(model, x, t, class_labels)
    if null_class_id is None:
        null_class_id = model.config.num_classes
    null = torch.full_like(class_labels, null_class_id)
    out = _model_velocity(model, torch.cat([x, x]), torch.cat([t, t]), torch.cat([class_labels, null]))
    cond, uncond = out.chunk(2)  # each (B, c', H, W)
    return uncond + scale.to(out.dtype).view(b, 1, 1, 1) * (cond - uncond)


def make_ode_func(
    model: VelocityModel,
    class_labels: torch.Tensor,
    guidance_scale: GuidanceScale = 1.0,
    guidance_interval: Sequence[float] | None = None,
    null_class_id: int | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The torchdiffeq right-hand side ``f(t, x)`` of the official sampler, on the non-doubled batch x.

    ``guidance_scale`` may be a callable returning the current scale; it is read at every evaluation.
    """
    current_scale = guidance_scale if callable(guidance_scale) else lambda: guidance_scale

    def func(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t_vec = torch.ones(x.shape[0], device=x.device) * t  # official integrators.ode.sample._fn
        return guided_velocity(model, x, t_vec, class_labels, current_scale(), guidance_interval, null_class_id)

    return func


def _torchdiffeq_odeint(solver: str) -> Callable:
    """``torchdiffeq.odeint``, imported on first use: only heun2 and dopri5 need it."""
    try:
        # importlib rather than an import statement: diffusers' remote-code loader scans generated files for import
        # statements and would warn about torchdiffeq on every load, although euler and the schedulers never use it
        return importlib.import_module("torchdiffeq").odeint
    except ImportError as error:
        raise ImportError(
            f"solver={solver!r} needs torchdiffeq, which is not installed: pip install torchdiffeq (solver='euler' "
            "and the diffusers schedulers work without it)"
        ) from error


def _euler_step(func: Callable, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """One explicit Euler step ``x + (t1 - t0) * f(t0, x)`` from grid point t0 to t1 (0-d tensors), with the exact
    arithmetic of torchdiffeq's ``euler`` (``FixedGridODESolver``: dt = t1 - t0 in the grid's dtype, ``f`` called with
    the time cast to the state's dtype, then ``y0 + dt * f0``), so both give bit-identical results."""
    return x + (t1 - t0) * func(t0.to(x.dtype), x)


def flow_time_grid(num_inference_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``torch.linspace(0, 1, N + 1)`` in float32 (the official grid with N + 1 points)."""
    if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool) or num_inference_steps < 1:
        raise ValueError(f"`num_inference_steps` must be an int >= 1, got {num_inference_steps!r}.")
    return torch.linspace(0, 1, num_inference_steps + 1, device=device)


def flow_sigmas(num_inference_steps: int, time_grid: str = "dense_ends") -> np.ndarray:
    """The N sigmas ``1 = sigma_0 > ... > sigma_{N-1} > 0`` to pass to a diffusers flow scheduler's ``set_timesteps``.

    diffusers' convention: sigma = 1 - t (1 is noise), the scheduler appends the terminal sigma 0, and its N steps end
    at t = 1. ``time_grid="uniform"`` is the official grid ``linspace(0, 1, N + 1)`` (as ``flow_time_grid``, float32
    values); ``"dense_ends"`` places the grid points by ``DENSE_ENDS_DENSITY``, denser near noise and data.
    """
    flow_time_grid(num_inference_steps)  # validates num_inference_steps
    if time_grid == "uniform":
        return (1.0 - flow_time_grid(num_inference_steps)[:-1]).double().numpy()
    if time_grid != "dense_ends":
        raise ValueError(f"Unknown time_grid {time_grid!r}; valid time grids: {list(TIME_GRIDS)}.")
    edges = np.array([DENSE_ENDS_DENSITY[0][0]] + [end for _, end, _ in DENSE_ENDS_DENSITY])
    mass = np.array([(end - start) * density for start, end, density in DENSE_ENDS_DENSITY])
    cumulative = np.concatenate([[0.0], np.cumsum(mass)]) / mass.sum()
    t = np.interp(np.linspace(0.0, 1.0, num_inference_steps + 1), cumulative, edges)  # inverse of the grid's CDF
    return 1.0 - t[:-1]


def sample_ode(
    model: VelocityModel,
    noise: torch.Tensor,
    class_labels: torch.Tensor,
    solver: str = "dopri5",
    num_inference_steps: int | None = None,
    guidance_scale: GuidanceScale = 1.0,
    guidance_interval: Sequence[float] | None = None,
    null_class_id: int | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-3,
    step_callback: StepCallback | None = None,
) -> torch.Tensor:
    """Integrate the USiT probability-flow ODE from ``noise`` at t = 0 to t = 1 (official ``Sampler.sample_ode``).

    Args:
        model: velocity model called as ``model(x, t, labels)`` (e.g. ``USiTTransformer2DModel``).
        noise: starting latents x_0, shape (B, c', H, W); the model must accept c' channels.
        class_labels: int64 labels (B,).
        solver: ``"euler"`` or ``"heun2"`` (fixed grid ``linspace(0, 1, N + 1)``) or ``"dopri5"`` (adaptive).
        num_inference_steps: N, required for the fixed-grid solvers, ignored by dopri5.
        guidance_scale, guidance_interval, null_class_id: classifier-free guidance (``guided_velocity``);
            ``guidance_scale`` may be a callable returning the current scale (read at every model evaluation).
        atol, rtol: dopri5 tolerances (official 1e-6 / 1e-3).
        step_callback: fixed-grid solvers only: called after step i (which started at flow time t_i) as
            ``step_callback(i, t_i, x)`` with the latents; a returned tensor replaces them.

    Returns:
        the latents at t = 1, shape of ``noise``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"Unknown solver {solver!r}; valid solvers: {list(SOLVERS)}.")
    check_guidance_interval(guidance_interval)
    if noise.ndim != 4 or class_labels.shape != (noise.shape[0],):
        raise ValueError(
            f"`noise` must be (B, C, H, W) and `class_labels` (B,); got {tuple(noise.shape)} and "
            f"{tuple(class_labels.shape)}."
        )
    func = make_ode_func(model, class_labels, guidance_scale, guidance_interval, null_class_id)
    tol = dict(atol=[atol], rtol=[rtol])  # lists, exactly as the official integrators.ode passes them

    if solver == "dopri5":
        if step_callback is not None:
            raise ValueError("`step_callback` is not supported with solver='dopri5' (its steps are adaptive).")
        # The output grid only selects interpolation points, so [0, 1] gives the official t = 1 state.
        grid = torch.tensor([0.0, 1.0], device=noise.device)
        return _torchdiffeq_odeint(solver)(func, noise, grid, method="dopri5", **tol)[-1]
    if num_inference_steps is None:
        raise ValueError(f"`num_inference_steps` is required for solver={solver!r}.")
    grid = flow_time_grid(num_inference_steps, device=noise.device)
    odeint = _torchdiffeq_odeint(solver) if solver == "heun2" else None
    # One step (one odeint call) per grid interval is the same computation as one call over the whole grid
    # (fixed-grid solvers carry no state between steps); it lets callers observe or edit the latents between steps.
    x = noise
    for i in range(num_inference_steps):
        if solver == "euler":
            x = _euler_step(func, x, grid[i], grid[i + 1])
        else:
            x = odeint(func, x, grid[i : i + 2], method=solver, **tol)[-1]
        if step_callback is not None:
            new = step_callback(i, float(grid[i]), x)
            x = x if new is None else new
    return x
