"""dc_ae_hf.pipelines.sampling: the official ODE samplers and CFG reproduced on the usit_a fixture."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import fixture_path
from helpers import official_usit
from safetensors.torch import load_file
from torchdiffeq import odeint

from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines.sampling import flow_time_grid, guided_velocity, make_ode_func, sample_ode

TOL = dict(atol=1e-5, rtol=1e-5)
# Fixture grid: official num_inference_steps=9 grid points = 8 steps = our num_inference_steps=8.
STEPS = 8


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(fixture_path("usit_a.io.safetensors"))


@pytest.fixture(scope="module")
def model() -> USiTTransformer2DModel:
    return official_usit()


class CountingModel(torch.nn.Module):
    """Wraps a model and records the batch size and labels of every call (the official count_nfe)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.calls = model, model.config, []

    def forward(self, x, t, y):
        self.calls.append((x.shape[0], float(t[0]), y.tolist()))
        return self.model(x, t, y)


def test_cfg_velocity_matches_official(model, io):
    counting = CountingModel(model)
    with torch.no_grad():
        guided = guided_velocity(counting, io["x_t"], io["t"], io["cfg_labels"], guidance_scale=1.5)
    torch.testing.assert_close(guided, io["velocity_cfg"], **TOL)
    # one call on the doubled batch, null class = num_classes (10) read from the config
    assert len(counting.calls) == 1 and counting.calls[0][0] == 6 and counting.calls[0][2][3:] == [10, 10, 10]


@pytest.mark.parametrize(
    "solver, noise, expected, nfe",
    [
        ("euler", "sample_noise", "sample_euler", 8),
        ("heun2", "sample_noise", "sample_heun2", 16),
        ("heun2", "sample_noise_c8", "sample_heun2_c8", 16),
    ],
)
def test_fixed_grid_samplers_match_official(model, io, solver, noise, expected, nfe):
    counting = CountingModel(model)
    with torch.no_grad():
        sample = sample_ode(counting, io[noise], io["sample_labels"], solver, STEPS, guidance_scale=1.5)
    torch.testing.assert_close(sample, io[expected], **TOL)
    assert len(counting.calls) == nfe  # usit_a.json model_calls_counted
    assert all(batch == 4 for batch, _, _ in counting.calls)  # CFG-doubled batch of 2
    if solver == "euler":  # Euler evaluates t_k = k / 8 and never t = 1
        assert [t for _, t, _ in counting.calls] == pytest.approx([k / 8 for k in range(8)])


def test_dopri5_matches_official(model, io):
    counting = CountingModel(model)
    with torch.no_grad():
        sample = sample_ode(counting, io["sample_noise"], io["sample_labels"], "dopri5", guidance_scale=1.5)
    torch.testing.assert_close(sample, io["sample_dopri5"], atol=1e-3, rtol=1e-3)
    assert len(counting.calls) == 20  # usit_a.json: 20 model calls (adaptive)


def test_per_step_loop_equals_one_odeint_call(model, io):
    # sample_ode runs one odeint call per grid interval; that is the same computation as one call over the grid.
    func = make_ode_func(model, io["sample_labels"], guidance_scale=1.5)
    with torch.no_grad():
        whole = odeint(func, io["sample_noise"], flow_time_grid(4), method="heun2")[-1]
        stepped = sample_ode(model, io["sample_noise"], io["sample_labels"], "heun2", 4, guidance_scale=1.5)
    torch.testing.assert_close(stepped, whole, rtol=0, atol=0)


def test_guidance_interval_semantics(model, io):
    x, y = io["x_t"][:2], io["cfg_labels"][:2]
    null = torch.full_like(y, 10)
    with torch.no_grad():
        for t in (0.1, 0.5, 0.9):
            tt = torch.full((2,), t)
            cond, uncond = model(x, tt, y).sample, model(x, tt, null).sample
            guided = guided_velocity(model, x, tt, y, 3.0, guidance_interval=(0.2, 0.8))
            expected = uncond + 3.0 * (cond - uncond) if 0.2 <= t <= 0.8 else cond  # official: scale 1 outside
            torch.testing.assert_close(guided, expected, **TOL)
        # per-sample flow times: each sample uses its own scale
        mixed = guided_velocity(model, x, torch.tensor([0.1, 0.5]), y, 3.0, guidance_interval=(0.2, 0.8))
        inside = guided_velocity(model, x, torch.tensor([0.5, 0.5]), y, 3.0)
        outside = model(x, torch.tensor([0.1, 0.1]), y).sample
        torch.testing.assert_close(mixed[1], inside[1], **TOL)
        torch.testing.assert_close(mixed[0], outside[0], **TOL)


