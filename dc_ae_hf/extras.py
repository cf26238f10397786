"""What the optional extras of ``pip install dc-ae-hf[...]`` add, and the error for a missing one.

The base install (``pip install dc-ae-hf``) loads, converts and samples the models: ``AutoencoderDC15``,
``USiTTransformer2DModel``, ``DCAE15Pipeline`` with its schedulers and the official euler / heun2 / dopri5 solvers,
and ``python -m dc_ae_hf.convert``. Training, data and metrics modules need the ``train`` extra.
"""

from __future__ import annotations

EXTRAS = {
    "train": "trainers, datasets and the latent cache, metrics (LPIPS, FID/IS, FD-DINOv2), image grids and plots",
    "test": "the train extra plus pytest",
    "dev": "ruff, pinned",
}


def missing_extra(error: ImportError, feature: str, extra: str = "train") -> ImportError:
    """An ImportError naming the missing package and the extra to install; raise it ``from error``."""
    package = error.name or str(error)
    return ImportError(
        f"{feature} needs the optional package {package!r}, which is not installed. Install the {extra!r} extra: "
        f"pip install 'dc-ae-hf[{extra}]'"
    )
