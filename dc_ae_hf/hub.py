"""Model cards and Hub uploads (huggingface_hub's `ModelCard` templates from `model_cards/`).

The two cards are filled here, once each, for every producer: `write_autoencoder_card` (the converter, the
autoencoder trainer) and `write_pipeline_card` (the pipeline converter, the USiT trainer, the toy recipe). Producers
pass what is theirs: the source, the provenance, the metrics.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData, upload_folder
from huggingface_hub import create_repo as _create_repo
from huggingface_hub import errors as _hub_errors

from dc_ae_hf.latents import trained_prefixes
from dc_ae_hf.self_contained import code_version, is_self_contained

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


def _code_variables(folder: str | os.PathLike) -> dict:
    """What a card says about loading: whether `folder` carries its code (`save_pretrained(..., self_contained=True)`:
    the plain-diffusers snippet comes first) and the dc_ae_hf version the code came from."""
    return {"self_contained": is_self_contained(folder), "code_version": code_version(folder)}


def transformer_summary(model) -> str:
    """One line: depth, width, heads and parameter count of a `USiTTransformer2DModel`."""
    cfg = model.config
    parameters = sum(p.numel() for p in model.parameters())
    return (
        f"USiT, {cfg.num_layers} layers ({cfg.num_layers + 1} blocks), hidden "
        f"{cfg.num_attention_heads * cfg.attention_head_dim}, {cfg.num_attention_heads} heads, patch {cfg.patch_size}, "
        f"{parameters / 1e6:.2f}M parameters"
    )


def write_autoencoder_card(
    folder: str | os.PathLike,
    vae,
    model_name: str,
    repo_id: str,
    source: str,
    provenance: str,
    description: str = "Deep Compression Autoencoder",
    scaling_factor=None,
    metrics_table: str = "",
    base_model: str | None = None,
) -> Path:
    """`model_cards/autoencoder.md` for an `AutoencoderDC15` / `AutoencoderDC` as `<folder>/README.md`.

    Args:
        description: the first words; " with a structured latent space (...)." is added for a structured model.
        scaling_factor: what the card shows (default: the config's), e.g. "0.3 (not known)".
        base_model: a Hub id the model was fine-tuned from (ignored when it is a local path).
    """
    config = vae.config
    structured = bool(getattr(config, "latent_channel_choices", None))
    choices = list(trained_prefixes(vae) or [config.latent_channels])
    card_data = ModelCardData(
        library_name="diffusers",
        license="other",
        tags=["dc-ae", "autoencoder", "dc_ae_hf"],
        base_model=base_model if base_model and "/" in base_model and not Path(base_model).exists() else None,
    )
    return write_model_card(
        folder,
        "autoencoder",
        card_data,
        **_code_variables(folder),
        model_name=model_name,
        description=description
        + (" with a structured latent space (decode from any channel prefix)." if structured else "."),
        source=source,
        repo_id=repo_id,
        structured=structured,
        example_channels=choices[0],
        spatial_compression=vae.spatial_compression_ratio,
        latent_channels=config.latent_channels,
        channel_choices=f"{choices[0]}, ..., {choices[-1]} ({len(choices)} prefixes)" if structured else "no",
        shortcuts="yes (DC-AE 1.0)" if getattr(vae, "has_latent_shortcuts", False) else "no",
        scaling_factor=config.scaling_factor if scaling_factor is None else scaling_factor,
        num_parameters=f"{sum(p.numel() for p in vae.parameters()) / 1e6:.1f}M",
        provenance=provenance,
        metrics_table=metrics_table,
    )


def write_pipeline_card(
    folder: str | os.PathLike,
    pipe,
    model_name: str,
    repo_id: str,
    description: str,
    source: str,
    provenance: str,
    metrics_table: str = "",
    guidance_scale: float = 1.0,
    solver: str = "dopri5",
    num_inference_steps: int = 250,
    example_labels: list | None = None,
    scaling_factor=None,
) -> Path:
    """`model_cards/pipeline.md` for a `DCAE15Pipeline` as `<folder>/README.md` (example labels: the first two class
    names unless given; scaling factor shown as in the config unless given)."""
    vae, model = pipe.vae, pipe.transformer
    if example_labels is None:
        id2label = pipe.config.id2label or {}
        example_labels = [id2label[k].split(",")[0] for k in sorted(id2label, key=int)[:2]] or [0, 1]
    size = model.config.sample_size
    return write_model_card(
        folder,
        "pipeline",
        ModelCardData(
            library_name="diffusers", license="other", tags=["dc-ae", "usit", "class-conditional", "dc_ae_hf"]
        ),
        **_code_variables(folder),
        model_name=model_name,
        description=description,
        source=source,
        repo_id=repo_id,
        example_labels=json.dumps(example_labels),
        guidance_scale=guidance_scale,
        solver=solver,
        num_inference_steps=num_inference_steps,
        autoencoder=f"{type(vae).__name__}, f{vae.spatial_compression_ratio}c{vae.config.latent_channels}",
        transformer=transformer_summary(model),
        latent_shape=f"{model.config.in_channels}x{size}x{size}",
        scaling_factor=vae.config.scaling_factor if scaling_factor is None else scaling_factor,
        num_classes=model.config.num_classes,
        provenance=provenance,
        metrics_table=metrics_table,
    )


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
            repo_id=repo_id,
            folder_path=str(path),
            token=token,
            commit_message="Upload with dc_ae_hf",
            ignore_patterns=[".dc_ae_hf_output.json"],  # dc_ae_hf.output_folders.OWNER_FILE: local bookkeeping
        )
    except _push_failures() as error:
        raise HubPushError(repo_id, os.path.abspath(path), error) from None
    return str(info)
