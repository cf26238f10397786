"""training/evaluate_dc_ae.py on tiny image folders: the default split, progress, dtype spellings, input checks.

The autoencoder is the toy one bundled with the package (f8, 32 latent channels); images are 32 px, LPIPS is off
(its backbone would need weights), so each run takes a second or two.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

TOY_PIPELINE = REPO_ROOT / "dc_ae_hf" / "assets" / "toy-dcae15-shapes"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("evaluate_dc_ae", REPO_ROOT / "training" / "evaluate_dc_ae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_images(folder: Path, count: int, seed: int) -> None:
    """``count`` 40x36 RGB PNGs in two class folders under ``folder``."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = folder / ("circle" if i % 2 else "square") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(path)


def _argv(tmp_path: Path, *data: str) -> list[str]:
    paths = ["--pretrained_model_name_or_path", str(TOY_PIPELINE), "--cache_dir", str(tmp_path / "hf_cache")]
    paths += ["--output_json", str(tmp_path / "eval.json")]
    fixed = "--subfolder vae --resolution 32 --batch_size 2 --latent_channels 8 32 --lpips_net none --device cpu"
    return [*paths, *data, *fixed.split()]


def test_default_split_of_an_imagefolder_with_only_train(script, tmp_path, capsys):
    # <dir>/<class>/<file>.png: datasets makes it a single "train" split. The old default --split validation made
    # datasets prepare that split and then fail with 'Unknown split "validation"'.
    _write_images(tmp_path / "data", 3, seed=0)
    report = script.main(script.parse_args(_argv(tmp_path, "--data_dir", str(tmp_path / "data"))))
    assert report["split"] == "train" and report["num_images"] == 3
    assert set(report["results"]) == {"8", "32"}
    assert all(0 < row["psnr"] < 100 and -1 <= row["ssim"] <= 1 for row in report["results"].values())
    err = capsys.readouterr().err
    assert "evaluating train" in err and "2/2" in err  # tqdm over the 2 batches of 3 images
    # The same folder under the trainers' flag name.
    again = script.main(script.parse_args(_argv(tmp_path, "--train_data_dir", str(tmp_path / "data"))))
    assert again["results"] == report["results"]


def test_default_split_is_validation_when_the_dataset_has_one(script, tmp_path):
    # A dataset folder with train/ and validation/ split folders, read as a Hub dataset is (--dataset_name) and as
    # an imagefolder (--data_dir): both evaluate the 2 validation images, not the 5 train ones.
    root = tmp_path / "dataset"
    _write_images(root / "train", 5, seed=1)
    _write_images(root / "validation", 2, seed=2)
    for flag in ("--dataset_name", "--data_dir"):
        report = script.main(script.parse_args(_argv(tmp_path, flag, str(root))))
        assert report["split"] == "validation" and report["num_images"] == 2, flag
    explicit = script.main(script.parse_args([*_argv(tmp_path, "--data_dir", str(root)), "--split", "train"]))
    assert explicit["split"] == "train" and explicit["num_images"] == 5


def test_several_splits_without_validation_need_split(script, tmp_path):
    root = tmp_path / "dataset"
    _write_images(root / "train", 2, seed=3)
    _write_images(root / "test", 2, seed=4)
    with pytest.raises(ValueError, match="--split=None .*name the one to evaluate") as info:
        script.main(script.parse_args(_argv(tmp_path, "--data_dir", str(root))))
    assert "'test'" in str(info.value) and "'train'" in str(info.value)
    report = script.main(script.parse_args([*_argv(tmp_path, "--data_dir", str(root)), "--split", "test"]))
    assert report["split"] == "test" and report["num_images"] == 2


def test_dtype_accepts_both_spellings(script, tmp_path):
    _write_images(tmp_path / "data", 2, seed=5)
    data = ("--data_dir", str(tmp_path / "data"))
    assert script.parse_args(_argv(tmp_path, *data)).vae_dtype == "fp32"  # the default, unchanged
    short = script.main(script.parse_args([*_argv(tmp_path, *data), "--vae_dtype", "fp32"]))
    long = script.main(script.parse_args([*_argv(tmp_path, *data), "--dtype", "float32"]))  # the older spelling
    assert long["results"] == short["results"] and long["dtype"] == "float32"
    for spelling in ("bf16", "bfloat16", "fp16", "float16"):
        assert script.parse_args([*_argv(tmp_path, *data), "--vae_dtype", spelling]).vae_dtype == spelling
    with pytest.raises(SystemExit):
        script.parse_args([*_argv(tmp_path, *data), "--vae_dtype", "float64"])
    args = script.parse_args(_argv(tmp_path, *data))
    args.vae_dtype = "double"  # a Namespace built in code gets the same check
    with pytest.raises(ValueError, match="--vae_dtype='double' .*'bf16'"):
        script.main(args)


def test_bad_inputs_are_named(script, tmp_path):
    _write_images(tmp_path / "data", 2, seed=6)
    base = _argv(tmp_path, "--data_dir", str(tmp_path / "data"))
    cases = {
        "--batch_size=0 .*>= 1": ["--batch_size", "0"],
        "--max_images=0 .*>= 1": ["--max_images", "0"],
        "--dataloader_num_workers=-1 .*>= 0": ["--dataloader_num_workers", "-1"],
        "--resolution=30 .*divisible by the ratio 8": ["--resolution", "30"],
        "--latent_channels=\\[8, 33\\].* outside 1..32": ["--latent_channels", "8", "33"],
    }
    for message, extra in cases.items():
        with pytest.raises(ValueError, match=message):
            script.main(script.parse_args([*base, *extra]))
    missing = str(tmp_path / "no-such-folder")
    with pytest.raises(ValueError, match=f"--train_data_dir='{missing}' .*directory"):
        script.main(script.parse_args(_argv(tmp_path, "--data_dir", missing)))
    with pytest.raises(ValueError, match="exactly one of --dataset_name .*and --train_data_dir"):
        script.main(script.parse_args(_argv(tmp_path)))
    assert not (tmp_path / "eval.json").exists()


def test_rfid_shows_progress_and_starts_no_more_workers_than_cores(script, tmp_path, capsys, recwarn):
    from dc_ae_hf.testing import write_standin_inception_weights

    _write_images(tmp_path / "data", 3, seed=3)
    inception = write_standin_inception_weights(tmp_path / "inception.pth")
    argv = _argv(tmp_path, "--train_data_dir", str(tmp_path / "data"), "--inception_weights_path", inception)
    report = script.main(script.parse_args(argv))
    assert report["rfid"] and all(row["rfid"] >= 0 for row in report["results"].values())
    err = capsys.readouterr().err
    assert "rFID of 3 images per c'" in err and "2/2" in err  # one step per c' (8 and 32)
    assert not [
        w for w in recwarn if "worker processes in total" in str(w.message)
    ]  # torch's oversubscription warning
