"""Packaging for dc_ae_hf: DC-AE 1.5 and USiT as diffusers models, pipelines and trainers."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

# Lower bounds: `AutoencoderMixin` and the slicing fix (diffusers PR #12343) landed in diffusers 0.36; SDPA with `enable_gqa`-free signatures and
# `torch.load(weights_only=True)` defaults need torch >= 2.4.
INSTALL_REQUIRES = [
    "torch>=2.4",
    "accelerate>=1.0",  # diffusers' low-memory loading and model offload
    "torchvision>=0.19",
    "diffusers>=0.36",
    "huggingface_hub>=0.34",
    "safetensors>=0.4",
    "numpy>=1.24",
    "Pillow>=9.0",
    "tqdm>=4.60",
    # the official USiT samplers (euler / heun2 / dopri5) are torchdiffeq's; small and pure Python (needs scipy)
    "torchdiffeq>=0.2.4",
]

EXTRAS = {
    "train": [
        "datasets>=3.0",
        "lpips>=0.1.4",
        "torch-fidelity>=0.3",
        "torchmetrics>=1.0",  # SSIM as the official evaluation computes it (dc_gen/aecore/trainer.py)
        "tensorboard>=2.14",
        "scipy>=1.10",
        "transformers>=4.45",
        "matplotlib>=3.7",
    ],
    # the demo app (app/app.py): Gradio, and what the latent pictures need
    "app": ["gradio>=5", "matplotlib>=3.7", "torchmetrics>=1.0"],
    "test": ["pytest>=8.0", "pytest-timeout>=2.2", "playwright>=1.40"],  # playwright drives Debian's chromium
    "dev": ["ruff==0.17.6"],  # pinned: the formatter's output is part of CI
}
EXTRAS["test"] = EXTRAS["test"] + EXTRAS["train"] + EXTRAS["app"]
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="dc-ae-hf",
    version="0.1.0",
    description="DC-AE 1.5 (structured latent space) and USiT for the Hugging Face diffusers ecosystem",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # model_cards/ is installed as the data package `dc_ae_hf.model_cards` (templates read by dc_ae_hf.hub).
    packages=find_packages(include=["dc_ae_hf", "dc_ae_hf.*"]) + ["dc_ae_hf.model_cards"],
    package_dir={"dc_ae_hf.model_cards": "model_cards"},
    package_data={
        "dc_ae_hf": ["data/*.json", "assets/*", "assets/*/*", "assets/*/*/*"],
        "dc_ae_hf.model_cards": ["*.md"],
    },
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
