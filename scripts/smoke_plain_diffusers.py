"""Self-contained folders in plain diffusers: load, sample and decode without dc_ae_hf, and match dc_ae_hf's results.

Two steps, in two environments (`make smoke-plain`, part of CI):

    python scripts/smoke_plain_diffusers.py prepare DIR   # with dc_ae_hf: folders and reference outputs in DIR
    python scripts/smoke_plain_diffusers.py check DIR     # with torch + diffusers only (no dc_ae_hf, no torchdiffeq)

`prepare` saves a tiny pipeline with `save_pretrained(..., self_contained=True)` and records what dc_ae_hf's own
classes (`DCAE15Pipeline.from_pretrained`, `AutoencoderDC15`) sample and decode from it and from the bundled toy
pipeline `dc_ae_hf/assets/toy-dcae15-shapes`, with fixed inputs. `check` loads the same folders with
`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` and `AutoModel.from_pretrained(...,
trust_remote_code=True)`, samples with the default scheduler and the euler solver, decodes, and compares (max abs
difference <= 1e-5). One line per check; exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TOLERANCE = 1e-5
GUIDANCE = 2.0
STEPS = 4
# What each pipeline is asked for: (name, class labels, call arguments besides latents and guidance).
CALLS = {
    "tiny": (["one", 2], [("scheduler", {}), ("euler", {"solver": "euler"}), ("prefix", {"latent_channels": 4})]),
    "toy": (["circle", "square"], [("scheduler", {}), ("euler", {"solver": "euler"})]),
}


def say(name: str, ok: bool, detail: str = "") -> None:
    if not ok:
        raise SystemExit(f"FAIL {name} {detail}".rstrip())
    print(f"ok   {name} {detail}".rstrip())


def _noise(pipe, batch: int, channels: int | None = None) -> torch.Tensor:
    config = pipe.transformer.config
    shape = (batch, channels or config.in_channels, config.sample_size, config.sample_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def _run(pipe, which: str) -> dict[str, torch.Tensor]:
    """Every output the two sides compare: images of each call, the final latent, and the vae's decoding of it."""
    labels, calls = CALLS[which]
    pipe.set_progress_bar_config(disable=True)
    outputs = {}
    for name, arguments in calls:
        noise = _noise(pipe, len(labels), arguments.get("latent_channels"))
        common = dict(latents=noise, guidance_scale=GUIDANCE, num_inference_steps=STEPS, **arguments)
        outputs[f"{which}.{name}"] = pipe(labels, output_type="pt", **common).images
        outputs[f"{which}.{name}.latent"] = pipe(labels, output_type="latent", **common).images
    return outputs


def _decode(vae, latent: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.decode(latent / vae.config.scaling_factor).sample


def prepare(folder: Path) -> None:
    """With dc_ae_hf: the self-contained tiny pipeline and the reference outputs of dc_ae_hf's own classes."""
    import dc_ae_hf
    from dc_ae_hf import AutoencoderDC15, DCAE15Pipeline, USiTTransformer2DModel

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from smoke_base_install import tiny_pipeline

    folder.mkdir(parents=True, exist_ok=True)
    tiny = folder / "tiny-pipeline"
    tiny_pipeline().save_pretrained(tiny, self_contained=True)
    toy = Path(dc_ae_hf.__file__).parent / "assets" / "toy-dcae15-shapes"
    references = {}
    for which, path in (("tiny", tiny), ("toy", toy)):
        pipe = DCAE15Pipeline.from_pretrained(path)
        references.update(_run(pipe, which))
        vae = AutoencoderDC15.from_pretrained(path / "vae")
        references[f"{which}.decoded"] = _decode(vae, references[f"{which}.euler.latent"])
        transformer = USiTTransformer2DModel.from_pretrained(path / "transformer")
        with torch.no_grad():
            noise = _noise(pipe, 1)
            references[f"{which}.velocity"] = transformer(noise, torch.tensor([0.5]), torch.tensor([1])).sample
    save_file({k: v.contiguous() for k, v in references.items()}, folder / "reference.safetensors")
    manifest = {"tiny": str(tiny.resolve()), "toy": str(toy.resolve()), "dc_ae_hf": dc_ae_hf.__version__}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(f"wrote {folder}: {len(references)} reference outputs of dc_ae_hf {dc_ae_hf.__version__}")


def _close(name: str, got: torch.Tensor, expected: torch.Tensor) -> None:
    same_shape = tuple(got.shape) == tuple(expected.shape)
    diff = (got.float() - expected.float()).abs().max().item() if same_shape else float("inf")
    say(name, same_shape and diff <= TOLERANCE, f"max abs diff {diff:.1e} (shape {tuple(got.shape)})")


def check(folder: Path) -> None:
    """Without dc_ae_hf: load the folders with plain diffusers and compare with the reference outputs."""
    try:
        import dc_ae_hf  # noqa: F401
    except ImportError:
        say("dc_ae_hf is not importable here", True)
    else:
        say("dc_ae_hf is not importable here", False, f"(found at {dc_ae_hf.__file__})")
    import diffusers
    from diffusers import AutoModel, DiffusionPipeline

    without_torchdiffeq = True
    try:
        import torchdiffeq  # noqa: F401
    except ImportError:
        pass
    else:
        without_torchdiffeq = False
    print(
        f"note diffusers {diffusers.__version__}, torch {torch.__version__}, torchdiffeq absent: {without_torchdiffeq}"
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    references = load_file(folder / "reference.safetensors")
    for which in ("tiny", "toy"):
        path = Path(manifest[which])
        pipe = DiffusionPipeline.from_pretrained(path, trust_remote_code=True)
        say(f"{which}: DiffusionPipeline.from_pretrained", type(pipe).__name__ == "DCAE15Pipeline", f"{type(pipe)}")
        say(f"{which}: remote code", type(pipe).__module__.startswith("diffusers_modules"), type(pipe).__module__)
        for name, got in _run(pipe, which).items():
            _close(f"{which}: {name.split('.', 1)[1]} = dc_ae_hf's", got, references[name])
        vae = AutoModel.from_pretrained(
            str(path / "vae"), trust_remote_code=True
        )  # a str: diffusers 0.42 fails on a Path
        say(f"{which}: AutoModel vae", type(vae).__name__ == "AutoencoderDC15", f"{type(vae)}")
        _close(
            f"{which}: AutoModel vae decode = dc_ae_hf's",
            _decode(vae, references[f"{which}.euler.latent"]),
            references[f"{which}.decoded"],
        )
        transformer = AutoModel.from_pretrained(str(path / "transformer"), trust_remote_code=True)
        with torch.no_grad():
            velocity = transformer(_noise(pipe, 1), torch.tensor([0.5]), torch.tensor([1])).sample
        _close(f"{which}: AutoModel transformer velocity = dc_ae_hf's", velocity, references[f"{which}.velocity"])
        if without_torchdiffeq:
            try:
                pipe([0], solver="heun2", num_inference_steps=2)
            except ImportError as error:
                say(f"{which}: heun2 names torchdiffeq", "pip install torchdiffeq" in str(error), f"({error})")
            else:
                say(f"{which}: heun2 names torchdiffeq", False, "(sampled without torchdiffeq?)")
    print("plain diffusers: all checks passed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["prepare", "check"])
    parser.add_argument("folder", type=Path, help="where prepare writes and check reads")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and several crawl on a busy machine
    if args.step == "check" and importlib.util.find_spec("diffusers") is None:
        raise SystemExit("FAIL check needs diffusers installed")
    (prepare if args.step == "prepare" else check)(args.folder)


if __name__ == "__main__":
    main()
