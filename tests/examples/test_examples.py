"""The user-facing example scripts (`examples/sample.py`, `examples/visualize_latents.py`) on a tiny pipeline folder
written by the test, the way `make demo DEMO_MODEL=<folder>` runs them."""

from __future__ import annotations

import importlib.util
import re
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY_AE10_CONFIG, TINY_AE15_CONFIG
from PIL import Image

from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline

TOY_PIPELINE = REPO_ROOT / "dc_ae_hf" / "assets" / "toy-dcae15-shapes"


def _load_example(name: str, monkeypatch):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    torch.manual_seed(0)
    vae = AutoencoderDC15(**TINY_AE15_CONFIG).eval()  # f8, 16 channels, prefixes 4..16
    transformer = USiTTransformer2DModel(
        sample_size=4, in_channels=16, num_classes=3, num_layers=2, num_attention_heads=2, attention_head_dim=8
    ).eval()
    folder = tmp_path_factory.mktemp("pipeline")
    DCAE15Pipeline(transformer, vae, id2label={0: "red", 1: "green", 2: "blue"}).save_pretrained(folder)
    return folder


def test_sample_script_writes_a_class_grid(pipeline_folder, tmp_path, monkeypatch):
    sample = _load_example("sample", monkeypatch)
    output = tmp_path / "grid" / "samples.png"
    argv = [
        "--model",
        str(pipeline_folder),
        *"--class_labels red 2 green --solver euler --num_inference_steps 2 --guidance_scale 3 --output".split(),
        str(output),
    ]
    sample.main(argv)
    grid = Image.open(output)
    assert grid.size == (2 * 32, 2 * 32)  # 3 images of 32 px on a 2x2 grid
    first = Image.open(output).copy()
    sample.main(argv)  # seeded: the same grid again
    assert list(Image.open(output).getdata()) == list(first.getdata())
    sample.main([*argv, "--upscale", "3"])
    assert Image.open(output).size == (2 * 96, 2 * 96)
    with pytest.raises(SystemExit):
        sample.main([*argv, "--upscale", "0"])
    with pytest.raises(SystemExit):
        sample.main([*argv, "--num_images_per_class", "0"])


