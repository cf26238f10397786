"""Argument checks at the boundaries, one implementation for the library, the converters and the scripts.

Every function raises early with the argument's name, the bad value and what is allowed, and returns the checked
value. ``name`` is how the user wrote the argument: ``"num_inference_steps"`` for a Python argument, ``"--seed"``
for a command-line flag (the message then reads ``--seed=-1 is not allowed: ...``).

Torch-free at import: the scripts parse and check their flags with it before they import torch (a fast ``--help``);
the checks that need torch import it.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import torch

__all__ = [
    "DTYPES",
    "DTYPE_NAMES",
    "NOT_GIVEN",
    "SHORT_DTYPE_NAMES",
    "USAGE_ERROR_STATUS",
    "check_channel_prefixes",
    "check_device",
    "check_image_output",
    "check_int",
    "check_number",
    "exit_on_user_error",
    "exit_with_error",
    "invalid",
    "parse_dtype",
]

USAGE_ERROR_STATUS = 2  # what argparse exits with for a bad command line

# One dtype table. Both spellings are accepted everywhere a dtype is named (a flag, a config): the short one of
# accelerate's --mixed_precision ("fp32", "bf16", "fp16") and torch's ("float32", "bfloat16", "float16"). Each name
# maps to the torch dtype of that name; `DTYPES` (name -> torch.dtype) and `SHORT_DTYPE_NAMES` (torch.dtype -> the
# short name: accelerate's spelling, diffusers' weight-variant names "bf16" / "fp16") are built from it at their first
# use (`__getattr__`), so that the parsers list `DTYPE_NAMES` without importing torch.
_TORCH_DTYPE_NAMES = {
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}
DTYPE_NAMES = tuple(sorted(_TORCH_DTYPE_NAMES))  # e.g. a dtype flag's argparse choices
DTYPES: dict[str, torch.dtype]  # declared here, made by __getattr__
SHORT_DTYPE_NAMES: dict[torch.dtype, str]


def __getattr__(name: str):  # PEP 562: the tables of torch dtypes, built with torch at their first use
    if name not in ("DTYPES", "SHORT_DTYPE_NAMES"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import torch

    dtypes = {short: getattr(torch, long) for short, long in _TORCH_DTYPE_NAMES.items()}
    globals().update(DTYPES=dtypes, SHORT_DTYPE_NAMES={dtypes[short]: short for short in ("fp32", "bf16", "fp16")})
    return globals()[name]


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


# The default of an argument whose None means something (`latent_channel_choices=None`: an unstructured latent):
# "not given".
NOT_GIVEN = _NotGiven()


def invalid(name: str, value, allowed: str, kind: type[Exception] = ValueError) -> Exception:
    """The standard error for a bad argument: ``<name>=<value> is not allowed: <allowed>`` (returned, to raise)."""
    return kind(f"{name}={value!r} is not allowed: {allowed}")


def _range_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" in {minimum}..{maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None, optional: bool = False):
    """``value`` as an int if it is an integer (not a bool) within ``minimum..maximum``; None passes when
    ``optional``. TypeError for a non-integer, ValueError for one out of range."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise invalid(name, value, f"must be an int{_range_text(minimum, maximum)}", TypeError)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise invalid(name, value, f"must be an int{_range_text(minimum, maximum)}")
    return int(value)


