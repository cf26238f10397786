"""Pieces shared by `training/train_dc_ae.py` and `training/train_usit.py`.

- `LatentChannelSampler`: the c' draw of paper Eq. 1 (autoencoder) and Eq. 2 (diffusion), one implementation.
- `save_checkpoint` / `find_latest_checkpoint` / `prune_checkpoints`: atomic accelerate checkpoints.
- `register_pretrained_hooks`: accelerate save/load hooks that store models as `save_pretrained` folders.
- `gather_process_states` / `save_process_states` / `load_process_state`: checkpoint a state that differs per process
  (e.g. each rank's `LatentChannelSampler` generator), as safetensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


# ---------------------------------------------------------------------------------------------------------------
# Channel-prefix sampling (paper Eq. 1 and Eq. 2)
# ---------------------------------------------------------------------------------------------------------------


class LatentChannelSampler:
    """Draws the channel prefixes c' used in one training step.

    Official semantics (`dc_gen/aecore/trainer.py` and `dc_gen/c2icore/trainer.py`, `prepare_batch`): each step
    draws `num_samples` values uniformly from `choices` (with replacement); with `always_include_full` the first
    value is the full latent `max(choices)` and only `num_samples - 1` are drawn. The draw is the same for the whole
    local batch. Each process seeds its own generator with `seed + process_index` (the official code uses a
    per-rank generator, so ranks draw different c'); the generator state is saved with the checkpoint
    (`state_dict`), so a resumed run draws the same sequence.

    Args:
        choices: allowed prefixes, strictly increasing positive ints (e.g. `vae.latent_channel_choices`).
        num_samples: how many prefixes per step (>= 1).
        always_include_full: force the full latent as the first prefix.
        seed: base seed; `process_index` is added.
    """

    def __init__(
        self,
        choices: Sequence[int],
        num_samples: int = 1,
        always_include_full: bool = False,
        seed: int = 0,
        process_index: int = 0,
    ) -> None:
        choices = list(choices)
        if not choices or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in choices):
            raise ValueError(f"latent_channel_choices must be a non-empty list of positive ints, got {choices!r}")
        if any(b <= a for a, b in zip(choices, choices[1:])):
            raise ValueError(f"latent_channel_choices must be strictly increasing, got {choices!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_channel_samples must be an int >= 1, got {num_samples!r}")
        self.choices = choices
        self.num_samples = num_samples
        self.always_include_full = always_include_full
        self.generator = torch.Generator().manual_seed(seed + process_index)

    def __call__(self) -> list[int]:
        """The prefixes for this step, e.g. `[128, 48]` with `num_samples=2, always_include_full=True`."""
        drawn = []
        if self.always_include_full:
            drawn.append(self.choices[-1])
        num_random = self.num_samples - len(drawn)
        if num_random:
            index = torch.randint(len(self.choices), (num_random,), generator=self.generator)
            drawn.extend(self.choices[i] for i in index.tolist())
        return drawn

    def state_dict(self) -> dict:
        return {"generator_state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator_state"])


def invalid_flag(flag: str, value, allowed: str):
    """Raise the trainers' standard error for a bad command-line value: the flag, the value, what is allowed."""
    raise ValueError(f"--{flag}={value!r} is not allowed: {allowed}")


def check_channel_choices(choices: Sequence[int], latent_channels: int, argument: str = "latent_channel_choices"):
    """Raise a clear ValueError if any prefix is outside 1..latent_channels."""
    bad = [c for c in choices if not 1 <= c <= latent_channels]
    if bad:
        raise ValueError(f"{argument}={list(choices)} has values {bad} outside 1..{latent_channels} (latent channels)")


# ---------------------------------------------------------------------------------------------------------------
# Atomic checkpoints
# ---------------------------------------------------------------------------------------------------------------


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a `checkpoint-<step>` folder, None for anything else (incl. unfinished `.tmp` folders)."""
    match = _CHECKPOINT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Finished checkpoints in `output_dir`, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest finished checkpoint folder, or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str | os.PathLike) -> Path | None:
    """`--resume_from_checkpoint` semantics: `None` -> the latest if any (re-running the command resumes),
    `"latest"` -> the latest or None, `"none"` -> start fresh, otherwise an explicit folder that must exist."""
    if resume_from_checkpoint is None or resume_from_checkpoint == "latest":
        return find_latest_checkpoint(output_dir)
    if resume_from_checkpoint == "none":
        return None
    path = Path(resume_from_checkpoint)
    if not path.is_dir() or checkpoint_step(path) is None:
        raise ValueError(
            f"resume_from_checkpoint={resume_from_checkpoint!r} is not a checkpoint-<step> folder; "
            "use 'latest', 'none' or the path of an existing checkpoint"
        )
    return path


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int | None) -> list[Path]:
    """Delete the oldest finished checkpoints so that at most `total_limit` remain; returns the deleted ones."""
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"checkpoints_total_limit must be >= 1 or None, got {total_limit}")
    checkpoints = list_checkpoints(output_dir)
    removed = checkpoints[: max(0, len(checkpoints) - total_limit)]
    for path in removed:
        shutil.rmtree(path)
    return removed


def save_checkpoint(
    accelerator, output_dir: str | os.PathLike, step: int, total_limit: int | None = None, metadata: dict | None = None
) -> Path:
    """Save the accelerate state as `output_dir/checkpoint-<step>`, atomically, then prune old ones.

    Every process writes into `checkpoint-<step>.tmp` (accelerate writes per-rank RNG states there); only when all
    have finished does the main process rename it to its final name. A run killed mid-save leaves a `.tmp` folder
    that `find_latest_checkpoint` ignores, so the previous checkpoint stays the resume point. Must be called on
    every process.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    tmp = output_dir / f"{CHECKPOINT_PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "training_state.json").write_text(json.dumps({"step": step, **(metadata or {})}, indent=2))
        if final.exists():  # a previous run reached this step; the new state replaces it
            shutil.rmtree(final)
        os.replace(tmp, final)
        # Only after the new checkpoint is in place do older ones go.
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def read_checkpoint_metadata(checkpoint: str | os.PathLike) -> dict:
    """The JSON written next to a checkpoint by `save_checkpoint` (at least {"step": N})."""
    return json.loads((Path(checkpoint) / "training_state.json").read_text())


# ---------------------------------------------------------------------------------------------------------------
# accelerate setup shared by both trainers
# ---------------------------------------------------------------------------------------------------------------


def make_accelerator(
    output_dir: str | os.PathLike,
    mixed_precision: str,
    report_to: str,
    logging_dir: str,
    gradient_accumulation_steps: int,
    seed: int,
):
    """The `Accelerator` both trainers use: trackers under `output_dir/logging_dir`, gradient accumulation that does
    not re-sync at epoch ends (exact resume), and a seedable sampler (same data order after a resume)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    output_dir = Path(output_dir)
    return Accelerator(
        mixed_precision=mixed_precision,
        log_with=None if report_to == "none" else report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / logging_dir)),
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=gradient_accumulation_steps, sync_with_dataloader=False
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed),
    )


# ---------------------------------------------------------------------------------------------------------------
# accelerate hooks: checkpoints hold `save_pretrained` folders (diffusers train_unconditional.py pattern)
# ---------------------------------------------------------------------------------------------------------------


def register_pretrained_hooks(
    accelerator,
    named_models: dict[str, torch.nn.Module],
    extra_save: Callable[[str], None] | None = None,
    extra_load: Callable[[str], None] | None = None,
) -> None:
    """Make `accelerator.save_state/load_state` store each prepared model as `<checkpoint>/<name>/` written by
    `save_pretrained` (safetensors + config.json), loadable on its own with `from_pretrained`.

    Args:
        named_models: subfolder name -> the model as passed to `accelerator.prepare` (wrapped or not).
        extra_save / extra_load: called with the checkpoint folder (main process for save), e.g. to write the EMA
            model with `EMAModel.save_pretrained` and read it back.
    """

    def _name_of(model) -> str:
        unwrapped = accelerator.unwrap_model(model)
        for name, candidate in named_models.items():
            if accelerator.unwrap_model(candidate) is unwrapped:
                return name
        raise ValueError(f"model of type {type(unwrapped).__name__} was not registered with a checkpoint name")

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for model in models:
                accelerator.unwrap_model(model).save_pretrained(os.path.join(output_dir, _name_of(model)))
                if weights:
                    weights.pop()
            if extra_save is not None:
                extra_save(output_dir)

    def load_hook(models, input_dir):
        while models:
            model = models.pop()
            unwrapped = accelerator.unwrap_model(model)
            loaded = type(unwrapped).from_pretrained(os.path.join(input_dir, _name_of(model)))
            unwrapped.register_to_config(**loaded.config)
            unwrapped.load_state_dict(loaded.state_dict())
            del loaded
        if extra_load is not None:
            extra_load(input_dir)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


# ---------------------------------------------------------------------------------------------------------------
# Per-process states (accelerate's `register_for_checkpointing` stores only the main process's copy)
# ---------------------------------------------------------------------------------------------------------------


def gather_process_states(accelerator, state: torch.Tensor) -> list[torch.Tensor]:
    """Every process's `state` (a CPU tensor, e.g. `generator.get_state()`), indexed by process. Collective: call it
    on all processes, before `save_checkpoint`, and hand the result to `save_process_states` in an `extra_save`."""
    from accelerate.utils import gather_object

    if accelerator.num_processes == 1:
        return [state.cpu()]
    return [tensor.cpu() for tensor in gather_object([state.cpu()])]


def save_process_states(folder: str | os.PathLike, name: str, states: Sequence[torch.Tensor]) -> Path:
    """Write `<folder>/<name>.safetensors` with one tensor per process (`process_<i>`)."""
    from safetensors.torch import save_file

    path = Path(folder) / f"{name}.safetensors"
    save_file({f"process_{i}": state.contiguous() for i, state in enumerate(states)}, str(path))
    return path


def load_process_state(folder: str | os.PathLike, name: str, process_index: int) -> torch.Tensor | None:
    """This process's tensor from `save_process_states`, or None when the file or the process's entry is missing
    (e.g. a run resumed with more processes than it was saved with)."""
    from safetensors.torch import load_file

    path = Path(folder) / f"{name}.safetensors"
    if not path.is_file():
        return None
    return load_file(str(path)).get(f"process_{process_index}")
