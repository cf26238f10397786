"""Model cards and Hub uploads (huggingface_hub's `ModelCard` templates from `model_cards/`)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData, upload_folder
from huggingface_hub import create_repo as _create_repo

MODEL_CARD_TEMPLATES = ("autoencoder", "pipeline")


def render_model_card(template: str, card_data: ModelCardData, **variables) -> ModelCard:
    """Render `model_cards/<template>.md` (a jinja template) with `card_data` as YAML front matter."""
    if template not in MODEL_CARD_TEMPLATES:
        raise ValueError(f"template={template!r} is not a model card template; choose one of {MODEL_CARD_TEMPLATES}")
    text = (resources.files("dc_ae_hf.model_cards") / f"{template}.md").read_text(encoding="utf-8")
    return ModelCard.from_template(card_data, template_str=text, **variables)


def write_model_card(folder: str | os.PathLike, template: str, card_data: ModelCardData, **variables) -> Path:
    """Render a model card and save it as `<folder>/README.md`."""
    path = Path(folder) / "README.md"
    render_model_card(template, card_data, **variables).save(path)
    return path


def push_folder_to_hub(
    folder: str | os.PathLike, repo_id: str, private: bool | None = None, token: str | None = None
) -> str:
    """Create `repo_id` if needed and upload `folder` to it; returns the commit URL."""
    _create_repo(repo_id, private=private, token=token, exist_ok=True)
    info = upload_folder(repo_id=repo_id, folder_path=str(folder), token=token, commit_message="Upload with dc_ae_hf")
    return str(info)
