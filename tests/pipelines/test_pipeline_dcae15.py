"""DCAE15Pipeline: official-sampler parity, serialization (local + offline Hub cache), outputs, labels, errors."""

from __future__ import annotations

import shutil
import warnings

import huggingface_hub
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, TINY_AE10_CONFIG, TINY_AE15_CONFIG, fixture_path
from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from helpers import official_usit
from PIL import Image
from safetensors.torch import load_file

from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines import GuidanceCutoffCallback
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline, default_scheduler, load_imagenet_id2label
from dc_ae_hf.pipelines.sampling import flow_sigmas

TOL = dict(atol=1e-5, rtol=1e-5)
# DiT-style id2label with comma-separated synonyms (the usit_a transformer has 10 classes).
ID2LABEL = {i: f"class {i}" for i in range(10)}
ID2LABEL[2] = "great white shark, white shark, man-eater"
ID2LABEL[7] = "Golden Retriever"


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(fixture_path("usit_a.io.safetensors"))


@pytest.fixture(scope="module")
def pipe() -> DCAE15Pipeline:
    transformer = official_usit()
    torch.manual_seed(0)
    vae = AutoencoderDC15(**TINY_AE15_CONFIG).eval()  # latent 16 channels, f8: 4x4 latents -> 32x32 images
    pipe = DCAE15Pipeline(transformer=transformer, vae=vae, id2label=ID2LABEL)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def latents_of(pipe, **kwargs) -> torch.Tensor:
    return pipe(**{"guidance_scale": 1.5, "num_inference_steps": 4, "output_type": "latent", **kwargs}).images


@pytest.mark.parametrize(
    "solver, noise, expected",
    [
        ("euler", "sample_noise", "sample_euler"),
        ("heun2", "sample_noise", "sample_heun2"),
        ("heun2", "sample_noise_c8", "sample_heun2_c8"),
        ("FlowMatchEulerDiscreteScheduler", "sample_noise", "sample_euler"),
    ],
)
def test_pipeline_reproduces_official_samplers(pipe, io, solver, noise, expected):
    # official num_inference_steps=9 grid points = 8 steps here; diffusers' FlowMatchEuler scheduler on the uniform
    # time grid runs on sigma = 1 - t over the same grid, so it reproduces the official Euler sampler too
    labels = io["sample_labels"].tolist()
    kwargs = dict(solver=solver)
    if solver == "FlowMatchEulerDiscreteScheduler":
        pipe = DCAE15Pipeline(**{**pipe.components, "scheduler": FlowMatchEulerDiscreteScheduler()})
        pipe.set_progress_bar_config(disable=True)
        kwargs = dict(solver=None, time_grid="uniform")
    out = latents_of(pipe, class_labels=labels, latents=io[noise], num_inference_steps=8, **kwargs)
    torch.testing.assert_close(out, io[expected], **TOL)


def test_pipeline_dopri5_matches_official(pipe, io):
    out = latents_of(pipe, class_labels=io["sample_labels"].tolist(), latents=io["sample_noise"], solver="dopri5")
    torch.testing.assert_close(out, io["sample_dopri5"], atol=1e-3, rtol=1e-3)


def test_cfg_uses_the_null_class_from_the_config(pipe):
    seen = []
    hook = pipe.transformer.register_forward_pre_hook(lambda module, args: seen.append(args[2].tolist()))
    try:
        latents_of(pipe, class_labels=[3, 4], num_inference_steps=1)
    finally:
        hook.remove()
    assert seen == [[3, 4, 10, 10]]  # num_classes = 10 -> null id 10


def test_guidance_interval(pipe):
    kwargs = dict(class_labels=[1, 2], latents=torch.randn(2, 16, 4, 4), solver="euler")
    guided = latents_of(pipe, **kwargs)
    torch.testing.assert_close(latents_of(pipe, guidance_interval=(0.0, 1.0), **kwargs), guided, rtol=0, atol=0)
    # Euler with 4 steps evaluates t = 0, .25, .5, .75: an interval past them all means no guidance at all
    outside = latents_of(pipe, guidance_interval=(0.9, 1.0), **kwargs)
    torch.testing.assert_close(outside, latents_of(pipe, **{**kwargs, "guidance_scale": 1.0}), **TOL)
    assert (outside - guided).abs().max() > 1e-3


