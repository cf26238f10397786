"""Class names (``id2label``): one loader and one check for every place that reads them.

The converter (``--id2label``), ``DCAE15Pipeline(id2label=...)`` (and so ``from_pretrained``), the trainers (the
latent cache's ``id2label``) and the app all go through ``check_id2label``; a JSON file goes through
``load_id2label``. The rule: keys are integer class ids (ints, or strings of decimal digits as JSON stores them),
exactly ``0..num_classes-1`` with none twice, and each name is a non-empty string. Anything else is one ValueError
(TypeError for a value of the wrong type) naming the argument or flag, the file when there is one, and the ids at
fault. Without this, a file with ids 0-4 and 6-10 for a 10-class model made "10" the transformer's null (guidance)
class, which then sampled unconditionally.

Standard library only: the command-line scripts check the file before they import torch.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

__all__ = ["check_id2label", "load_id2label"]

_INTEGER = re.compile(r"[+-]?\d+")


def _where(name: str, source: str | os.PathLike | None) -> str:
    return f"{name}={str(source)!r}" if source is not None else name


def _ids_text(ids: list[int], limit: int = 8) -> str:
    ids = sorted(ids)
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def check_id2label(
    id2label,
    num_classes: int | None = None,
    *,
    name: str = "id2label",
    source: str | os.PathLike | None = None,
    model: str = "the transformer",
) -> dict[int, str]:
    """``id2label`` as ``{class id: name}`` in id order, checked (see the module docstring).

    ``num_classes`` (the model's class count), when given, must equal the number of entries. ``name`` is how the
    user wrote the argument (``"id2label"``, ``"--id2label"``), ``source`` the file it came from (named in the
    message), ``model`` what ``num_classes`` belongs to.
    """
    where = _where(name, source)
    if not isinstance(id2label, dict):
        raise TypeError(
            f'{where} is not allowed: it must map class ids to names ({{"0": "name", ...}}), '
            f"got a {type(id2label).__name__}"
        )
    result: dict[int, str] = {}
    for key, value in id2label.items():
        if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and _INTEGER.fullmatch(key))):
            raise ValueError(f"{where} is not allowed: its keys must be integer class ids, got {key!r}")
        class_id = int(key)
        if class_id < 0:
            raise ValueError(f"{where} is not allowed: class ids must be >= 0, got {key!r}")
        if class_id in result:
            raise ValueError(f"{where} is not allowed: class id {class_id} appears twice")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"{where} is not allowed: the name of class {class_id} must be a non-empty string, got {value!r}"
            )
        result[class_id] = value
    count = len(result) if num_classes is None else num_classes
    problems = []
    if num_classes is not None and len(result) != num_classes:
        problems.append(f"it names {len(result)} classes but {model} has {num_classes}")
    missing = sorted(set(range(count)) - set(result))
    extra = sorted(set(result) - set(range(count)))
    if missing:
        problems.append(f"missing {_ids_text(missing)}")
    if extra:
        null = f" ({count} would be {model}'s null class, sampled unconditionally)" if count in extra else ""
        problems.append(f"unexpected {_ids_text(extra)}{null}")
    if problems:
        raise ValueError(
            f"{where} is not allowed: the class ids must be exactly 0..{count - 1}, one per class; "
            + "; ".join(problems)
        )
    return dict(sorted(result.items()))


def load_id2label(
    path: str | os.PathLike,
    num_classes: int | None = None,
    *,
    name: str = "--id2label",
    model: str = "the transformer",
) -> dict[int, str]:
    """Read a JSON file ``{"<class id>": "<name>", ...}`` and ``check_id2label`` it (``num_classes`` optional: give
    it once the model is known). A missing or unreadable file, bad JSON and a key written twice are named too."""
    where = _where(name, path)
    file = Path(path)
    if not file.is_file():
        what = "a folder, not a JSON file" if file.is_dir() else "no such file"
        raise ValueError(f"{where} is not allowed: {what}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{where} is not allowed: it cannot be read as UTF-8 text ({error})") from None

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen = {}
        for key, value in items:
            if key in seen:
                raise ValueError(f"{where} is not allowed: the key {key!r} appears twice")
            seen[key] = value
        return seen

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{where} is not allowed: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f'{where} is not allowed: it must hold a JSON object {{"0": "name", ...}}, got a JSON '
            f"{type(data).__name__}"
        )
    return check_id2label(data, num_classes, name=name, source=path, model=model)