def check_number(
    name: str,
    value,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    optional: bool = False,
):
    """``value`` as a float if it is a finite real number (not a bool) within the bounds (``minimum`` excluded with
    ``exclusive_minimum``); None passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid(name, value, "must be a finite number", TypeError)
    low = "" if minimum is None else (f" > {minimum}" if exclusive_minimum else f" >= {minimum}")
    high = "" if maximum is None else f" <= {maximum}"
    too_low = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    if not math.isfinite(value) or too_low or (maximum is not None and value > maximum):
        raise invalid(name, value, f"must be a finite number{low}{' and' if low and high else ''}{high}")
    return float(value)


def check_channel_prefixes(
    name: str, prefixes, latent_channels: int | None = None, increasing: bool = False
) -> list[int]:
    """A list of latent-channel prefixes c': non-empty ints in 1..latent_channels (when given), strictly increasing
    when ``increasing`` (a model's ``latent_channel_choices``); repeats are allowed otherwise (a step's draw)."""
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    tensor = torch is not None and isinstance(prefixes, torch.Tensor)
    if isinstance(prefixes, (str, bytes, numbers.Number)) or not (tensor or isinstance(prefixes, Sequence)):
        raise invalid(name, prefixes, "must be a list of ints (latent-channel prefixes)", TypeError)
    prefixes = prefixes.tolist() if tensor else list(prefixes)
    if not prefixes:
        raise invalid(name, prefixes, "it is empty; list at least one latent-channel prefix")
    top = latent_channels if latent_channels is not None else None
    bad = [c for c in prefixes if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 1]
    if top is not None:
        bad += [c for c in prefixes if c not in bad and isinstance(c, numbers.Integral) and c > top]
    if bad:
        allowed = f"1..{top} (latent channels)" if top is not None else "the positive ints"
        raise ValueError(f"{name}={prefixes} has values {bad} outside {allowed}")
    if increasing and any(b <= a for a, b in zip(prefixes, prefixes[1:])):
        raise invalid(name, prefixes, "must be strictly increasing")
    return [int(c) for c in prefixes]


def parse_dtype(name: str, value) -> torch.dtype:
    """A torch dtype from its name in `DTYPE_NAMES` (or a torch.dtype among `DTYPES`)."""
    import torch

    if isinstance(value, torch.dtype) and value in {getattr(torch, t) for t in _TORCH_DTYPE_NAMES.values()}:
        return value
    if value not in _TORCH_DTYPE_NAMES:
        raise invalid(name, value, f"choose one of {list(DTYPE_NAMES)}")
    return getattr(torch, _TORCH_DTYPE_NAMES[value])


def check_device(name: str, value) -> torch.device:
    """``value`` as a torch.device this machine has (refuses ``cuda`` without CUDA, ``cuda:3`` on a 2-GPU machine,
    ``mps`` without MPS), before any model is loaded."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise invalid(name, value, "not a device name; use e.g. cpu, cuda, cuda:1 or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise invalid(name, value, "CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise invalid(name, value, f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise invalid(name, value, "MPS is not available on this machine; use --device cpu")
    return device


def check_image_output(name: str, value) -> Path:
    """``value`` as a Path whose extension PIL can write (``.png``, ``.jpg``, ...), checked before any work."""
    from PIL import Image

    writable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    path = Path(value)
    if path.suffix.lower() not in writable:
        common = [ext for ext in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tiff", ".gif") if ext in writable]
        what = f"a {path.suffix} file" if path.suffix else "a file without an extension"
        raise invalid(name, str(value), f"PIL cannot write {what}; use one of {common}")
    return path


def exit_with_error(message, status: int = USAGE_ERROR_STATUS, *, show: bool = True) -> NoReturn:
    """End a command-line entry point on an error: one line ``error: <message>`` on stderr (unless ``show`` is False,
    e.g. on the ranks other than 0 of a distributed run) and exit status ``status``, without a traceback. Every entry
    point prints its errors through here."""
    if show:
        print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status) from None


def exit_on_user_error(function: Callable, *args, **kwargs):
    """``function(*args, **kwargs)`` for a command-line entry point: a user error (ValueError, TypeError, OSError:
    a bad argument, an unknown class name, a missing folder) prints one line ``error: <message>`` on stderr and exits
    with status 2, like argparse. Any other exception is a bug and keeps its traceback; ``DC_AE_HF_TRACEBACK=1``
    keeps it for user errors too."""
    try:
        return function(*args, **kwargs)
    except (ValueError, TypeError, OSError) as error:
        if os.environ.get("DC_AE_HF_TRACEBACK") == "1":
            raise
        exit_with_error(error)


def check_guidance_interval(guidance_interval: Sequence[float] | None) -> tuple[float, float] | None:
    """Validate ``(t_lo, t_hi)`` with 0 <= t_lo <= t_hi <= 1 (flow time) and return it as floats."""
    if guidance_interval is None:
        return None
    try:
        t_lo, t_hi = (float(v) for v in guidance_interval)
    except (TypeError, ValueError) as error:
        message = f"`guidance_interval` must be a pair (t_lo, t_hi) of floats, got {guidance_interval!r}."
        raise ValueError(message) from error
    if not 0.0 <= t_lo <= t_hi <= 1.0:
        raise ValueError(
            f"`guidance_interval` must satisfy 0 <= t_lo <= t_hi <= 1 (flow time), got {guidance_interval!r}."
        )
    return t_lo, t_hi


def is_statistics_file(images: Any) -> bool:
    """Whether ``images`` names a statistics file (a path ending in ``.npz``) rather than an image set."""
    return isinstance(images, (str, os.PathLike)) and os.fspath(images).endswith(".npz")
