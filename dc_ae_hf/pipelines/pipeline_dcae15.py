"""Class-conditional image generation with a USiT transformer and a DC-AE (1.5) autoencoder.

The official sampler (``dc_gen/c2icore/diffusioncore/models/base.py:generate``) integrates the SiT probability-flow
ODE from noise (t = 0) to data (t = 1) with classifier-free guidance by batch doubling, then decodes
``latents / scaling_factor`` with the autoencoder. ``DCAE15Pipeline`` does the same either with a diffusers
flow-matching scheduler (default: UniPC on the "dense_ends" time grid, ``default_scheduler()``, 24 transformer calls
for the official dopri5's accuracy on the bundled toy pipeline: benchmarks/bench_sampling_calls.py) or with the
official samplers of ``dc_ae_hf.pipelines.sampling`` (``solver="euler" | "heun2" | "dopri5"``).
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import numbers
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderDC, UniPCMultistepScheduler
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import replace_example_docstring
from diffusers.utils.torch_utils import get_device, randn_tensor

from dc_ae_hf.choices import SOLVERS, TIME_GRIDS
from dc_ae_hf.labels import check_id2label
from dc_ae_hf.latents import can_decode_prefix, check_prefix, decode_from_diffusion_space
from dc_ae_hf.loading import check_pretrained_folder, resolve_pretrained_path
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines.sampling import (
    check_guidance_interval,
    flow_sigmas,
    flow_time_grid,
    guided_velocity,
    sample_ode,
)
from dc_ae_hf.self_contained import SelfContainedPipelineMixin

IMAGENET_ID2LABEL_PATH = Path(__file__).resolve().parents[1] / "data" / "imagenet_id2label.json"


def load_imagenet_id2label() -> dict[int, str]:
    """ImageNet-1k class id -> name (torchvision's names; regenerate with ``scripts/make_imagenet_id2label.py``)."""
    with open(IMAGENET_ID2LABEL_PATH, encoding="utf-8") as f:
        return {int(k): v for k, v in json.load(f).items()}


def _normalize_name(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().lower())


def _flatten_labels(class_labels) -> list:
    """A label, or a (nested) list / tuple / tensor / numpy array of labels -> a flat list of ints and strs."""
    if isinstance(class_labels, (torch.Tensor, np.ndarray)):
        if isinstance(class_labels, torch.Tensor):
            integer = not (class_labels.dtype.is_floating_point or class_labels.dtype.is_complex)
            integer = integer and class_labels.dtype != torch.bool
        else:
            integer = np.issubdtype(class_labels.dtype, np.integer)
        if not integer:
            raise TypeError(f"`class_labels` must hold integer class ids, got an array of dtype {class_labels.dtype}.")
        return [int(v) for v in class_labels.reshape(-1).tolist()]
    if isinstance(class_labels, (str, numbers.Integral)):
        return [class_labels]
    if not isinstance(class_labels, Sequence):
        raise TypeError(f"`class_labels` must be an int id, a class name or a list of them, got {class_labels!r}.")
    return [label for item in class_labels for label in _flatten_labels(item)]


def _check_guidance_scale(guidance_scale, name: str = "guidance_scale") -> float:
    """A finite real number (int, float, numpy scalar); bool, NaN and inf are refused."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {guidance_scale!r} ({type(guidance_scale).__name__}).")
    if not math.isfinite(guidance_scale):
        raise ValueError(f"`{name}` must be finite, got {guidance_scale!r}.")
    return float(guidance_scale)


# The pipeline's default sampler: UniPC (order 2, flow sigmas) on the "dense_ends" time grid with this many steps, one
# transformer call each. On the bundled toy pipeline (guidance 3) it reaches the official dopri5's mean and median
# error with about a third of its calls (24 against 70); 17 steps, a quarter, land at 1.15x its mean error (README,
# measured by benchmarks/bench_sampling_calls.py). The official fixed-grid solvers keep OFFICIAL_SOLVER_STEPS.
DEFAULT_SCHEDULER_STEPS = 24
OFFICIAL_SOLVER_STEPS = 50
# Flow schedulers that step with a velocity on sigma = 1 - t by construction; the others need use_flow_sigmas.
_FLOW_MATCH_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
# Flow schedulers for distilled models (consistency / flow-map steps), not probability-flow ODE solvers.
_DISTILLED_MODEL_SCHEDULERS = ("FlowMatchLCMScheduler", "FlowMapEulerDiscreteScheduler")
_SPACING_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def default_scheduler() -> UniPCMultistepScheduler:
    """The scheduler the converter, the trainers and the toy write into pipeline folders, and the one a pipeline without
    a scheduler samples with: diffusers' UniPC in flow-matching mode (order 2, bh2)."""
    return UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")


def check_flow_scheduler(scheduler: SchedulerMixin) -> None:
    """Refuse a scheduler that cannot integrate the flow-matching ODE on sigma = 1 - t, naming the fix."""
    name = type(scheduler).__name__
    if name in _DISTILLED_MODEL_SCHEDULERS:
        raise ValueError(
            f"{name} steps a distilled (consistency / flow-map) model, not the probability-flow ODE of a USiT; use "
            "UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type='flow_prediction') or a FlowMatch* scheduler."
        )
    if name in _FLOW_MATCH_SCHEDULERS:
        return
    if name.endswith("InverseScheduler"):  # diffusers' naming of its inversion schedulers (DDIM, DPM-Solver)
        raise ValueError(f"{name} inverts sampling (data to noise); sampling needs a scheduler from noise to data.")
    config = scheduler.config
    if "use_flow_sigmas" not in config:
        raise ValueError(
            f"{name} is not a flow-matching scheduler (it has no flow sigmas); the USiT predicts a flow velocity. Use "
            "FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, or UniPC / DPM-Solver / DEIS / SA-Solver "
            "with use_flow_sigmas=True, prediction_type='flow_prediction'."
        )
    if not config.use_flow_sigmas or config.get("prediction_type") != "flow_prediction":
        raise ValueError(
            f"{name} has use_flow_sigmas={config.use_flow_sigmas}, prediction_type={config.get('prediction_type')!r}; "
            f"the USiT needs use_flow_sigmas=True, prediction_type='flow_prediction' ({name}.from_config("
            "scheduler.config, use_flow_sigmas=True, prediction_type='flow_prediction'))."
        )


def _dynamic_shift_mu(config, image_seq_len: int) -> float:
    """``mu`` for a scheduler with ``use_dynamic_shifting``: the shift interpolated linearly in the token count between
    (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift), as diffusers' Flux pipeline computes it
    (``calculate_shift``; written out here because that module imports transformers, which diffusers does not need)."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + base_shift - slope * base_len


def _check_sigmas(sigmas) -> np.ndarray:
    """Custom sigmas: a 1-D sequence, decreasing, in (0, 1] (the scheduler appends the terminal 0)."""
    try:
        values = np.asarray(sigmas, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`sigmas` must be a sequence of floats, got {sigmas!r}.") from error
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"`sigmas` must be a non-empty 1-D sequence of floats, got shape {values.shape}.")
    if not (np.all(np.isfinite(values)) and values[0] <= 1.0 and values[-1] > 0.0 and np.all(np.diff(values) < 0)):
        raise ValueError(
            f"`sigmas` must decrease strictly within (0, 1] (sigma = 1 - t: 1 is noise; the scheduler appends the final "
            f"0), got {values.tolist()}."
        )
    return values


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import dc_ae_hf
        >>> from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline

        >>> pipe = DCAE15Pipeline.from_pretrained("path/or/hub-id")  # a folder written by save_pretrained
        >>> images = pipe(["golden retriever", 207], guidance_scale=1.5, solver="dopri5").images
        ```
"""


class DCAE15Pipeline(SelfContainedPipelineMixin, DiffusionPipeline):
    r"""Class-conditional generation with ``USiTTransformer2DModel`` + ``AutoencoderDC15`` (or ``AutoencoderDC``).

    Time conventions: the transformer uses the SiT flow time t (0 = noise, 1 = data) and predicts the velocity
    ``data - noise``. diffusers' flow-match schedulers use sigma = 1 - t (sigma = 1 is noise) and integrate
    ``dx/dsigma = noise - data``; so the pipeline calls the transformer with ``t = 1 - timestep /
    num_train_timesteps`` and passes ``-velocity`` to ``scheduler.step``.

    Guidance can change during sampling: the denoising loop reads ``self.guidance_scale`` (``self._guidance_scale``)
    at every step (the fixed-grid solvers at every model evaluation), so a ``callback_on_step_end`` that sets
    ``pipe._guidance_scale = 1.0`` (e.g. ``GuidanceCutoffCallback``) turns guidance off from the next step on; a
    step with scale 1 runs the conditional batch only. Note that 1, not 0, means "no guidance" here: 0 is the
    unconditional model.

    Args:
        transformer: the USiT velocity model.
        vae: ``AutoencoderDC15`` (decodes channel prefixes) or a plain diffusers ``AutoencoderDC``.
        scheduler: a flow-matching scheduler, optional. ``None`` (kept as ``None`` through ``save_pretrained`` /
            ``from_pretrained``) means a fresh ``default_scheduler()`` (UniPC, flow sigmas) is used for every call
            that does not pass ``solver``. ``FlowMatchEulerDiscreteScheduler`` with ``time_grid="uniform"``
            reproduces the official Euler sampler.
        id2label: optional class id -> name (comma-separated synonyms allowed), enables class names in
            ``__call__``/``get_label_ids``; stored in ``model_index.json``. ImageNet: ``load_imagenet_id2label()``.
            Its ids must be exactly ``0..transformer.config.num_classes-1`` (``dc_ae_hf.labels.check_id2label``:
            ValueError otherwise).
    """

    model_cpu_offload_seq = "transformer->vae"
    _callback_tensor_inputs = ["latents"]
    _optional_components = ["scheduler"]

    def __init__(
        self,
        transformer: USiTTransformer2DModel,
        vae: AutoencoderDC,
        scheduler: SchedulerMixin | None = None,
        id2label: dict | None = None,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        # ids exactly 0..num_classes-1 (a gap would make an id the transformer's null class)
        num_classes = transformer.config.num_classes if transformer is not None else None
        checked = check_id2label(id2label, num_classes) if id2label else None
        self.register_to_config(id2label=id2label)
        self.vae_scale_factor = 2 ** (len(vae.config.encoder_block_out_channels) - 1) if vae is not None else 32
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.labels, self._ambiguous_labels = self._build_label_index(checked)

    @staticmethod
    def _build_label_index(id2label: dict | None) -> tuple[dict[str, int], dict[str, list[int]]]:
        """Map every normalised name (whole entry and each comma-separated synonym) to its class id."""
        labels: dict[str, int] = {}
        ambiguous: dict[str, list[int]] = {}
        for key, value in (id2label or {}).items():
            class_id = int(key)
            names = {_normalize_name(value)} | {_normalize_name(s) for s in value.split(",") if s.strip()}
            for name in names:
                if name in labels and labels[name] != class_id:
                    ambiguous.setdefault(name, [labels[name]]).append(class_id)
                else:
                    labels[name] = class_id
        return labels, ambiguous

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Map class names (case-insensitive; any comma-separated synonym of ``id2label``) to class ids."""
        if not self.labels:
            raise ValueError(
                "This pipeline has no `id2label`, so class names cannot be resolved; pass integer class ids or "
                "create the pipeline with id2label=load_imagenet_id2label()."
            )
        names = [label] if isinstance(label, str) else list(label)
        ids = []
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"Class names must be strings, got {name!r} ({type(name).__name__}).")
            key = _normalize_name(name)
            if key in self._ambiguous_labels:
                raise ValueError(f"Class name {name!r} is ambiguous: ids {self._ambiguous_labels[key]}; pass the id.")
            if key not in self.labels:
                close = difflib.get_close_matches(key, list(self.labels), n=3, cutoff=0.6)
                hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
                raise ValueError(f"Unknown class label {name!r}.{hint} {self._class_names_text()}")
            ids.append(self.labels[key])
        return ids

    def _class_names_text(self, limit: int = 20) -> str:
        """The model's classes as the user can write them (first name of each, with its id), for a message."""
        id2label = check_id2label(self.config.id2label)
        shown = [f"{i} {id2label[i].split(',')[0].strip()!r}" for i in list(id2label)[:limit]]
        more = f", ... ({len(id2label)} classes in all; pipe.labels lists every name)" if len(id2label) > limit else ""
        return f"The model's classes (id, name): {', '.join(shown)}{more}."

    def _resolve_class_labels(self, class_labels) -> list[int]:
        """Class ids for ``class_labels``: ints (Python or numpy), names, or (nested) lists / arrays / tensors."""
        items = _flatten_labels(class_labels)
        if not items:
            raise ValueError("`class_labels` is empty.")
        num_classes = self.transformer.config.num_classes
        ids = []
        for item in items:
            if isinstance(item, str):
                ids.extend(self.get_label_ids(item))
            elif isinstance(item, numbers.Integral) and not isinstance(item, (bool, np.bool_)):
                if not 0 <= item < num_classes:
                    raise ValueError(f"Class label {item} is out of range [0, {num_classes - 1}] (num_classes).")
                ids.append(int(item))
            else:
                raise TypeError(f"`class_labels` entries must be int ids or str names, got {item!r}.")
        return ids

    def check_inputs(
        self, batch_size, guidance_scale, num_inference_steps, latents, latent_channels, solver, output_type
    ):
        cfg = self.transformer.config
        if solver is not None and solver not in SOLVERS:
            raise ValueError(
                f"Unknown solver {solver!r}; valid solvers: None (use self.scheduler) or {list(SOLVERS)}."
            )
        flow_time_grid(num_inference_steps)  # validates num_inference_steps >= 1
        guidance_scale = _check_guidance_scale(guidance_scale)
        if guidance_scale != 1.0 and cfg.class_dropout_prob == 0:
            raise ValueError("guidance_scale != 1 needs a null class, but the transformer has class_dropout_prob=0.")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}.")
        if latent_channels is not None and (isinstance(latent_channels, bool) or not isinstance(latent_channels, int)):
            raise TypeError(f"`latent_channels` must be an int, got {latent_channels!r}.")
        if latent_channels is not None and not 1 <= latent_channels <= cfg.in_channels:
            raise ValueError(f"`latent_channels`={latent_channels} must be in [1, {cfg.in_channels}] (in_channels).")
        channels = latent_channels or (latents.shape[1] if latents is not None else cfg.in_channels)
        if latents is not None:
            expected = (batch_size, channels, cfg.sample_size, cfg.sample_size)
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected:
                got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise ValueError(f"`latents` must have shape {expected} (batch, channels, size, size), got {got}.")
            if channels > cfg.in_channels:
                raise ValueError(
                    f"`latents` has {channels} channels; the transformer accepts at most {cfg.in_channels}."
                )
        self._check_latent_prefix(channels)
        if output_type != "latent":  # the vae's rule (AutoencoderDC15.check_prefix, or a plain AutoencoderDC's)
            name = "latent_channels" if latent_channels is not None else "latents.shape[1]"
            name = name if latent_channels is not None or latents is not None else "transformer.config.in_channels"
            try:
                check_prefix(self.vae, channels, name)
            except ValueError as error:
                raise ValueError(f"{error} (output_type='latent' returns the latents without decoding.)") from None
        return channels

    def _check_latent_prefix(self, channels: int) -> None:
        """Sampling in c' < all channels needs a structured latent space whose trained prefixes include c'."""
        if channels >= self.vae.config.latent_channels:
            return
        if isinstance(self.vae, AutoencoderDC15):
            if not self.vae.is_trained_prefix(channels):
                choices = list(self.vae.latent_channel_choices)
                structured = f"was trained for the prefixes {choices}" if len(choices) > 1 else "is not structured"
                raise ValueError(
                    f"latent_channels={channels}: this autoencoder {structured} (vae.config.latent_channel_choices), "
                    f"so a {channels}-channel latent has no trained meaning; sample in one of {choices}."
                )
        elif can_decode_prefix(self.vae, channels):
            warnings.warn(
                f"latent_channels={channels}: a plain AutoencoderDC does not record which channel prefixes it was "
                "trained for; the samples are only meaningful if it is a structured (DC-AE 1.5) autoencoder. Load it "
                "as dc_ae_hf.AutoencoderDC15 with latent_channel_choices to have this checked.",
                stacklevel=3,
            )

    @property
    def guidance_scale(self) -> float:
        """The current guidance scale; a callback may change it (``pipe._guidance_scale = ...``) between steps."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether the current step computes the unconditional batch (scale != 1)."""
        return self._guidance_scale != 1.0

    def _current_guidance_scale(self) -> float:
        """``self._guidance_scale``, checked (a callback may have set it); read at every step."""
        scale = _check_guidance_scale(self._guidance_scale, "pipe._guidance_scale")
        if scale != 1.0 and self.transformer.config.class_dropout_prob == 0:
            raise ValueError("guidance scale != 1 needs a null class, but the transformer has class_dropout_prob=0.")
        return scale

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        class_labels: int | str | Sequence[int | str] | torch.Tensor,
        guidance_scale: float = 1.5,
        guidance_interval: tuple[float, float] | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        latent_channels: int | None = None,
        solver: str | None = None,
        time_grid: str | None = None,
        sigmas: Sequence[float] | np.ndarray | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' signature)
    ) -> ImagePipelineOutput | tuple:
        r"""Generate one image per class label.

        Args:
            class_labels: an int id, a class name (needs ``id2label``), or a list/tensor of them.
            guidance_scale: classifier-free guidance scale s: ``uncond + s * (cond - uncond)`` on all channels; the
                null class is ``transformer.config.num_classes``. 1 disables guidance (official default eval: 1.5).
            guidance_interval: ``(t_lo, t_hi)`` in flow time; guidance only where t_lo <= t <= t_hi, the
                conditional velocity elsewhere (official ``use_guidance_interval``, e.g. (0.2, 0.8)). The velocity
                then jumps at t_lo and t_hi, which a multistep scheduler (the default UniPC) carries across: with an
                interval, ``solver="dopri5"`` or ``"heun2"`` is more accurate per call (docs/benchmarks.md).
            num_inference_steps: number of steps N (N + 1 grid points); ignored by the adaptive ``"dopri5"``. None:
                ``DEFAULT_SCHEDULER_STEPS`` (24) with a UniPC scheduler (the default sampler), else
                ``OFFICIAL_SOLVER_STEPS`` (50).
            generator: torch generator(s) for the starting noise.
            latents: starting noise at t = 0, shape (B, c', sample_size, sample_size); drawn if None.
            latent_channels: sample in the first c' latent channels and decode that prefix (DC-AE 1.5).
            solver: None uses ``self.scheduler`` (``default_scheduler()``, UniPC, when it is None); ``"euler"``,
                ``"heun2"`` or ``"dopri5"`` run the official samplers of ``dc_ae_hf.pipelines.sampling`` (euler and heun2 on the
                grid ``linspace(0, 1, N + 1)``; dopri5: adaptive, atol 1e-6, rtol 1e-3).
            time_grid: the scheduler's time grid: ``"dense_ends"`` (denser near noise and data; ``flow_sigmas``),
                ``"uniform"`` (the official ``linspace(0, 1, N + 1)``), or ``"scheduler"`` (the scheduler's own
                ``set_timesteps(N)`` spacing). None: ``"dense_ends"`` for a scheduler whose ``set_timesteps`` takes
                ``sigmas`` and that sets no spacing of its own (karras / exponential / beta sigmas), else
                ``"scheduler"``. The scheduler's shift (``shift``, ``flow_shift``, dynamic shifting) applies on top, as
                in diffusers' pipelines. Scheduler path only.
            sigmas: custom sigmas ``1 >= sigma_0 > ... > sigma_{N-1} > 0`` (sigma = 1 - t; the scheduler appends the
                final 0), as diffusers' pipelines take them; replaces ``num_inference_steps`` and ``time_grid``.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (the final latent in diffusion space, before
                dividing by the vae scaling factor).
            return_dict: return an ``ImagePipelineOutput`` instead of a tuple.
            callback_on_step_end: ``fn(pipe, i, t, callback_kwargs) -> dict`` after every step (not with dopri5);
                ``t`` is the scheduler timestep (scheduler path) or the flow time the step started at (solvers).
                Returning ``{"latents": ...}`` replaces the latents; setting ``pipe._guidance_scale`` changes the
                guidance of the following steps.
            callback_on_step_end_tensor_inputs: tensors passed in ``callback_kwargs`` (only ``"latents"``).

        Examples:

        Returns:
            ``ImagePipelineOutput(images=...)`` or ``(images,)``.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"`callback_on_step_end_tensor_inputs` {bad} not in {self._callback_tensor_inputs}.")
        if callback_on_step_end is not None and solver == "dopri5":
            raise ValueError("`callback_on_step_end` is not supported with solver='dopri5' (adaptive steps).")
        interval = check_guidance_interval(guidance_interval)
        if solver is not None and (time_grid is not None or sigmas is not None):
            raise ValueError(
                f"`time_grid` and `sigmas` choose the scheduler's grid; solver={solver!r} runs the official sampler on "
                "its own grid. Pass solver=None to sample with the scheduler."
            )
        if time_grid is not None and time_grid not in (*TIME_GRIDS, "scheduler"):
            raise ValueError(f"Unknown time_grid {time_grid!r}; valid: None, {[*TIME_GRIDS, 'scheduler']}.")
        if sigmas is not None:
            if num_inference_steps is not None or time_grid is not None:
                raise ValueError("Pass either `sigmas` or `num_inference_steps` / `time_grid`, not both.")
            sigmas = _check_sigmas(sigmas)
        scheduler = self._sampling_scheduler() if solver is None else None
        if num_inference_steps is None:
            default_steps = isinstance(scheduler, UniPCMultistepScheduler)
            num_inference_steps = DEFAULT_SCHEDULER_STEPS if default_steps else OFFICIAL_SOLVER_STEPS
        labels = self._resolve_class_labels(class_labels)
        batch_size = len(labels)
        channels = self.check_inputs(
            batch_size, guidance_scale, num_inference_steps, latents, latent_channels, solver, output_type
        )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size} class labels.")
        self._guidance_scale = float(guidance_scale)
        device = self._execution_device
        size = self.transformer.config.sample_size
        null_class_id = self.transformer.config.num_classes

        # 1. starting noise at t = 0 (fp32, like the official generate)
        if latents is None:
            latents = randn_tensor((batch_size, channels, size, size), generator=generator, device=device)
        latents = latents.to(device=device, dtype=torch.float32)
        class_ids = torch.tensor(labels, device=device, dtype=torch.long)

        def run_callback(i: int, t, latents: torch.Tensor) -> torch.Tensor:
            if callback_on_step_end is None:
                return latents
            callback_kwargs = dict.fromkeys(callback_on_step_end_tensor_inputs, latents)
            outputs = callback_on_step_end(self, i, t, callback_kwargs)
            return outputs.pop("latents", latents)

        # 2. integrate t: 0 -> 1; the guidance scale is read at every step (callbacks may change it)
        guidance = dict(
            guidance_scale=self._current_guidance_scale, guidance_interval=interval, null_class_id=null_class_id
        )
        if solver is None:
            timesteps, flow_times = self._scheduler_grid(
                scheduler, num_inference_steps, time_grid, sigmas, device, tokens=self._num_tokens()
            )
            latents = self._sample_with_scheduler(
                scheduler, timesteps, flow_times, latents, class_ids, run_callback, **guidance
            )
        elif solver == "dopri5":
            self._num_timesteps = 0  # counts model calls (adaptive steps)
            with self.progress_bar(total=100) as bar:  # progress = flow time reached, in percent

                def report(module, args):
                    self._num_timesteps += 1
                    bar.update(max(0, int(100 * float(args[1].max())) - bar.n))

                hook = self.transformer.register_forward_pre_hook(report)
                try:
                    latents = sample_ode(self.transformer, latents, class_ids, solver="dopri5", **guidance)
                finally:
                    hook.remove()
                bar.update(100 - bar.n)
        else:
            self._num_timesteps = num_inference_steps
            with self.progress_bar(total=num_inference_steps) as bar:

                def step_callback(i: int, t: float, x: torch.Tensor) -> torch.Tensor:
                    bar.update()
                    return run_callback(i, t, x)

                latents = sample_ode(
                    self.transformer,
                    latents,
                    class_ids,
                    solver=solver,
                    num_inference_steps=num_inference_steps,
                    step_callback=step_callback,
                    **guidance,
                )

        # 3. decode
        if output_type == "latent":
            images = latents
        else:
            images = self.image_processor.postprocess(self._decode(latents), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def _sampling_scheduler(self) -> SchedulerMixin:
        """``self.scheduler`` (``default_scheduler()`` when it is None), checked to integrate the flow ODE."""
        scheduler = self.scheduler if self.scheduler is not None else default_scheduler()
        check_flow_scheduler(scheduler)
        return scheduler

    def _num_tokens(self) -> int:
        """Patch tokens per sample (the image sequence length of diffusers' dynamic shifting)."""
        cfg = self.transformer.config
        return (cfg.sample_size // cfg.patch_size) ** 2

    @staticmethod
    def _scheduler_grid(scheduler, num_inference_steps, time_grid, sigmas, device, tokens):
        """Set the scheduler's timesteps and return them with the flow time t = 1 - sigma of each model call.

        The grid goes to ``set_timesteps`` as diffusers' pipelines pass it (``sigmas`` as a numpy array). The flow time
        is read from ``scheduler.sigmas`` where they pair one to one with the timesteps: some schedulers (UniPC,
        DPM-Solver) round their timesteps to integers, which would move the model's t off the sigma the step uses.
        """
        config = scheduler.config
        takes_sigmas = "sigmas" in inspect.signature(scheduler.set_timesteps).parameters
        if sigmas is None and time_grid is None:
            own_spacing = any(config.get(option) for option in _SPACING_OPTIONS)
            time_grid = "dense_ends" if takes_sigmas and not own_spacing else "scheduler"
        if sigmas is None and time_grid != "scheduler":
            sigmas = flow_sigmas(num_inference_steps, time_grid)
        if sigmas is not None and not takes_sigmas:
            grid = f"time_grid={time_grid!r}" if time_grid is not None else "custom `sigmas`"
            raise ValueError(
                f"{grid}: {type(scheduler).__name__}.set_timesteps takes no `sigmas`, so it can only sample on its own "
                "spacing; pass time_grid='scheduler' (and no `sigmas`)."
            )
        kwargs = {}
        if config.get("use_dynamic_shifting"):
            kwargs["mu"] = _dynamic_shift_mu(config, tokens)
        if sigmas is not None:
            scheduler.set_timesteps(sigmas=sigmas, device=device, **kwargs)
        else:
            scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
        timesteps = scheduler.timesteps
        scheduler_sigmas = getattr(scheduler, "sigmas", None)
        if scheduler_sigmas is not None and len(scheduler_sigmas) == len(timesteps) + 1:
            flow_times = 1.0 - scheduler_sigmas[:-1].to(device=device, dtype=torch.float32)
        else:
            flow_times = 1.0 - timesteps.to(device=device, dtype=torch.float32) / config.num_train_timesteps
        if len(flow_times) > 1 and not bool((flow_times[1:] >= flow_times[:-1]).all()):
            raise ValueError(
                f"{type(scheduler).__name__} does not run from noise to data (its sigmas do not decrease); "
                "sampling needs a scheduler that does."
            )
        return timesteps, flow_times

    def _sample_with_scheduler(
        self,
        scheduler,
        timesteps,
        flow_times,
        latents,
        class_ids,
        callback,
        guidance_scale,
        guidance_interval,
        null_class_id,
    ):
        """Integrate with a diffusers flow scheduler on sigma = 1 - t (1 -> 0), one transformer call per timestep."""
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, timestep in enumerate(timesteps):
                t = flow_times[i].expand(latents.shape[0])  # SiT flow time
                velocity = guided_velocity(
                    self.transformer, latents, t, class_ids, guidance_scale(), guidance_interval, null_class_id
                )  # (B, c', H, W): data - noise
                # the scheduler integrates dx/dsigma = noise - data = -velocity
                latents = scheduler.step(-velocity, timestep, latents, return_dict=False)[0]
                latents = callback(i, timestep, latents)
                bar.update()
        return latents

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Diffusion-space latents (B, c', h, w) -> images (B, 3, H, W) in about [-1, 1]; a prefix c' is decoded by
        ``dc_ae_hf.latents.decode_prefix`` (zero-filled, with an ``AutoencoderDC15`` or a plain ``AutoencoderDC``)."""
        return decode_from_diffusion_space(self.vae, latents.to(self.vae.dtype))

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None):
        """diffusers' model offload; on a machine without an accelerator it warns and keeps running on the CPU.

        (diffusers raises a RuntimeError there; offloading to the CPU from the CPU has nothing to save.)
        """
        if device is None and get_device() == "cpu":
            warnings.warn(
                "enable_model_cpu_offload(): no accelerator found, so there is nothing to offload to; the pipeline "
                "keeps running on the CPU.",
                stacklevel=2,
            )
            return
        super().enable_model_cpu_offload(gpu_id=gpu_id, device=device)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """``DiffusionPipeline.from_pretrained`` with clear errors for the usual mistakes.

        A path that does not exist is reported as a missing local folder (not as a failed Hub lookup), a folder
        missing a component or holding a truncated/corrupt ``.safetensors`` file names it. Call it on this class
        (``DCAE15Pipeline.from_pretrained``): the generic ``DiffusionPipeline`` cannot resolve a third-party class.
        """
        path = resolve_pretrained_path(pretrained_model_name_or_path, "pipeline")
        if path is None:  # a Hub repo id
            path = cls.download(pretrained_model_name_or_path, **kwargs)
        check_pretrained_folder(path, "pipeline")
        return super().from_pretrained(path, **kwargs)

    @classmethod
    def download(cls, pretrained_model_name, **kwargs) -> str:
        """Fetch a Hub repo with ``huggingface_hub.snapshot_download``.

        diffusers' own ``download`` refuses repos whose components come from a library other than diffusers or
        transformers (``_get_custom_components_and_folders``), so it cannot fetch ``dc_ae_hf`` components; the
        whole snapshot is downloaded instead (or found in the cache with ``HF_HUB_OFFLINE=1``).
        """
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(
                pretrained_model_name,
                revision=kwargs.get("revision"),
                cache_dir=kwargs.get("cache_dir"),
                token=kwargs.get("token"),
                force_download=bool(kwargs.get("force_download", False)),
                local_files_only=bool(kwargs.get("local_files_only", False)),
            )
        except (OSError, ValueError) as error:  # huggingface_hub's HTTP, offline and not-in-cache errors
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise OSError(
                f"{pretrained_model_name!r} is not a local folder, and as a Hub repo id it could not be fetched "
                f"({type(error).__name__}: {reason})"
            ) from None
