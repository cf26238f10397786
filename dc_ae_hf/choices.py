"""Names that the command lines offer as choices, torch-free: the scripts list them in ``--help`` and check a flag
against them before importing torch. Each is defined here once and used by the code that implements it."""

from __future__ import annotations

__all__ = ["INCEPTION_FEATURE_LAYERS", "NORM_TYPES", "PHASES", "SOLVERS", "TIME_GRIDS"]

# The pipeline's own ODE solvers (`dc_ae_hf.pipelines.sampling`): fixed-step euler and heun2, adaptive dopri5.
SOLVERS = ("euler", "heun2", "dopri5")
# Time grids for the diffusers schedulers (``flow_sigmas``): "dense_ends" (the pipeline's default) or "uniform" (the
# official linspace grid).
TIME_GRIDS = ("dense_ends", "uniform")
# torch-fidelity's inception-v3-compat feature layers for FID / precision-recall (`dc_ae_hf.metrics.inception`);
# each name is its dimension. "2048" (pool3) is the FID standard; the smaller ones are cheap stand-ins for quick checks.
INCEPTION_FEATURE_LAYERS = ("64", "192", "768", "2048")
# The DC-AE training phases (paper Sec. 3.3; `train_dc_ae.py --phase`, `dc_ae_hf.training.autoencoder`).
PHASES: dict[int, str] = {
    1: "low-resolution full training (all parameters, L1 + LPIPS)",
    2: "high-resolution latent adaptation (layers next to the latent, L1 + LPIPS)",
    3: "low-resolution local refinement (decoder head only, L1 + LPIPS + GAN)",
}
# The normalisation layers of the GAN discriminator (`dc_ae_hf.models.discriminator.PatchDiscriminator`).
NORM_TYPES = ("group_norm", "batch_norm", "none")