def test_official_doubled_state_equals_the_plain_state(model, io):
    # The official generate() integrates [x, x] and writes the guided velocity into both halves; integrating x alone
    # (what sample_ode does) is the same computation.
    labels = io["sample_labels"]
    guided = make_ode_func(model, labels, guidance_scale=1.5)

    def doubled(t, state):
        v = guided(t, state[: state.shape[0] // 2])
        return torch.cat([v, v])

    with torch.no_grad():
        for solver in ("euler", "heun2"):
            official = odeint(doubled, torch.cat([io["sample_noise"]] * 2), flow_time_grid(4), method=solver)[-1]
            ours = sample_ode(model, io["sample_noise"], labels, solver, 4, guidance_scale=1.5)
            torch.testing.assert_close(ours, official[:2], rtol=0, atol=0)


def test_guidance_interval_computes_only_the_conditional_batch_outside(model, io):
    # Guidance on half of the flow-time range: steps outside run B samples instead of 2B (4 + 2 * 4 = 12 of 16 sample
    # evaluations with 8 Euler steps: 1.33x less transformer work), with the official numbers (scale 1 outside).
    counting = CountingModel(model)
    noise, labels = io["sample_noise"], io["sample_labels"]
    with torch.no_grad():
        everywhere = sample_ode(counting, noise, labels, "euler", STEPS, guidance_scale=1.5)
        work_everywhere = sum(batch for batch, _, _ in counting.calls)
        counting.calls.clear()
        half = sample_ode(counting, noise, labels, "euler", STEPS, guidance_scale=1.5, guidance_interval=(0.5, 1.0))
        work_half = sum(batch for batch, _, _ in counting.calls)
    assert [batch for batch, _, _ in counting.calls] == [2, 2, 2, 2, 4, 4, 4, 4]  # t = 0, 1/8, ..., 7/8
    assert work_everywhere / work_half == pytest.approx(4 / 3)
    # the same numbers as guiding with scale 1 outside the interval on the doubled batch (official)
    expected = noise
    with torch.no_grad():
        for t in flow_time_grid(STEPS)[:-1].tolist():
            tt, null = torch.full((2,), t), torch.full_like(labels, 10)
            out = model(torch.cat([expected, expected]), torch.cat([tt, tt]), torch.cat([labels, null])).sample
            cond, uncond = out.chunk(2)
            scale = 1.5 if 0.5 <= t <= 1.0 else 1.0
            expected = expected + (uncond + scale * (cond - uncond)) / STEPS
    torch.testing.assert_close(half, expected, **TOL)
    assert not torch.allclose(half, everywhere)


def test_guidance_scale_may_change_between_steps(model, io):
    # A callable scale is read at every evaluation: guidance off (scale 1) from step 2 on runs the conditional batch.
    counting = CountingModel(model)
    noise, labels = io["sample_noise"], io["sample_labels"]
    scale = {"value": 1.5}

    def turn_off(i, t, x):
        if i == 1:
            scale["value"] = 1.0

    with torch.no_grad():
        dynamic = sample_ode(counting, noise, labels, "euler", 4, lambda: scale["value"], step_callback=turn_off)
        two_guided = sample_ode(model, noise, labels, "euler", 4, 1.5, step_callback=lambda i, t, x: None)
    assert [batch for batch, _, _ in counting.calls] == [4, 4, 2, 2]
    # steps 0-1 guided, steps 2-3 conditional only
    with torch.no_grad():
        x = noise
        for k, t in enumerate(flow_time_grid(4)[:-1].tolist()):
            x = x + guided_velocity(model, x, t, labels, 1.5 if k < 2 else 1.0) / 4
    torch.testing.assert_close(dynamic, x, **TOL)
    assert not torch.allclose(dynamic, two_guided)


def test_no_guidance_runs_the_plain_batch(model, io):
    counting = CountingModel(model)
    with torch.no_grad():
        sample = sample_ode(counting, io["sample_noise"], io["sample_labels"], "euler", 2, guidance_scale=1.0)
    assert [batch for batch, _, _ in counting.calls] == [2, 2]
    assert sample.shape == io["sample_noise"].shape


def test_step_callback_sees_and_replaces_latents(model, io):
    seen = []

    def callback(i, t, x):
        seen.append((i, t, x.shape))
        return torch.zeros_like(x) if i == 2 else None

    with torch.no_grad():
        sample = sample_ode(model, io["sample_noise"], io["sample_labels"], "euler", 3, 1.5, step_callback=callback)
    assert seen == [
        (0, 0.0, (2, 16, 4, 4)),
        (1, pytest.approx(1 / 3), (2, 16, 4, 4)),
        (2, pytest.approx(2 / 3), (2, 16, 4, 4)),
    ]
    assert torch.count_nonzero(sample) == 0


def test_bad_arguments(model, io):
    noise, labels = io["sample_noise"], io["sample_labels"]
    with pytest.raises(ValueError, match="rk4"):
        sample_ode(model, noise, labels, "rk4", 4)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sample_ode(model, noise, labels, "euler", 0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sample_ode(model, noise, labels, "heun2")
    for interval in ((0.8, 0.2), (-0.1, 0.5), (0.5,), "ab"):
        with pytest.raises(ValueError, match="guidance_interval"):
            sample_ode(model, noise, labels, "euler", 2, 1.5, guidance_interval=interval)
    with pytest.raises(ValueError, match="step_callback"):
        sample_ode(model, noise, labels, "dopri5", step_callback=lambda i, t, x: None)
    with pytest.raises(ValueError, match="class_labels"):
        sample_ode(model, noise, labels[:1], "euler", 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_euler_is_bit_identical_to_torchdiffeq_euler(model, io, dtype):
    # sample_ode's euler is written out (no torchdiffeq); torchdiffeq's euler over the same grid gives the same bits,
    # with guidance, a guidance interval and a callback that edits the latents between steps.
    labels = io["sample_labels"]
    noise = io["sample_noise"].to(dtype)
    mixed = model.to(dtype)
    func = make_ode_func(mixed, labels, guidance_scale=1.5, guidance_interval=(0.25, 0.75))
    grid = flow_time_grid(5)

    def halve_at_step_1(i, t, x):
        return x / 2 if i == 1 else None

    try:
        with torch.no_grad():
            ours = sample_ode(mixed, noise, labels, "euler", 5, 1.5, (0.25, 0.75), step_callback=halve_at_step_1)
            reference = noise
            for i in range(5):
                reference = odeint(func, reference, grid[i : i + 2], method="euler", atol=[1e-6], rtol=[1e-3])[-1]
                reference = reference / 2 if i == 1 else reference
            plain = sample_ode(mixed, noise, labels, "euler", 5, 1.5)
            whole = odeint(make_ode_func(mixed, labels, guidance_scale=1.5), noise, grid, method="euler")[-1]
    finally:
        model.float()
    assert ours.dtype == dtype and torch.equal(ours, reference)
    assert torch.equal(plain, whole)


def test_torchdiffeq_is_needed_by_heun2_and_dopri5_only(model, io, monkeypatch):
    noise, labels = io["sample_noise"], io["sample_labels"]
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # makes `import torchdiffeq` fail
    with torch.no_grad():
        sample = sample_ode(model, noise, labels, "euler", 2, guidance_scale=1.5)
    assert sample.shape == noise.shape
    for solver, steps in (("heun2", 2), ("dopri5", None)):
        with pytest.raises(ImportError, match=rf"solver='{solver}' needs torchdiffeq.*pip install torchdiffeq"):
            sample_ode(model, noise, labels, solver, steps)


def test_importing_the_samplers_does_not_import_torchdiffeq():
    check = "import sys, dc_ae_hf, dc_ae_hf.pipelines.sampling; print('torchdiffeq' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