def test_save_load_local(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = DCAE15Pipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.transformer, USiTTransformer2DModel) and isinstance(loaded.vae, AutoencoderDC15)
    assert pipe.scheduler is None and loaded.scheduler is None  # optional: stays None through save -> load
    assert loaded.get_label_ids("white shark") == [2]  # id2label went through model_index.json
    kwargs = dict(class_labels=[1, "golden retriever"], latents=torch.randn(2, 16, 4, 4), output_type="np")
    np.testing.assert_array_equal(loaded(**kwargs).images, pipe(**kwargs).images)
    # an explicit scheduler is saved and loaded, and gives the same samples as the default one
    with_scheduler = DCAE15Pipeline(**{**pipe.components, "scheduler": default_scheduler()}, id2label=ID2LABEL)
    with_scheduler.save_pretrained(tmp_path / "explicit")
    reloaded = DCAE15Pipeline.from_pretrained(tmp_path / "explicit")
    reloaded.set_progress_bar_config(disable=True)
    assert isinstance(reloaded.scheduler, UniPCMultistepScheduler)
    np.testing.assert_allclose(reloaded(**kwargs).images, pipe(**kwargs).images, atol=1e-6)


def test_optional_scheduler_set_to_none(pipe, tmp_path):
    # diffusers' PipelineTesterMixin.test_save_load_optional_components semantics
    explicit = DCAE15Pipeline(**{**pipe.components, "scheduler": default_scheduler()})
    explicit.set_progress_bar_config(disable=True)
    kwargs = dict(class_labels=[3], latents=torch.randn(1, 16, 4, 4), output_type="np", num_inference_steps=3)
    reference = explicit(**kwargs).images
    explicit.scheduler = None
    without = explicit(**kwargs).images  # resolved at call time: default_scheduler()
    explicit.save_pretrained(tmp_path)
    loaded = DCAE15Pipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.scheduler is None
    np.testing.assert_allclose(without, reference, atol=1e-6)
    np.testing.assert_allclose(loaded(**kwargs).images, reference, atol=1e-6)


def test_load_from_hub_repo_id_offline(pipe, tmp_path, monkeypatch):
    # a Hugging Face cache folder laid out like a real download of "dc-ai/tiny-dcae15"
    cache = tmp_path / "hub"
    repo = cache / "models--dc-ai--tiny-dcae15"
    commit = "0123456789abcdef0123456789abcdef01234567"
    pipe.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    loaded = DCAE15Pipeline.from_pretrained("dc-ai/tiny-dcae15")
    loaded.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(
        latents_of(loaded, class_labels=[5], latents=latents), latents_of(pipe, class_labels=[5], latents=latents)
    )
    shutil.rmtree(repo / "snapshots")
    with pytest.raises(Exception):  # noqa: B017 - huggingface_hub's offline "not in cache" error
        DCAE15Pipeline.from_pretrained("dc-ai/tiny-dcae15")


