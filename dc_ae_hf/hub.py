"""Model cards and Hub uploads (huggingface_hub's `ModelCard` templates from `model_cards/`)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData, upload_folder
from huggingface_hub import create_repo as _create_repo
from huggingface_hub import errors as _hub_errors

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


def _push_failures() -> tuple[type[BaseException], ...]:
    """What a failed upload raises: HTTP errors (bad or missing token, no permission, server errors), transport
    errors (no network), offline mode and a missing token (OSError), an invalid repo id (HFValidationError)."""
    kinds: list[type[BaseException]] = [OSError, _hub_errors.HfHubHTTPError, _hub_errors.HFValidationError]
    transport = getattr(_hub_errors, "HTTPError", None)  # huggingface_hub >= 1.0: the httpx error family
    if isinstance(transport, type) and issubclass(transport, BaseException):
        kinds.append(transport)
    try:
        import requests

        kinds.append(requests.RequestException)  # huggingface_hub < 1.0
    except ImportError:
        pass
    return tuple(kinds)


class HubPushError(RuntimeError):
    """A Hub upload failed. The message is one line naming the repo and saying that the local folder is complete;
    attributes `repo_id`, `folder` (absolute path) and `original` (the exception from huggingface_hub)."""

    def __init__(self, repo_id: str, folder: str, original: BaseException):
        self.repo_id, self.folder, self.original = repo_id, folder, original
        lines = [line.strip() for line in str(original).splitlines() if line.strip()]
        reason = type(original).__name__ + (f": {lines[0][:200]}" if lines else "")
        super().__init__(
            f"could not push to the Hub repo {repo_id!r} ({reason}); the local folder {folder} is complete, nothing is "
            f"lost: upload it later with `hf upload {repo_id} {folder}`"
        )


def push_folder_to_hub(
    folder: str | os.PathLike, repo_id: str, private: bool | None = None, token: str | None = None
) -> str:
    """Create `repo_id` if needed and upload `folder` to it; returns the commit URL.

    A failed upload (no network, offline mode, a bad or missing token, an HTTP error) raises `HubPushError` with a
    one-line message naming the repo and the folder, which is left as it was.
    """
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"folder={str(folder)!r} is not a folder: nothing to push to {repo_id!r}")
    try:
        _create_repo(repo_id, private=private, token=token, exist_ok=True)
        info = upload_folder(
            repo_id=repo_id, folder_path=str(path), token=token, commit_message="Upload with dc_ae_hf"
        )
    except _push_failures() as error:
        raise HubPushError(repo_id, os.path.abspath(path), error) from None
    return str(info)
