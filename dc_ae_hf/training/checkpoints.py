"""Checkpoints of both trainers: atomic accelerate states holding `save_pretrained` folders, and resuming them.

- `save_checkpoint` / `list_checkpoints` / `find_latest_checkpoint` / `prune_checkpoints`: `checkpoint-<step>`
  folders written atomically (a killed save leaves a `.tmp` folder that is never resumed; a failed one, e.g. on a
  full disk, removes its `.tmp` folder and raises `CheckpointWriteError`; pruning logs every folder it deletes).
- `resume_candidates`: which checkpoints a run resumes from, newest first (`--resume_from_checkpoint`).
- `resume_settings` / `setting_differences`: the settings a resume must keep, read from a run's resolved
  configuration by the keys its trainer declares, and which of them changed between a checkpoint and the resuming
  command.
- `register_pretrained_hooks`: accelerate save/load hooks that store models as `save_pretrained` folders.

Nothing random is checkpointed besides accelerate's own RNG states: every random draw of a step is seeded by
(seed, rank, step) (`dc_ae_hf.training.randomness`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
logger = logging.getLogger(__name__)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. no space left on the device); its `.tmp` folder was removed and the
    previous checkpoint is untouched."""


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
    candidates = resume_candidates(resume_from_checkpoint, output_dir)
    return candidates[0] if candidates else None


def resume_candidates(resume_from_checkpoint: str | None, output_dir: str | os.PathLike) -> list[Path]:
    """The checkpoints to try, in order: every finished one newest first for `None` / `"latest"` (a run falls back
    to the previous one when the newest cannot be loaded), none for `"none"`, or the one named explicitly."""
    if resume_from_checkpoint is None or resume_from_checkpoint == "latest":
        return list(reversed(list_checkpoints(output_dir)))
    if resume_from_checkpoint == "none":
        return []
    path = Path(resume_from_checkpoint)
    if not path.is_dir() or checkpoint_step(path) is None:
        raise ValueError(
            f"--resume_from_checkpoint={resume_from_checkpoint!r} is not allowed: it is not a checkpoint-<step> "
            "folder; use 'latest', 'none' or the path of an existing checkpoint"
        )
    return [path]


def resume_settings(config: Mapping, keys: Mapping[str, str | Sequence[str]]) -> dict:
    """The settings a resume must keep, read from a run's resolved configuration: for each name, the value of its
    key (a dotted path: `"model.config"` is `config["model"]["config"]`; a key the configuration lacks reads as
    None), or the list of the values of several keys, e.g.
    `{"model": "model.config", "batch": ("args.train_batch_size", "args.gradient_accumulation_steps")}`."""

    def value(key: str):
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        return node

    return {name: value(key) if isinstance(key, str) else [value(k) for k in key] for name, key in keys.items()}


def setting_differences(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    """`"name: checkpoint X, now Y"` for every setting whose value differs between two dicts (nested dicts are
    compared key by key, e.g. `model.num_layers`; a setting missing on one side counts as None; private `_` keys,
    such as diffusers' `_use_default_values`, are ignored)."""
    lines = []
    for key in sorted(k for k in set(saved) | set(current) if not str(k).startswith("_")):
        before, now = saved.get(key), current.get(key)
        if isinstance(before, Mapping) and isinstance(now, Mapping):
            lines += setting_differences(before, now, f"{prefix}{key}.")
        elif json.dumps(before, sort_keys=True, default=str) != json.dumps(now, sort_keys=True, default=str):
            lines.append(f"{prefix}{key}: checkpoint {before!r}, now {now!r}")
    return lines


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int | None) -> list[Path]:
    """Delete the oldest finished checkpoints so that at most `total_limit` remain; returns the deleted ones."""
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"checkpoints_total_limit must be >= 1 or None, got {total_limit}")
    checkpoints = list_checkpoints(output_dir)
    removed = checkpoints[: max(0, len(checkpoints) - total_limit)]
    for path in removed:
        logger.warning(f"--checkpoints_total_limit={total_limit}: deleting {path}")
        shutil.rmtree(path)
    return removed


def save_checkpoint(
    accelerator, output_dir: str | os.PathLike, step: int, total_limit: int | None = None, metadata: dict | None = None
) -> Path:
    """Save the accelerate state as `output_dir/checkpoint-<step>`, atomically, then prune old ones.

    Every process writes into `checkpoint-<step>.tmp` (accelerate writes per-rank RNG states there); only when all
    have finished does the main process rename it to its final name. A run killed mid-save leaves a `.tmp` folder
    that `find_latest_checkpoint` ignores, so the previous checkpoint stays the resume point. A write that fails on
    any process (a full disk, a quota, permissions) removes the `.tmp` folder and raises `CheckpointWriteError` on
    every process, naming the path; nothing older is pruned. Must be called on every process.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    tmp = output_dir / f"{CHECKPOINT_PREFIX}{step}.tmp"
    failure = None
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = _attempt(lambda: tmp.mkdir(parents=True))
    failure = _first_failure(accelerator, failure)
    if failure is None:
        failure = _attempt(lambda: accelerator.save_state(str(tmp)))
        if failure is None and accelerator.is_main_process:
            state = json.dumps({"step": step, **(metadata or {})}, indent=2)
            failure = _attempt(lambda: (tmp / "training_state.json").write_text(state))
        failure = _first_failure(accelerator, failure)
    if failure is not None:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        previous = find_latest_checkpoint(output_dir)
        kept = (
            f"the previous checkpoint {previous} is kept" if previous is not None else "no earlier checkpoint exists"
        )
        raise CheckpointWriteError(
            f"checkpoint-{step} could not be written in {output_dir} ({failure}); {kept}. Free space (or fix the "
            "folder) and re-run the same command to resume"
        )
    if accelerator.is_main_process:
        if final.exists():  # a previous run reached this step; the new state replaces it
            shutil.rmtree(final)
        os.replace(tmp, final)
        # Only after the new checkpoint is in place do older ones go.
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def _attempt(write: Callable[[], object]) -> str | None:
    """Run `write`; the failure of a write as one line (torch.save reports a full disk as RuntimeError, safetensors
    as its own SafetensorError), None when it succeeded."""
    try:
        write()
    except Exception as error:  # noqa: BLE001 - any failure to write is reported by every process, then raised
        if not isinstance(error, (OSError, RuntimeError)) and type(error).__name__ != "SafetensorError":
            raise
        text = " ".join(str(error).split())
        return f"{type(error).__name__}: {text[:300]}"
    return None


def _first_failure(accelerator, failure: str | None) -> str | None:
    """The first process's failure, the same on every process (collective with several)."""
    if accelerator.num_processes == 1:
        return failure
    from accelerate.utils import gather_object

    failures = [f for f in gather_object([failure]) if f is not None]
    return failures[0] if failures else None


def read_checkpoint_metadata(checkpoint: str | os.PathLike) -> dict:
    """The JSON written next to a checkpoint by `save_checkpoint` (at least {"step": N}); ValueError naming the
    checkpoint when it is missing or unreadable."""
    path = Path(checkpoint) / "training_state.json"
    try:
        metadata = json.loads(path.read_text())
        int(metadata["step"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"checkpoint {str(checkpoint)!r} has no readable training_state.json ({error})") from None
    return metadata


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