def test_generator_determinism_and_batch_consistency(pipe):
    def run(labels, seed):
        return latents_of(pipe, class_labels=labels, generator=torch.Generator().manual_seed(seed), solver="euler")

    a, b, c = run([1, 2, 3], 0), run([1, 2, 3], 0), run([1, 2, 3], 1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3
    latents = torch.randn(3, 16, 4, 4)
    batch = latents_of(pipe, class_labels=[1, 2, 3], latents=latents, solver="heun2")
    for i, label in enumerate([1, 2, 3]):
        single = latents_of(pipe, class_labels=[label], latents=latents[i : i + 1], solver="heun2")
        torch.testing.assert_close(single[0], batch[i], **TOL)
    generators = [torch.Generator().manual_seed(s) for s in (7, 8)]
    pair = latents_of(pipe, class_labels=[1, 2], generator=generators)
    alone = latents_of(pipe, class_labels=[2], generator=[torch.Generator().manual_seed(8)])
    torch.testing.assert_close(pair[1], alone[0], **TOL)


def test_output_types(pipe):
    def run(output_type, **kwargs):
        generator = torch.Generator().manual_seed(0)
        return pipe([0, 9], num_inference_steps=2, generator=generator, output_type=output_type, **kwargs)

    pil = run("pil").images
    assert len(pil) == 2 and all(isinstance(im, Image.Image) and im.size == (32, 32) for im in pil)
    array = run("np").images
    assert array.shape == (2, 32, 32, 3) and array.min() >= 0 and array.max() <= 1
    np.testing.assert_array_equal(np.asarray(pil[1]), (array[1] * 255).round().astype(np.uint8))
    tensor = run("pt").images
    assert tensor.shape == (2, 3, 32, 32)
    latent = run("latent").images
    assert latent.shape == (2, 16, 4, 4)
    # images = decode(latent / scaling_factor) mapped from [-1, 1] to [0, 1]
    with torch.no_grad():
        decoded = pipe.vae.decode(latent / TINY_AE15_CONFIG["scaling_factor"]).sample
    torch.testing.assert_close(tensor, (decoded / 2 + 0.5).clamp(0, 1), **TOL)
    (images,) = run("latent", return_dict=False)
    torch.testing.assert_close(images, latent, rtol=0, atol=0)


@pytest.mark.parametrize("solver", [None, "euler", "heun2"])
def test_callback_on_step_end(pipe, solver):
    calls = []

    def callback(pipeline, i, t, callback_kwargs):
        calls.append((i, float(t)))
        assert pipeline is pipe and callback_kwargs["latents"].shape == (2, 16, 4, 4)
        return {"latents": torch.zeros_like(callback_kwargs["latents"])} if i == 2 else {}

    out = latents_of(pipe, class_labels=[1, 2], num_inference_steps=3, solver=solver, callback_on_step_end=callback)
    assert [i for i, _ in calls] == [0, 1, 2]
    # the scheduler passes its timestep (UniPC: int(sigma * 1000) on the dense_ends grid), the solvers the flow time
    # the step started at
    scheduler = default_scheduler()
    scheduler.set_timesteps(sigmas=flow_sigmas(3))
    expected_t = scheduler.timesteps.tolist() if solver is None else [0.0, 1 / 3, 2 / 3]
    assert [t for _, t in calls] == pytest.approx(expected_t, rel=1e-5)
    assert torch.count_nonzero(out) == 0  # the replaced latents are the result of the last step


class BatchCounter:
    """Records the batch size of every transformer call."""

    def __init__(self, model):
        self.sizes = []
        self.handle = model.register_forward_pre_hook(lambda module, args: self.sizes.append(args[0].shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("solver", [None, "euler", "heun2"])
def test_callback_can_turn_guidance_off(pipe, solver):
    # A callback setting pipe._guidance_scale = 1 after step k - 1 (diffusers' CFG-cutoff callbacks work this way)
    # gives the unguided velocity from step k on and no unconditional batch any more. The rerun by hand below holds
    # for one-step methods; a multistep scheduler (the default UniPC) also carries the earlier velocities.
    if solver is None:
        pipe = DCAE15Pipeline(**{**pipe.components, "scheduler": FlowMatchEulerDiscreteScheduler()})
        pipe.set_progress_bar_config(disable=True)
    k, steps, latents = 2, 4, torch.randn(2, 16, 4, 4)

    def cutoff(pipeline, i, t, callback_kwargs):
        if i == k - 1:
            pipeline._guidance_scale = 1.0
        return {}

    def run(**kwargs):
        return latents_of(
            pipe, class_labels=[1, 2], latents=latents, num_inference_steps=steps, solver=solver, **kwargs
        )

    with BatchCounter(pipe.transformer) as counter:
        dynamic = run(guidance_scale=3.0, callback_on_step_end=cutoff)
    calls_per_step = 2 if solver == "heun2" else 1
    assert counter.sizes == [4] * (k * calls_per_step) + [2] * ((steps - k) * calls_per_step)
    assert pipe.guidance_scale == 1.0  # reports the value the callback set

    # the same run by hand: k guided steps, then the remaining steps unguided, from the intermediate latents
    first = {}

    def keep(pipeline, i, t, callback_kwargs):
        if i == k - 1:
            first["latents"] = callback_kwargs["latents"].clone()
        return {}

    guided = run(guidance_scale=3.0, callback_on_step_end=keep)
    assert (guided - dynamic).abs().max() > 1e-3

    def replace_at_k(pipeline, i, t, callback_kwargs):  # rerun unguided, injecting the guided latents after step k-1
        if i == k - 1:
            return {"latents": first["latents"]}
        return {}

    unguided_rest = run(guidance_scale=1.0, callback_on_step_end=replace_at_k)
    torch.testing.assert_close(dynamic, unguided_rest, **TOL)


@pytest.mark.parametrize("solver", [None, "heun2"])
def test_guidance_cutoff_callback(pipe, solver):
    latents = torch.randn(2, 16, 4, 4)
    kwargs = dict(class_labels=[1, 2], latents=latents, num_inference_steps=4, solver=solver, guidance_scale=3.0)

    def by_hand(pipeline, i, t, callback_kwargs):
        if i == 1:
            pipeline._guidance_scale = 1.0
        return {}

    expected = latents_of(pipe, callback_on_step_end=by_hand, **kwargs)
    for callback in (
        GuidanceCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1),
        GuidanceCutoffCallback(cutoff_step_ratio=0.25),
    ):
        with BatchCounter(pipe.transformer) as counter:
            out = latents_of(pipe, callback_on_step_end=callback, **kwargs)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        assert counter.sizes[-1] == 2 and counter.sizes[0] == 4


def test_guidance_interval_halves_the_unconditional_work(pipe):
    # Guidance on half of the flow-time range: 1.33x fewer transformer sample evaluations than guidance everywhere.
    kwargs = dict(class_labels=[1, 2], latents=torch.randn(2, 16, 4, 4), num_inference_steps=8)
    for solver in (None, "euler"):
        grid = {"time_grid": "uniform"} if solver is None else {}
        with BatchCounter(pipe.transformer) as everywhere:
            latents_of(pipe, solver=solver, **grid, **kwargs)
        with BatchCounter(pipe.transformer) as half:
            latents_of(pipe, solver=solver, guidance_interval=(0.5, 1.0), **grid, **kwargs)
        assert everywhere.sizes == [4] * 8 and half.sizes == [2] * 4 + [4] * 4
        assert sum(everywhere.sizes) / sum(half.sizes) == pytest.approx(4 / 3)


def test_class_label_forms(pipe):
    latents = torch.randn(3, 16, 4, 4)
    reference = latents_of(pipe, class_labels=[1, 2, 7], latents=latents, num_inference_steps=1)
    for form in (
        np.array([1, 2, 7]),
        [np.int64(1), np.int32(2), 7],
        torch.tensor([1, 2, 7]),
        [[1], [2], ["golden retriever"]],  # nested lists (diffusers' batch tests build these)
    ):
        out = latents_of(pipe, class_labels=form, latents=latents, num_inference_steps=1)
        torch.testing.assert_close(out, reference, rtol=0, atol=0)
    for bad in (np.array([1.0, 2.0]), torch.tensor([True]), [True], {1: 2}):
        with pytest.raises(TypeError, match="class_labels"):
            latents_of(pipe, class_labels=bad, num_inference_steps=1)


def test_model_cpu_offload_without_accelerator_runs_on_the_cpu(pipe):
    if torch.accelerator.is_available():
        pytest.fail("this test describes a machine without an accelerator")  # the CI machine has none
    offloaded = DCAE15Pipeline(**pipe.components)
    offloaded.set_progress_bar_config(disable=True)
    with pytest.warns(UserWarning, match="no accelerator"):
        offloaded.enable_model_cpu_offload()
    latents = torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(
        latents_of(offloaded, class_labels=[4], latents=latents), latents_of(pipe, class_labels=[4], latents=latents)
    )


def test_loading_errors_name_what_is_wrong(pipe, tmp_path):
    with pytest.raises(FileNotFoundError, match="No such local pipeline folder"):
        DCAE15Pipeline.from_pretrained(tmp_path / "typo")
    with pytest.raises(FileNotFoundError, match="No such local pipeline folder"):
        DCAE15Pipeline.from_pretrained("./converted/dc-ae-1.5")
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    with pytest.raises(ValueError, match="is a file"):
        DCAE15Pipeline.from_pretrained(folder / "model_index.json")
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"transformer/diffusion_pytorch_model\.safetensors' is truncated or corrupt"):
        DCAE15Pipeline.from_pretrained(folder)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        USiTTransformer2DModel.from_pretrained(folder / "transformer")
    weights.write_bytes(data)
    shutil.rmtree(folder / "vae")
    with pytest.raises(FileNotFoundError, match="missing its component 'vae'"):
        DCAE15Pipeline.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="No such local model folder"):
        AutoencoderDC15.from_pretrained(folder / "vae")
    with pytest.raises(FileNotFoundError, match="has no subfolder 'vae'"):
        AutoencoderDC15.from_pretrained(folder, subfolder="vae")


