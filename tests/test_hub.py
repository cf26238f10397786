"""Model cards say how to load a folder (plain diffusers first when it carries its code); Hub uploads fail as one clear
line that names the repo and the (complete) local folder, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx2
import pytest
from conftest import REPO_ROOT, fixture_path
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError

import dc_ae_hf
import dc_ae_hf.hub as hub
from dc_ae_hf.hub import HubPushError, push_folder_to_hub, write_autoencoder_card, write_pipeline_card


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "converted"
    out.mkdir()
    (out / "config.json").write_text("{}")
    return out


def _assert_one_line_naming(error: HubPushError, repo_id: str, folder) -> None:
    message = str(error)
    assert "\n" not in message and repo_id in message
    assert f"the local folder {os.path.abspath(folder)} is complete" in message
    assert error.repo_id == repo_id and error.folder == os.path.abspath(folder)


def test_offline_push_fails_as_one_line(folder):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests/conftest.py
    with pytest.raises(HubPushError) as info:
        push_folder_to_hub(folder, "someone/x")
    assert isinstance(info.value, RuntimeError) and "offline" in str(info.value).lower()
    _assert_one_line_naming(info.value, "someone/x", folder)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback
    assert (folder / "config.json").read_text() == "{}"


_RESPONSE_401 = httpx2.Response(401, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))


@pytest.mark.parametrize(
    "failure",
    [
        HfHubHTTPError(
            "401 Client Error: Unauthorized\nInvalid credentials in Authorization header", response=_RESPONSE_401
        ),
        httpx2.ConnectError("[Errno -2] Name or service not known"),  # no network
        LocalTokenNotFoundError("Token is required (`token=True`), but no token found."),
        HFValidationError("Repo id must be in the form 'repo_name' or 'namespace/repo_name'"),
        OSError("disk full"),
    ],
    ids=["bad-token", "no-network", "missing-token", "bad-repo-id", "os-error"],
)
def test_every_push_failure_becomes_one_line(folder, monkeypatch, failure):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(hub, "_create_repo", fail)
    with pytest.raises(HubPushError) as info:
        push_folder_to_hub(folder, "someone/x", token="hf_wrong")
    _assert_one_line_naming(info.value, "someone/x", folder)
    assert type(failure).__name__ in str(info.value) and info.value.original is failure


def test_a_missing_folder_is_not_pushed(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to push"):
        push_folder_to_hub(tmp_path / "nope", "someone/x")


@pytest.mark.slow  # a subprocess: imports torch and diffusers again
def test_converter_cli_push_failure_keeps_the_folder_and_prints_one_error(tmp_path):
    out = tmp_path / "converted"
    checkpoint = str(fixture_path("ae15_a.original.safetensors"))
    command = [sys.executable, "-m", "dc_ae_hf.convert", "autoencoder", "--checkpoint", checkpoint]
    command += ["--latent_channel_choices", "4", "8", "12", "16", "--scaling_factor", "0.7"]
    command += ["--output", str(out), "--push_to_hub", "someone/x"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "someone/x" in error[0] and f"the local folder {out} is complete" in error[0]
    # Written completely, and said so before the upload was tried.
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "README.md"):
        assert (out / name).is_file(), name
    assert result.stdout.index(f"wrote {out}") < result.stdout.index("uploading")


@pytest.mark.parametrize("self_contained", [True, False])
def test_cards_say_how_to_load_the_folder(tmp_path, self_contained):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from smoke_base_install import tiny_pipeline
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    pipe = tiny_pipeline()
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder, self_contained=self_contained)
    text = dict(description="d", source="s", provenance="p", solver="dopri5")
    card = write_pipeline_card(folder, pipe, model_name="tiny", repo_id="me/tiny", **text).read_text()
    pipe.vae.save_pretrained(folder / "ae", self_contained=self_contained)
    ae_card = write_autoencoder_card(folder / "ae", pipe.vae, "ae", "me/ae", "s", "p").read_text()
    package = card.index('DCAE15Pipeline.from_pretrained("me/tiny")')
    if self_contained:  # the plain-diffusers snippet first; what the scheduler/euler/dopri5 need
        assert card.index('DiffusionPipeline.from_pretrained("me/tiny", trust_remote_code=True)') < package
        assert f"generated from dc_ae_hf {dc_ae_hf.__version__}" in card and "pip install torchdiffeq" in card
        plain_ae = ae_card.index('AutoModel.from_pretrained("me/ae", trust_remote_code=True)')
        assert plain_ae < ae_card.index('AutoencoderDC15.from_pretrained("me/ae")')
    else:  # needs dc_ae_hf, and says how to re-save it for plain diffusers
        assert "It needs `dc_ae_hf` (`pip install dc-ae-hf`)" in card and "trust_remote_code" in card
        assert 'from_pretrained("me/tiny").save_pretrained("<folder>", self_contained=True)' in card
        assert 'AutoencoderDC15.from_pretrained("me/ae").save_pretrained("<folder>", self_contained=True)' in ae_card
