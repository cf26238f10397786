"""One ownership rule for every command that writes a folder.

A writer may write into a folder that is new, empty, or its own earlier output (which it then replaces or resumes).
Anything else (a training run, another tool's output, unrelated files) is refused before anything is written, with
one line saying what the folder holds. A writer records itself in the folder (`OWNER_FILE`, a small JSON file)
once it has written it; outputs of earlier versions, which have no such file, are recognised by their own files.

    claim_output_folder(output, "python -m dc_ae_hf.convert pipeline", "--output")  # before loading anything
    ...  # write the folder
    mark_output_folder(output, "python -m dc_ae_hf.convert pipeline")
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "OWNER_FILE",
    "card_names",
    "claim_output_folder",
    "clear_output_folder",
    "describe_folder",
    "folder_writer",
    "mark_output_folder",
]

OWNER_FILE = ".dc_ae_hf_output.json"  # {"writer": "<the command that wrote the folder>"}


def folder_writer(folder: str | os.PathLike) -> str | None:
    """The writer recorded in `folder` (`mark_output_folder`), None when none is (or the record is unreadable)."""
    try:
        writer = json.loads((Path(folder) / OWNER_FILE).read_text()).get("writer")
    except (OSError, ValueError, AttributeError):
        return None
    return writer if isinstance(writer, str) else None


def describe_folder(folder: str | os.PathLike) -> str:
    """What a non-empty folder holds, in a few words (for an error message)."""
    path = Path(folder)
    writer = folder_writer(path)
    if writer is not None:
        return f"the output of `{writer}`"
    config = path / "training_config.json"
    if config.is_file():
        try:
            script = json.loads(config.read_text()).get("script")
        except (OSError, ValueError, AttributeError):
            script = None
        return f"a training run of {script}.py" if isinstance(script, str) else "a training run (training_config.json)"
    if any(p.name.startswith("checkpoint-") for p in path.iterdir()):
        return "training checkpoints (checkpoint-*)"
    if (path / "model_index.json").is_file():
        return "a pipeline (model_index.json)"
    if (path / "metadata.json").is_file() and any(path.glob("*.safetensors")):
        return "a latent cache (metadata.json and shards)"
    if (path / "generation_settings.json").is_file():
        return "evaluation samples (generation_settings.json)"
    if (path / "config.json").is_file():
        return "a model (config.json)"
    entries = sorted(p.name for p in path.iterdir())
    return f"other files ({', '.join(entries[:5])}{', ...' * (len(entries) > 5)})"


def card_names(command: str) -> Callable[[Path], bool]:
    """For `claim_output_folder(earlier_output=...)`: recognises a folder whose model card (README.md) names
    `command`, as the converter's cards do (outputs written before the writer was recorded in the folder)."""

    def check(folder: Path) -> bool:
        try:
            return f"`{command}" in (folder / "README.md").read_text(encoding="utf-8")
        except OSError:
            return False

    return check


def claim_output_folder(
    folder: str | os.PathLike,
    writer: str,
    flag: str,
    earlier_output: Callable[[Path], bool] | None = None,
) -> Path:
    """Check, before anything is written, that `writer` may write `folder`: it does not exist, is empty, or holds
    `writer`'s own earlier output (recorded by `mark_output_folder`, or recognised by `earlier_output` for outputs of
    earlier versions). Otherwise ValueError naming `flag`, the folder and what it holds. Returns the folder."""
    path = Path(folder)
    if not path.exists():
        return path
    if not path.is_dir():
        raise ValueError(f"{flag}={str(folder)!r} is not allowed: it is a file, not a folder")
    if not any(path.iterdir()):
        return path
    if folder_writer(path) == writer or (folder_writer(path) is None and earlier_output and earlier_output(path)):
        return path
    raise ValueError(
        f"{flag}={str(folder)!r} is not allowed: it holds {describe_folder(path)}, which `{writer}` would overwrite; "
        "choose a new or empty folder (or this command's own earlier output, which it replaces)"
    )


def clear_output_folder(folder: str | os.PathLike) -> Path:
    """Delete a folder that `claim_output_folder` allowed (empty, or the writer's own earlier output) so that the
    writer's new output replaces it whole (no stale file of the earlier output, e.g. its model card, stays)."""
    path = Path(folder)
    if path.is_dir():
        shutil.rmtree(path)
    return path


def mark_output_folder(folder: str | os.PathLike, writer: str) -> None:
    """Record `writer` as the writer of `folder` (atomically), so that it may replace the folder later."""
    path = Path(folder) / OWNER_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"writer": writer}) + "\n")
    os.replace(tmp, path)