def test_latent_channels_must_be_a_trained_prefix(pipe):
    with pytest.raises(ValueError, match=r"latent_channels=6.*\[4, 8, 12, 16\]"):
        latents_of(pipe, class_labels=[1], latent_channels=6)
    with pytest.raises(ValueError, match=r"latent_channels=6.*\[4, 8, 12, 16\]"):
        latents_of(pipe, class_labels=[1], latents=torch.randn(1, 6, 4, 4))
    unstructured = AutoencoderDC15(**{**TINY_AE15_CONFIG, "latent_channel_choices": None}).eval()
    with pytest.raises(ValueError, match="is not structured"):
        latents_of(DCAE15Pipeline(pipe.transformer, unstructured), class_labels=[1], latent_channels=8)
    # the autoencoder itself decodes any prefix but says when it is not a trained one
    with pytest.warns(UserWarning, match=r"not one of this autoencoder's trained prefixes \[4, 8, 12, 16\]"):
        pipe.vae.decode(torch.zeros(1, 6, 4, 4))
    with pytest.warns(UserWarning, match="trained prefixes"):
        pipe.vae.encode(torch.zeros(1, 3, 32, 32), latent_channels=6)


def test_latent_channels_prefix(pipe):
    generator = torch.Generator().manual_seed(0)
    latent = latents_of(pipe, class_labels=[1, 2], latent_channels=8, generator=generator)
    assert latent.shape == (2, 8, 4, 4)
    generator = torch.Generator().manual_seed(0)
    images = pipe([1, 2], latent_channels=8, num_inference_steps=4, generator=generator, output_type="pt").images
    assert images.shape == (2, 3, 32, 32)
    with torch.no_grad():  # the prefix decodes like the zero-filled latent
        padded = F.pad(latent / TINY_AE15_CONFIG["scaling_factor"], (0, 0, 0, 0, 0, 8))
        expected = (pipe.vae.decode(padded).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(images, expected, **TOL)
    # a plain diffusers AutoencoderDC (no decoder input shortcut) decodes the same prefix identically
    config = {k: v for k, v in TINY_AE15_CONFIG.items() if k != "latent_channel_choices"}
    plain = AutoencoderDC(**config).eval()
    plain.load_state_dict(pipe.vae.state_dict())
    plain_pipe = DCAE15Pipeline(pipe.transformer, plain, pipe.scheduler)
    plain_pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    with pytest.warns(UserWarning, match="does not record which channel prefixes"):
        plain_images = plain_pipe(
            [1, 2], latent_channels=8, num_inference_steps=4, generator=generator, output_type="pt"
        )
    torch.testing.assert_close(plain_images.images, images, **TOL)


def test_latent_channels_the_vae_cannot_decode(pipe):
    """c' is checked once, at the call, with the vae's rule: a plain AutoencoderDC whose decoder has an input
    shortcut (DC-AE 1.0) cannot decode a prefix; its latents can still be returned."""
    torch.manual_seed(0)
    plain_10 = AutoencoderDC(**TINY_AE10_CONFIG).eval()  # 16 latent channels, f4
    plain_pipe = DCAE15Pipeline(pipe.transformer, plain_10)
    plain_pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError) as error:
        plain_pipe([1], latent_channels=8, num_inference_steps=1, output_type="pt")
    assert str(error.value) == (
        "latent_channels=8 < latent_channels=16, but this AutoencoderDC has latent shortcuts (decoder_in_shortcut="
        "True, a DC-AE 1.0 model): its decoder repeats latent channels into its stem, so it cannot decode a channel "
        "prefix. Use the full latent. (output_type='latent' returns the latents without decoding.)"
    )
    with pytest.raises(ValueError, match=r"^latents.shape\[1\]=8 < latent_channels=16"):
        plain_pipe([1], latents=torch.randn(1, 8, 4, 4), num_inference_steps=1, output_type="pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to decode: no error, no warning
        assert latents_of(plain_pipe, class_labels=[1], latent_channels=8).shape == (1, 8, 4, 4)
    # an AutoencoderDC15 of DC-AE 1.0 has no trained prefix but the full latent, whatever the output type
    dc_ae_10 = DCAE15Pipeline(pipe.transformer, AutoencoderDC15(**TINY_AE10_CONFIG).eval())
    for output_type in ("latent", "pt"):
        with pytest.raises(ValueError, match=r"latent_channels=8: this autoencoder is not structured"):
            dc_ae_10([1], latent_channels=8, num_inference_steps=1, output_type=output_type)


def test_label_names(pipe):
    assert pipe.get_label_ids(["White Shark", "man-eater", "GOLDEN  retriever", "class 4"]) == [2, 2, 7, 4]
    with pytest.raises(ValueError, match="golden retriever"):
        pipe.get_label_ids("golden retreiver")
    with pytest.raises(ValueError, match="no `id2label`"):
        DCAE15Pipeline(pipe.transformer, pipe.vae).get_label_ids("white shark")


def test_imagenet_id2label():
    id2label = load_imagenet_id2label()
    assert sorted(id2label) == list(range(1000))
    assert id2label[0] == "tench" and id2label[207] == "golden retriever"
    transformer = USiTTransformer2DModel(
        sample_size=2, in_channels=4, num_layers=0, num_attention_heads=1, attention_head_dim=4
    )
    imagenet = DCAE15Pipeline(transformer, AutoencoderDC15(**TINY_AE15_CONFIG), id2label=id2label)
    assert imagenet.get_label_ids(["great white shark", "Golden Retriever"]) == [2, 207]
    with pytest.raises(ValueError, match="great white shark"):
        imagenet.get_label_ids("great whte shark")


def test_bad_inputs(pipe):
    latents = torch.randn(2, 16, 4, 4)
    cases = [
        (dict(class_labels=[1, 10]), ValueError, r"out of range \[0, 9\]"),
        (dict(class_labels=[-1]), ValueError, "out of range"),
        (dict(class_labels=["white sharc"]), ValueError, "Did you mean: 'white shark'"),
        (dict(class_labels=[1.5]), TypeError, "class_labels"),
        (dict(class_labels=[1, 2], latents=latents[:1]), ValueError, r"latents.*\(2, 16, 4, 4\)"),
        (dict(class_labels=[1, 2], latents=latents, latent_channels=8), ValueError, "latents"),
        (dict(class_labels=[1], latent_channels=17), ValueError, "latent_channels"),
        (dict(class_labels=[1], num_inference_steps=0), ValueError, "num_inference_steps"),
        (dict(class_labels=[1], guidance_scale=float("nan")), ValueError, "guidance_scale.*finite"),
        (dict(class_labels=[1], guidance_scale=float("inf")), ValueError, "guidance_scale.*finite"),
        (dict(class_labels=[1], guidance_scale="3"), TypeError, "guidance_scale"),
        (dict(class_labels=[1], guidance_scale=True), TypeError, "guidance_scale"),
        (dict(class_labels=[1], guidance_interval=(0.9, 0.1)), ValueError, "guidance_interval"),
        (dict(class_labels=[1], guidance_interval=(0.0, 1.5)), ValueError, "guidance_interval"),
        (dict(class_labels=[1], solver="rk4"), ValueError, "rk4"),
        (dict(class_labels=[1], output_type="jpg"), ValueError, "output_type"),
        (dict(class_labels=[1, 2], generator=[torch.Generator()]), ValueError, "generators"),
        (dict(class_labels=[1], solver="dopri5", callback_on_step_end=lambda *a: {}), ValueError, "dopri5"),
        (dict(class_labels=[1], callback_on_step_end_tensor_inputs=["noise"]), ValueError, "noise"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            pipe(**{"num_inference_steps": 1, **kwargs})
    no_null = USiTTransformer2DModel(**{**pipe.transformer.config, "class_dropout_prob": 0.0})
    with pytest.raises(ValueError, match="null class"):
        DCAE15Pipeline(no_null, pipe.vae)(class_labels=[1], guidance_scale=1.5)


def test_a_pipeline_folder_given_as_a_model_and_back_says_which_it_is():
    """The loaders name what a folder is when it is the other kind: a pipeline's models are in subfolders, and one
    model's folder is not a pipeline."""
    from dc_ae_hf import AutoencoderDC15
    from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline

    bundled = REPO_ROOT / "dc_ae_hf" / "assets" / "toy-dcae15-shapes"
    with pytest.raises(
        FileNotFoundError,
        match=r"is a pipeline folder \(model_index.json\); its models are in the "
        r"subfolders \['transformer', 'vae'\]: load one with subfolder=",
    ):
        AutoencoderDC15.from_pretrained(bundled)
    with pytest.raises(
        FileNotFoundError, match=r"vae' is not a pipeline folder: .* It is a model folder \(config.json\)"
    ):
        DCAE15Pipeline.from_pretrained(bundled / "vae")
