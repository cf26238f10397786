"""Checks before ``from_pretrained``: clear errors for a missing local folder, a missing component, a corrupt file.

diffusers treats every string that is not an existing folder as a Hub repo id, so a mistyped local path ends in a
long "couldn't connect to huggingface.co / check your internet connection" message, and a truncated weights file in
"Unable to load weights from checkpoint file". These helpers run first and say what is actually wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError, safe_open

__all__ = [
    "PretrainedChecksMixin",
    "check_pretrained_folder",
    "check_safetensors_file",
    "looks_like_local_path",
    "resolve_pretrained_path",
]


def looks_like_local_path(name: str | os.PathLike) -> bool:
    """True when ``name`` can only be a local path, not a Hub repo id (``org/name``).

    Absolute paths, paths starting with ``.`` or ``~``, paths with a backslash or with more or fewer than one ``/``
    (a Hub id has exactly one), and ``os.PathLike`` objects are local.
    """
    if isinstance(name, os.PathLike):
        return True
    name = str(name)
    return os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.count("/") != 1


def resolve_pretrained_path(name_or_path: str | os.PathLike, what: str, subfolder: str | None = None) -> Path | None:
    """The local folder ``name_or_path`` (expanded), or None for a Hub repo id; refuses a path that does not exist.

    Args:
        name_or_path: what the user passed to ``from_pretrained``.
        what: "pipeline" or "model", for the messages.
        subfolder: the ``subfolder`` argument of ``from_pretrained`` (checked to exist in a local folder).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"{what} path or Hub id must be a str or os.PathLike, got {type(name_or_path).__name__}.")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if subfolder and not (path / subfolder).is_dir():
            raise FileNotFoundError(f"{what} folder {str(path)!r} has no subfolder {subfolder!r}.")
        return path
    if path.exists():
        raise ValueError(
            f"{str(name_or_path)!r} is a file; from_pretrained expects a {what} folder (written by save_pretrained) "
            "or a Hub repo id. Official checkpoints are converted with `python -m dc_ae_hf.convert`."
        )
    if looks_like_local_path(name_or_path):
        raise FileNotFoundError(
            f"No such local {what} folder: {str(name_or_path)!r} (resolved to {str(path.absolute())!r}); it is not a "
            "Hub repo id either (those look like 'org/name')."
        )
    return None


def model_subfolder_hint(name_or_path: str | os.PathLike, subfolders: tuple[str, ...] = ("vae_ema", "vae")) -> str:
    """For a local folder that has no `config.json` but model subfolders (a pipeline folder's `vae/`, a training
    run's `vae_ema/` and `vae/`), the text `"; it holds the model folder(s) <path>/vae_ema, ... : pass one of them"`;
    otherwise ``""``. Appended to a loading error, it names what the user most likely meant."""
    path = Path(name_or_path)
    if not path.is_dir() or (path / "config.json").is_file():
        return ""
    found = [str(path / name) for name in subfolders if (path / name / "config.json").is_file()]
    if not found:
        return ""
    return f"; it holds the model folder{'s' * (len(found) > 1)} {', '.join(found)}: pass {'one of them' if len(found) > 1 else 'it'}"


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Raise a ValueError naming ``path`` when it is not a complete safetensors file (truncated or corrupt)."""
    try:
        with safe_open(str(path), framework="pt") as file:
            file.keys()
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{str(path)!r} is truncated or corrupt ({error}); download or save it again.") from None


def check_pretrained_folder(folder: str | os.PathLike, what: str, subfolder: str | None = None) -> None:
    """Check a local ``save_pretrained`` folder before diffusers reads it.

    A pipeline folder must have ``model_index.json`` and a folder for every component it lists (a component set to
    ``null`` is an optional one left out); a model folder must have ``config.json``. Every ``.safetensors`` file of
    the model or of each component must be complete.
    """
    folder = Path(folder) / (subfolder or "")
    if what != "pipeline":
        if not (folder / "config.json").is_file():
            hint = ""
            if (folder / "model_index.json").is_file():  # a pipeline: its models are in subfolders
                parts = sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())
                hint = (
                    f" It is a pipeline folder (model_index.json); its models are in the subfolders {parts}: load "
                    "one with subfolder=..."
                )
            raise FileNotFoundError(f"{str(folder)!r} is not a {what} folder: it has no config.json.{hint}")
        _check_weights(folder)
        return
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        hint = ""
        if (folder / "config.json").is_file():  # one model of a pipeline, or a model saved alone
            hint = (
                " It is a model folder (config.json): give the pipeline folder that holds it, or load the model "
                "itself."
            )
        raise FileNotFoundError(f"{str(folder)!r} is not a pipeline folder: it has no model_index.json.{hint}")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or entry[0] is None:
            continue  # config values (id2label, ...) and optional components saved as [null, null]
        if not (folder / name).is_dir():
            raise FileNotFoundError(
                f"pipeline folder {str(folder)!r} is missing its component {name!r} (model_index.json lists "
                f"{name}: {entry}); the folder is incomplete."
            )
        _check_weights(folder / name)


def _check_weights(folder: Path) -> None:
    for file in sorted(folder.glob("*.safetensors")):
        check_safetensors_file(file)


class PretrainedChecksMixin:
    """Put first in a ``ModelMixin`` subclass's bases: ``from_pretrained`` checks a local folder before loading it.

    Reports a missing local folder as such, a folder without ``config.json``, and a truncated or corrupt weights
    file by name; Hub repo ids go to diffusers unchanged. The ``auto_map`` of a self-contained folder's config (see
    ``dc_ae_hf.self_contained``) is not taken for a config argument.
    """

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # `auto_map` (config.json of a self-contained folder: which file holds the class, for diffusers' AutoModel)
        # says where the code is, it is not an argument of the class: not reported as an unexpected config key
        config_dict = {key: value for key, value in config_dict.items() if key != "auto_map"}
        return super().extract_init_dict(config_dict, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        subfolder = kwargs.get("subfolder")
        path = resolve_pretrained_path(pretrained_model_name_or_path, "model", subfolder)
        if path is not None:
            check_pretrained_folder(path, "model", subfolder)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
