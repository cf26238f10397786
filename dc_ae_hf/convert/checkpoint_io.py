"""Reading official checkpoints safely: safetensors, `.pt` with `weights_only=True`, or a Hub repo id."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..loading import check_safetensors_file

_TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def spell_argument(name: str, cli: bool, value: str | None = None) -> str:
    """How a message names an argument: `name` / `name=value` for Python callers, `--name` / `--name value` on the
    command line (`python -m dc_ae_hf.convert`, whose flags carry the Python names)."""
    if value is None:
        return f"--{name}" if cli else name
    return f"--{name} {value}" if cli else f"{name}={value}"


class ConverterInputError(ValueError):
    """A converter input that is missing or wrong, described with the facts it carries.

    `str(error)` speaks Python (`num_attention_heads=...`); `error.describe(cli=True)` says the same with the command
    line's flags (`--num_attention_heads ...`), which is what `python -m dc_ae_hf.convert` prints. Subclasses set
    their attributes, then call `super().__init__()`.
    """

    def __init__(self) -> None:
        super().__init__(self.describe(cli=False))

    def describe(self, cli: bool = False) -> str:
        raise NotImplementedError


def load_original_checkpoint(
    path_or_repo_id: str | os.PathLike, filename: str = "model.safetensors", **hub_kwargs
) -> dict:
    """Load an official checkpoint as a (possibly nested) dict of tensors.

    Accepts a local `.safetensors` file, a local torch file (`.pt`, `.pth`, `.ckpt`, `.bin`, read with
    `torch.load(..., weights_only=True)`: no pickled code is executed), a local folder holding `filename`, or a
    Hugging Face Hub repo id (the official `DCAE_HF` / `DCAE_Diffusion_HF` layout: `model.safetensors`; `hub_kwargs`
    such as `revision` or `token` go to `hf_hub_download`).
    """
    path = Path(path_or_repo_id)
    if path.is_dir():
        path = path / filename
    if not path.exists():
        if not _REPO_ID.fullmatch(str(path_or_repo_id)) or path.suffix in (".safetensors", *_TORCH_SUFFIXES):
            raise FileNotFoundError(
                f"checkpoint {str(path_or_repo_id)!r} is neither an existing file nor a Hub repo id."
            )
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(str(path_or_repo_id), filename, **hub_kwargs))
    if path.suffix == ".safetensors":
        check_safetensors_file(path)  # a truncated or corrupt file is named
        return load_file(str(path))
    if path.suffix in _TORCH_SUFFIXES:
        try:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
            raise ValueError(
                f"checkpoint {str(path)!r} could not be read as a torch file (truncated, corrupt, or it needs "
                f"pickled code, which weights_only=True refuses): {str(error).splitlines()[0] if str(error) else ''}"
            ) from None
        except Exception as error:  # noqa: BLE001 - pickle reading other bytes fails with KeyError, IndexError, ...
            raise ValueError(
                f"checkpoint {str(path)!r} is not a checkpoint: torch cannot read it as a saved state dict "
                f"({type(error).__name__}: {error}); give the official .safetensors or .pt file"
            ) from None
        if not isinstance(loaded, dict):
            raise ValueError(
                f"checkpoint {str(path)!r} is not a checkpoint: it holds a {type(loaded).__name__}, not a dict of "
                "weights; give the official .safetensors or .pt file"
            )
        return loaded
    raise ValueError(
        f"checkpoint {str(path)!r} has an unsupported extension {path.suffix!r}; "
        f"use .safetensors or one of {_TORCH_SUFFIXES}."
    )
