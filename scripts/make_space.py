"""Write the demo app's Hugging Face Space folder (`make space`): it runs without dc_ae_hf.

    python scripts/make_space.py outputs/space

The folder holds `app/app.py` with its Space card (`app/README.md`), requirements and built-in images, the bundled
toy pipeline as a self-contained folder (its code generated from dc_ae_hf, loaded by plain diffusers with
`trust_remote_code=True`), and `app_helpers.py`: the picture helpers the app uses, generated from dc_ae_hf's own
modules (`dc_ae_hf.self_contained.bundle_code`). No copy of the package: push the folder as it is,
`hf upload <user>/<space> outputs/space --repo-type space`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import dc_ae_hf
from dc_ae_hf.checks import exit_with_error
from dc_ae_hf.output_folders import claim_output_folder, clear_output_folder, mark_output_folder
from dc_ae_hf.self_contained import bundle_code, is_self_contained, make_self_contained

WRITER = "scripts/make_space.py"

REPO_ROOT = Path(__file__).resolve().parents[1]
APP = REPO_ROOT / "app"
TOY = Path(dc_ae_hf.__file__).parent / "assets" / "toy-dcae15-shapes"
# What app/app.py imports from dc_ae_hf besides the pipeline (its fallback import reads them from app_helpers.py).
HELPERS = [
    ("dc_ae_hf.visualization", "latent_channels_picture"),
    ("dc_ae_hf.visualization", "latent_mean_picture"),
    ("dc_ae_hf.visualization", "tile"),
    ("dc_ae_hf.visualization", "to_pil"),
    ("dc_ae_hf.data.images", "to_rgb"),
]


def make_space(target: Path) -> Path:
    """Write the Space folder `target` (new, empty, or an earlier Space of this script, which it replaces; anything
    else is refused before anything is written); returns it."""
    claim_output_folder(target, WRITER, "output", earlier_output=_earlier_space)
    clear_output_folder(target)
    target.mkdir(parents=True)
    for name in ("app.py", "README.md", "requirements.txt"):
        shutil.copy2(APP / name, target / name)
    shutil.copytree(APP / "examples", target / "examples")
    model = target / TOY.name
    shutil.copytree(TOY, model, ignore=shutil.ignore_patterns("__pycache__"))
    if not is_self_contained(model):  # the bundled one is; made so here otherwise, its weights untouched
        make_self_contained(model)
    docstring = (
        "The picture helpers of the demo app (app.py) for a Space without dc_ae_hf: an image as RGB, tiles of pictures "
        "and the paper's pictures of a latent (dc_ae_hf.visualization)."
    )
    note = "by scripts/make_space.py (make space). Do not edit: run `make space` again."
    (target / "app_helpers.py").write_text(bundle_code(HELPERS, note=note, docstring=docstring), encoding="utf-8")
    mark_output_folder(target, WRITER)
    return target


def _earlier_space(folder: Path) -> bool:
    """A Space written before the writer was recorded in it: its generated app_helpers.py names this script."""
    try:
        return "by scripts/make_space.py" in (folder / "app_helpers.py").read_text(encoding="utf-8")
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "output", type=Path, help="the Space folder to write: new, empty, or an earlier Space (replaced)"
    )
    try:
        target = make_space(parser.parse_args(argv).output)
    except (ValueError, OSError) as error:
        exit_with_error(error)
    print(f"wrote {target}: push it with hf upload <user>/<space> {target} --repo-type space")


if __name__ == "__main__":
    main()
