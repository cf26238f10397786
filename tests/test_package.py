"""`dc_ae_hf/__init__.py` and the package layout: inference never imports training code; one home per name."""

from __future__ import annotations

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
