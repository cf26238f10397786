"""The demo app (app/app.py): its functions on the bundled toy pipeline, the Space folder, and the page itself in
headless Chromium (Debian's `chromium`, driven by Playwright without a browser download)."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from dc_ae_hf.self_contained import is_self_contained

APP = REPO_ROOT / "app" / "app.py"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = REPO_ROOT / "docs" / "app.png"  # refreshed when DC_AE_HF_UPDATE_SCREENSHOT=1


def _load_app():
    spec = importlib.util.spec_from_file_location("dc_ae_hf_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def app():
    return _load_app()


@pytest.fixture(scope="module")
def demo(app):
    return app.Demo(device="cpu")


def test_sample_grid_of_named_and_numbered_classes(demo, app):
    assert demo.prefixes == [4, 8, 12, 16, 20, 24, 28, 32] and demo.resolution == 32
    assert demo.classes[:2] == ["arrow (0)", "circle (1)"]
    assert demo.parse_classes(["circle (1)", "Star", "3"]) == [1, "Star", 3]
    assert demo.parse_classes("circle, 3") == ["circle", 3]
    grid = demo.sample(["circle (1)", "star", "3"], 3.0, (0.0, 1.0), "euler (official)", 4, 16, seed=0)
    again = demo.sample(["circle (1)", "star", "3"], 3.0, (0.0, 1.0), "euler (official)", 4, 16, seed=0)
    assert grid.size == (2 + 3 * 130, 2 + 130)  # 3 cells of 128 px, one row
    assert np.array_equal(np.asarray(grid), np.asarray(again))  # seeded
    other = demo.sample(["circle (1)", "star", "3"], 3.0, (0.2, 0.8), next(iter(app.SOLVERS)), 4, 32, seed=1)
    assert not np.array_equal(np.asarray(grid), np.asarray(other))


@pytest.mark.parametrize(
    "classes, message",
    [
        (["purple"], r"there is no class 'purple' in this model; pick one from the list \(e.g. arrow, circle"),
        (["42"], r"class ids \[42\] do not exist: this model has classes 0..9"),
        ([], "choose at least one class"),
        ([str(i) for i in range(17)], "at most 16 classes"),
    ],
)
def test_bad_classes_are_clear_messages(demo, classes, message):
    with pytest.raises(ValueError, match=message):
        demo.sample(classes)


def test_reconstruction_from_each_prefix(demo):
    image = Image.open(REPO_ROOT / "app" / "examples" / "star.png")
    shown, full, mean, every, used = demo.reconstruct(image, 32)
    _, few, _, _, used_few = demo.reconstruct(image, 5)  # snaps to the nearest trained prefix
    assert (used, used_few) == (32, 4)
    assert shown.size == full.size == (192, 192)
    assert not np.array_equal(np.asarray(full), np.asarray(few))
    error_full = np.abs(np.asarray(full, float) - np.asarray(shown, float)).mean()
    error_few = np.abs(np.asarray(few, float) - np.asarray(shown, float)).mean()
    assert error_full < error_few  # more channels, more detail
    assert mean.size == (2 + 2 * 194, 2 + 194)  # the image and its channel-wise mean
    assert every.size[0] > every.size[1]  # 32 channels, 8 per row
    with pytest.raises(ValueError, match="the image is 16x16 px; this autoencoder works at 32 px"):
        demo.reconstruct(image.resize((16, 16)), 8)
    with pytest.raises(ValueError, match="upload an image"):
        demo.reconstruct(None, 8)


def test_errors_reach_the_page_as_messages(app):
    import gradio as gr

    def fails():
        raise ValueError("a clear message")

    with pytest.raises(gr.Error, match="a clear message"):
        app._shown(fails)()


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, float("nan"), None, "seven"])
def test_a_seed_out_of_range_is_a_clear_message(demo, seed):
    with pytest.raises(ValueError, match=r"the seed must be a whole number in 0\.\.9223372036854775807, got"):
        demo.sample(["1"], 1.0, (0.0, 1.0), "euler (official)", 1, 32, seed=seed)


def test_an_upload_that_is_not_an_image_is_a_clear_message(app, tmp_path):
    import gradio as gr
    from gradio.data_classes import ImageData

    component = app.image_input(type="pil")
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    with pytest.raises(gr.Error, match=r"notes\.png is not an image this app can read .*upload a PNG, JPEG or WebP"):
        component.preprocess(ImageData(path=str(notes), orig_name="notes.png"))
    star = ImageData(path=str(REPO_ROOT / "app" / "examples" / "star.png"), orig_name="star.png")
    assert component.preprocess(star).size == (64, 64)


def _run_app(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(APP), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def test_command_line_errors_are_one_line(tmp_path):
    missing = _run_app("--model", str(tmp_path / "missing"))
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert missing.stderr.startswith("error: the app's model (--model / $DC_AE_HF_APP_MODEL) does not load: ")
    assert len(missing.stderr.strip().splitlines()) == 1
    bad_port = _run_app("--port", "70000")
    assert bad_port.returncode == 2 and "argument --port: '70000' is not a port: give a whole number in 1..65535" in (
        bad_port.stderr
    )
    with socket.socket() as busy:  # a port in use: the message names the app's --port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run_app("--port", str(port))
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"error: port {port} on 127.0.0.1 is in use: pass a free one with --port N"
    assert "Traceback" not in result.stderr


def test_space_folder_runs_without_dc_ae_hf(tmp_path):
    target = tmp_path / "space"
    subprocess.run(
        ["make", "-s", "space", f"SPACE_DIR={target}"], cwd=REPO_ROOT, check=True, capture_output=True, timeout=300
    )
    readme = (target / "README.md").read_text()
    front = readme.split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    requirements = (target / "requirements.txt").read_text()
    packages = [line for line in requirements.splitlines() if line.strip() and not line.startswith("#")]
    assert "gradio" in requirements and "diffusers" in requirements and not [p for p in packages if "dc" in p]
    model = target / "toy-dcae15-shapes"
    assert not (target / "dc_ae_hf").exists() and is_self_contained(model)  # no copy of the package
    assert (target / "app_helpers.py").is_file()
    assert sorted(p.name for p in (target / "examples").glob("*.png")) == [
        "arrow.png",
        "circle.png",
        "heart.png",
        "star.png",
    ]
    # the folder runs on its own where dc_ae_hf cannot be imported: plain diffusers loads the toy pipeline, the
    # app samples and reconstructs with the generated helpers
    check = (
        "import sys\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'dc_ae_hf': raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Blocker())\n"
        "from PIL import Image\n"
        "import app\n"
        "d = app.Demo(device='cpu')\n"
        "assert app.dc_ae_hf is None and type(d.pipe).__module__.startswith('diffusers_modules')\n"
        "grid = d.sample(['circle (1)', 'star'], 3.0, (0.0, 1.0), 'euler (official)', 2, 16, seed=0)\n"
        "shown, full, mean, every, used = d.reconstruct(Image.open('examples/star.png'), 8)\n"
        "print(d.model, d.prefixes, grid.size, used)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=target, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"{model} [4, 8, 12, 16, 20, 24, 28, 32] (262, 132) 8"


# ---------------------------------------------------------------------------------------------------------------
# The page in a real browser
# ---------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}: {process.stdout.read()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the app did not answer at {url} within {timeout} s")


def _image(page, selector: str) -> np.ndarray:
    """The pixels of the first <img> under `selector`, fetched as the browser shows it."""
    source = page.locator(f"{selector} img").first.get_attribute("src")
    if source.startswith("data:"):
        import base64

        data = base64.b64decode(source.split(",", 1)[1])
    else:
        data = page.request.get(source).body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.slow
def test_the_page_samples_and_reconstructs_in_headless_chromium(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM, "the browser test needs Debian's chromium: apt-get install chromium (.ci/run does)"
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, str(APP), "--port", str(port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            # Sample: the default classes, one click
            page.get_by_role("button", name="Sample", exact=True).click()
            expect(page.locator("#samples img")).to_be_visible(timeout=120_000)
            samples = _image(page, "#samples")
            assert samples.shape[0] > 100 and samples.std() > 10  # a grid, not a blank image
            # Reconstruct: a built-in image, then the slider to the smallest prefix
            page.get_by_role("tab", name="Reconstruct").click()
            page.locator("img[src*='star']").first.click()
            expect(page.locator("#reconstruction img")).to_be_visible(timeout=120_000)
            full = _image(page, "#reconstruction")
            slider = page.locator("#prefix input[type=range]")
            slider.fill("4")
            page.wait_for_function(
                "(before) => { const img = document.querySelector('#reconstruction img'); "
                "return img && img.src !== before; }",
                arg=page.locator("#reconstruction img").first.get_attribute("src"),
                timeout=120_000,
            )
            few = _image(page, "#reconstruction")
            assert full.shape == few.shape and not np.array_equal(full, few)  # the slider changed the picture
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    picture = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert picture.shape[0] > 400 and picture.shape[1] >= 1280
    assert picture.std() > 20 and len(np.unique(picture.reshape(-1, 3), axis=0)) > 100  # not blank
    if os.environ.get("DC_AE_HF_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, SCREENSHOT)


def test_make_space_writes_only_a_new_or_empty_folder_or_its_own_earlier_space(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_space", REPO_ROOT / "scripts" / "make_space.py")
    make_space = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_space)
    home = tmp_path / "home"  # `make space SPACE_DIR=~` once deleted the folder first
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(SystemExit) as exit_info:
        make_space.main([str(home)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: output={str(home)!r} is not allowed: it holds other files (thesis.tex)")
    assert sorted(p.name for p in home.iterdir()) == ["thesis.tex"]
    space = tmp_path / "space"
    make_space.main([str(space)])
    (space / "stale.txt").write_text("left by hand")
    make_space.main([str(space)])  # its own earlier Space: replaced whole
    assert not (space / "stale.txt").exists() and (space / "app.py").is_file()
