"""Exponential moving averages of the trained weights (diffusers `EMAModel` with the official DC-Gen warmup)."""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path

from diffusers.training_utils import EMAModel
from safetensors.torch import load_file

__all__ = ["ExponentialWarmupEMAModel", "ema_folder_names", "emas_by_decay", "load_ema", "load_ema_model", "make_emas"]


def ema_folder_names(base: str, decays: list[float]) -> dict[str, float]:
    """Folder name -> decay for several EMAs kept at once: the first decay is `base` (e.g. "transformer_ema", where
    a single EMA has always been saved), the others `base-<decay>` (e.g. "transformer_ema-0.99995")."""
    return {base if i == 0 else f"{base}-{decay:g}": decay for i, decay in enumerate(decays)}


class ExponentialWarmupEMAModel(EMAModel):
    """diffusers `EMAModel` whose decay at optimisation step n is ``decay * (1 - exp(-n / warmup_steps))``.

    This is the official schedule (``dc_gen/apps/utils/ema.py``: ``EMA.step`` with ``ema_warmup_steps=2000``; the
    trainer calls it with the 1-based global step after each optimiser step, as ``EMAModel.step`` counts). diffusers'
    own warmup (``1 - (1 + n / inv_gamma) ** -power``) has another shape, so only ``get_decay`` is replaced;
    everything else (``store/copy_to/restore``, ``save_pretrained/from_pretrained``, ``state_dict``) is the parent's,
    with ``warmup_steps`` added to the saved state.

    Args:
        parameters: the parameters to average.
        decay: the target decay d (official 0.9999).
        warmup_steps: the warmup time constant (official 2000); 0 disables the warmup (constant d).
        **kwargs: `EMAModel` arguments (``model_cls``, ``model_config``, ``foreach``).
    """

    def __init__(self, parameters, decay: float = 0.9999, warmup_steps: int = 2000, **kwargs) -> None:
        super().__init__(parameters, decay=decay, **kwargs)
        self.warmup_steps = self._check_warmup(warmup_steps)

    @staticmethod
    def _check_warmup(warmup_steps) -> int:
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"ema warmup_steps must be an int >= 0, got {warmup_steps!r}")
        return warmup_steps

    def get_decay(self, optimization_step: int) -> float:
        if self.warmup_steps == 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-optimization_step / self.warmup_steps))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.warmup_steps = self._check_warmup(state_dict.get("warmup_steps", self.warmup_steps))


def emas_by_decay(emas: dict[str, EMAModel]) -> dict[float, EMAModel]:
    """The EMAs of `ema_folder_names` by their decay."""
    return {ema.decay: ema for ema in emas.values()}


def make_emas(
    model, model_cls: type, base: str, decays: list[float], device, warmup_steps: int | None = None
) -> dict[str, EMAModel]:
    """One EMA of `model`'s parameters per decay, by folder name (`ema_folder_names(base, decays)`), on `device`:
    `ExponentialWarmupEMAModel` with `warmup_steps`, else diffusers' `EMAModel`; each saves and loads as a
    `model_cls` with `model.config` (`model` may be sharded or wrapped, `model_cls` is its own class)."""
    emas = {}
    for name, decay in ema_folder_names(base, decays).items():
        kwargs = dict(decay=decay, model_cls=model_cls, model_config=model.config)
        if warmup_steps is None:
            emas[name] = EMAModel(model.parameters(), **kwargs)
        else:
            emas[name] = ExponentialWarmupEMAModel(model.parameters(), warmup_steps=warmup_steps, **kwargs)
        emas[name].to(device)
    return emas


def _read_ema_folder(folder: str | os.PathLike, model_cls: type) -> tuple[dict, object]:
    """The config.json (model config plus the EMA's settings and counters) of a folder that
    `EMAModel.save_pretrained` wrote (diffusers' format; a sharded save of a large model too), and the `model_cls`
    model with its weights. Only the keys `model_cls.__init__` takes reach `from_config`: the EMA's would make
    diffusers log "config attributes {'decay': ...} were passed ..., but are not expected"."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else None
    state = {}
    for name in files or ["diffusion_pytorch_model.safetensors"]:
        state.update(load_file(folder / name))
    expected = set(inspect.signature(model_cls.__init__).parameters)
    model = model_cls.from_config({k: v for k, v in config.items() if k in expected or k.startswith("_")})
    model.load_state_dict(state, strict=True)
    return config, model


def load_ema(ema: EMAModel, folder: str | os.PathLike) -> None:
    """Load into `ema` what `ema.save_pretrained(folder)` wrote: a model folder whose config.json also holds the
    EMA's settings and counters (diffusers' format). Read here rather than with `EMAModel.from_pretrained`, which
    passes the folder to `from_config` (a FutureWarning) and the EMA keys to the model class (diffusers' "config
    attributes {'decay': ...} were passed ..., but are not expected" twice), on every resume."""
    config, model = _read_ema_folder(folder, ema.model_cls)
    settings = {key: config[key] for key in set(ema.state_dict()) - {"shadow_params"} if key in config}
    ema.load_state_dict({**settings, "shadow_params": [p.detach() for p in model.parameters()]})


def load_ema_model(folder: str | os.PathLike, model_cls: type):
    """The model with the EMA weights of a checkpoint's EMA folder (`<checkpoint>/<name>_ema`, written by
    `EMAModel.save_pretrained`), e.g. to evaluate a checkpoint, quietly (`model_cls.from_pretrained` would pass the
    EMA's settings in its config.json to the model class). A run's final `<name>_ema/` folder is a plain model
    folder (`from_pretrained` loads it)."""
    return _read_ema_folder(folder, model_cls)[1]