def test_sample_script_gives_one_row_per_class_with_several_images_per_class(pipeline_folder, tmp_path, monkeypatch):
    # `make demo`: one row per class label, no empty cells
    sample = _load_example("sample", monkeypatch)
    output = tmp_path / "samples.png"
    argv = [
        "--model",
        str(pipeline_folder),
        *"--class_labels blue red --solver euler --num_inference_steps 2 --num_images_per_class 3 --output".split(),
        str(output),
    ]
    sample.main(argv)
    grid = Image.open(output).convert("RGB")
    assert grid.size == (3 * 32, 2 * 32)
    # class-major: cell k of the grid is sample k of the labels each repeated 3 times, in the order given
    pipe = DCAE15Pipeline.from_pretrained(pipeline_folder)
    expected = pipe(
        ["blue"] * 3 + ["red"] * 3,
        guidance_scale=1.5,
        num_inference_steps=2,
        solver="euler",
        generator=torch.Generator("cpu").manual_seed(0),
    ).images
    for k, image in enumerate(expected):
        cell = grid.crop(((k % 3) * 32, (k // 3) * 32, (k % 3 + 1) * 32, (k // 3 + 1) * 32))
        assert list(cell.getdata()) == list(image.convert("RGB").getdata())


def _makefile_value(name: str) -> str:
    """The toy's `NAME ?= value` line of the Makefile (the first, which is the built-in default's)."""
    match = re.search(rf"^{name} \?= (.+)$", (REPO_ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    return match.group(1)


def test_make_demo_draws_the_readme_picture(tmp_path, monkeypatch):
    # `make demo`'s samples.png on the bundled default is the picture the README shows: one row per class, no
    # empty cells (re-made by the Makefile's own sampler flags; the tolerance absorbs float differences between
    # CPUs and thread counts)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sample = _load_example("sample", monkeypatch)
    classes = _makefile_value("DEMO_CLASSES").split()
    flags = _makefile_value("DEMO_SAMPLER").split()
    output = tmp_path / "samples.png"
    sample.main(["--model", str(TOY_PIPELINE), *flags, "--class_labels", *classes, "--output", str(output)])
    picture = REPO_ROOT / "examples" / "toy" / "results" / "default" / "demo.png"
    assert "examples/toy/results/default/demo.png" in (REPO_ROOT / "README.md").read_text()
    made, committed = (np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) for path in (output, picture))
    per_class = int(flags[flags.index("--num_images_per_class") + 1])
    upscale = int(flags[flags.index("--upscale") + 1])
    assert committed.shape == made.shape == (len(classes) * 32 * upscale, per_class * 32 * upscale, 3)
    assert np.abs(made - committed).mean() < 1.0, "re-make the picture: see the README's demo section"


def test_visualize_latents_on_a_pipeline_folder_and_user_images(pipeline_folder, tmp_path, monkeypatch):
    visualize = _load_example("visualize_latents", monkeypatch)
    image = tmp_path / "photo.png"
    Image.fromarray(torch.randint(0, 256, (40, 56, 3), dtype=torch.uint8).numpy()).save(image)
    out = tmp_path / "pictures"
    visualize.main(
        [
            "--vae",
            str(pipeline_folder),
            "--vae_subfolder",
            "vae",
            "--images",
            str(image),
            str(image),
            *"--resolution 32 --channels 4 16 --output_dir".split(),
            str(out),
            "--cell_size",
            "64",
        ]
    )
    assert Image.open(out / "latent_mean.png").size == (2 + 2 * 66, 2 + 2 * 66)  # (image, mean) per input
    assert Image.open(out / "latent_channels.png").size == (2 + 16 * 34, 2 + 34)  # 16 channels, one row
    # Fig. 3 grid: input + one column per prefix, one row per image
    assert (
        Image.open(out / "prefix_reconstructions.png").size[0] > Image.open(out / "prefix_reconstructions.png").size[1]
    )


def test_visualize_latents_built_in_shapes_at_any_resolution(tmp_path, monkeypatch):
    visualize = _load_example("visualize_latents", monkeypatch)
    folder = tmp_path / "vae"
    AutoencoderDC15(**TINY_AE15_CONFIG).save_pretrained(folder)
    out = tmp_path / "pictures"
    # above the shapes generator's largest size (256): rendered there and resized
    visualize.main(["--vae", str(folder), "--resolution", "264", "--output_dir", str(out), "--cell_size", "32"])
    assert all((out / name).stat().st_size > 0 for name in ("latent_mean.png", "latent_channels.png"))
    with pytest.raises(SystemExit):  # 36 is not a multiple of f = 8
        visualize.main(["--vae", str(folder), "--resolution", "36", "--output_dir", str(out)])


def _user_error(capsys, main, argv) -> str:
    """Run `main(argv)`: it must exit with status 2 and end stderr with exactly one line `error: ...`, no traceback
    (diffusers' "Loading pipeline components" progress bar may come before it)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert [line for line in lines if "error:" in line] == lines[-1:], lines
    assert lines[-1].startswith("error: ") and not any("Traceback" in line for line in lines), lines
    return lines[-1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--class_labels", "purple"], "purple"),  # unknown class name (the toy draws shapes)
        (["--class_labels", "circle", "--model", "no/such/folder"], "no/such/folder"),
        (["--class_labels", "circle", "--output", "grid.unknownext"], "--output='grid.unknownext'"),
        (["--class_labels", "circle", "--device", "cuda:99"], "--device='cuda:99'"),  # no CUDA or too few GPUs
        (["--class_labels", "circle", "--num_images_per_class", "0"], "--num_images_per_class=0"),
    ],
)
def test_sample_script_user_errors_are_one_line(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sample = _load_example("sample", monkeypatch)
    err = _user_error(capsys, sample.main, ["--model", str(TOY_PIPELINE), "--device", "cpu", *args])
    assert expected in err
    if "--output" in expected:
        assert ".png" in err  # lists what is allowed
    assert not list(tmp_path.iterdir())  # refused before writing anything


@pytest.mark.parametrize(
    ("config", "channels", "expected"),
    [
        (TINY_AE15_CONFIG, "17", "--channels=17 "),  # beyond the 16 latent channels
        (TINY_AE10_CONFIG, "4", "--channels=4 < latent_channels="),  # DC-AE 1.0: latent shortcuts, full latent only
    ],
)
def test_visualize_latents_checks_channels_with_the_model_rule(
    config, channels, expected, tmp_path, monkeypatch, capsys
):
    visualize = _load_example("visualize_latents", monkeypatch)
    folder = tmp_path / "vae"
    AutoencoderDC15(**config).save_pretrained(folder)
    argv = ["--vae", str(folder), "--resolution", "32", "--channels", channels, "--output_dir", str(tmp_path / "out")]
    assert expected in _user_error(capsys, visualize.main, argv)
    assert not (tmp_path / "out").exists()  # refused before writing anything


def test_sample_script_refuses_cuda_without_a_gpu_before_loading(tmp_path, monkeypatch, capsys):
    sample = _load_example("sample", monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sample.DCAE15Pipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded a model"))
    argv = ["--model", str(TOY_PIPELINE), "--class_labels", "circle", "--device", "cuda"]
    assert "--device='cuda'" in _user_error(capsys, sample.main, [*argv, "--output", str(tmp_path / "grid.png")])


def test_visualize_latents_user_errors_are_one_line(tmp_path, monkeypatch, capsys):
    visualize = _load_example("visualize_latents", monkeypatch)
    out = ["--output_dir", str(tmp_path / "pictures")]
    missing = str(tmp_path / "no-such-vae")
    assert missing in _user_error(capsys, visualize.main, ["--vae", missing, "--device", "cpu", *out])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(visualize.AutoencoderDC15, "from_pretrained", lambda *a, **k: pytest.fail("loaded a model"))
    assert "--device='cuda'" in _user_error(capsys, visualize.main, ["--device", "cuda", *out])
    assert not (tmp_path / "pictures").exists()
