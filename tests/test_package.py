"""`dc_ae_hf/__init__.py` and the package layout: inference never imports training code; one home per name."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT

_INFERENCE_ONLY = """
import sys
import dc_ae_hf, dc_ae_hf.convert, dc_ae_hf.convert.cli, dc_ae_hf.latents, dc_ae_hf.pipelines.sampling, dc_ae_hf.checks
import dc_ae_hf.loading, dc_ae_hf.hub, dc_ae_hf.pipelines.callbacks, dc_ae_hf.models.discriminator
loaded = sorted(m for m in sys.modules if m.startswith("dc_ae_hf.training") or m in ("datasets", "lpips"))
print(loaded)
"""


def test_inference_modules_do_not_import_training_code():
    result = subprocess.run(
        [sys.executable, "-c", _INFERENCE_ONLY], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


def test_no_module_only_re_exports():
    """The package has one home per name: the modules that only re-exported names moved into `dc_ae_hf.training`
    (and `dc_ae_hf.sampling`, moved into `dc_ae_hf.pipelines`) are gone."""
    import importlib.util

    gone = ["autoencoder_training", "diffusion_training", "flow_matching", "losses", "training_utils", "sampling"]
    assert [name for name in gone if importlib.util.find_spec(f"dc_ae_hf.{name}") is not None] == []


_TORCH_FREE = """
import sys
import dc_ae_hf, dc_ae_hf.checks, dc_ae_hf.convert, dc_ae_hf.models, dc_ae_hf.pipelines, dc_ae_hf.training
import dc_ae_hf.training.arguments
print(sorted(m for m in ("torch", "diffusers", "accelerate", "datasets") if m in sys.modules))
"""


def test_package_names_are_lazy():
    """The top-level names are imported at their first use: importing the packages and the trainers' flags imports
    neither torch nor diffusers (a script's --help answers at once), and every name listed is there."""
    result = subprocess.run(
        [sys.executable, "-c", _TORCH_FREE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
    import dc_ae_hf
    import dc_ae_hf.convert
    import dc_ae_hf.models
    import dc_ae_hf.pipelines
    import dc_ae_hf.training

    for package in (dc_ae_hf, dc_ae_hf.convert, dc_ae_hf.models, dc_ae_hf.pipelines, dc_ae_hf.training):
        assert set(package.__all__) <= set(dir(package))
        assert all(getattr(package, name) is not None for name in package.__all__)


_PLAIN_DIFFUSERS = """
import json, sys
import dc_ae_hf
from diffusers import DiffusionPipeline

folder = sys.argv[1]
pipe = DiffusionPipeline.from_pretrained(folder)  # a diffusers pipeline class with dc_ae_hf components
print(type(pipe).__name__, type(pipe.vae).__name__, type(pipe.transformer).__name__)
toy = DiffusionPipeline.from_pretrained(sys.argv[2], trust_remote_code=True)  # the self-contained toy pipeline
print(type(toy).__name__, type(toy.vae).__name__)
"""


def test_a_bare_import_registers_the_components_with_diffusers(tmp_path):
    """diffusers resolves a component of another library only from a module in `sys.modules`: after a bare
    `import dc_ae_hf` (whose names are lazy) `DiffusionPipeline.from_pretrained` still finds dc_ae_hf's classes."""
    import json

    from diffusers import FlowMatchEulerDiscreteScheduler

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from smoke_base_install import tiny_pipeline
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    tiny_pipeline().save_pretrained(tmp_path)
    FlowMatchEulerDiscreteScheduler().save_pretrained(tmp_path / "scheduler")
    index = json.loads((tmp_path / "model_index.json").read_text())
    index.update(_class_name="DiTPipeline", scheduler=["diffusers", "FlowMatchEulerDiscreteScheduler"])
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    toy = REPO_ROOT / "dc_ae_hf" / "assets" / "toy-dcae15-shapes"
    result = subprocess.run(
        [sys.executable, "-c", _PLAIN_DIFFUSERS, str(tmp_path), str(toy)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines == ["DiTPipeline AutoencoderDC15 USiTTransformer2DModel", "DCAE15Pipeline AutoencoderDC15"]
