"""Every entry point answers `--help` and an argument-syntax error without importing torch, diffusers, accelerate,
datasets or gradio (they take seconds to import): the flags are read from torch-free modules first.

The entry points and their argument errors are those that `benchmarks/bench_cli_startup.py` times; this test checks
only what is imported and the exit status, not the time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
try:
    from bench_cli_startup import ENTRY_POINTS
finally:
    sys.path.remove(str(REPO_ROOT / "benchmarks"))

HEAVY = ("torch", "diffusers", "accelerate", "datasets", "gradio")
# Runs an entry point in this process (as `python <script>` or `python -m <module>` would) and reports on its last
# stderr line the exit status and which of HEAVY got imported.
_RUN = """
import json, runpy, sys
arguments, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
if arguments[0] == "-m":
    sys.argv = [arguments[1], *arguments[2:]]
    run = lambda: runpy.run_module(arguments[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = list(arguments)
    run = lambda: runpy.run_path(arguments[0], run_name="__main__")
try:
    run()
    status = 0
except SystemExit as exit:
    status = exit.code
imported = [name for name in heavy if name in sys.modules]
print(json.dumps({"status": status, "imported": imported}), file=sys.stderr)
"""


def _run(arguments: list[str]) -> tuple[dict, str]:
    result = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps(arguments), json.dumps(HEAVY)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return json.loads(lines[-1]), result.stdout + "\n".join(lines[:-1])


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_help_and_argument_errors_answer_without_torch(name):
    entry, error = ENTRY_POINTS[name]
    report, output = _run([*entry, "--help"])
    assert report == {"status": 0, "imported": []}, output[-3000:]
    assert "usage:" in output and "--" in output
    report, output = _run([*entry, *error])
    assert report == {"status": 2, "imported": []}, output[-3000:]
    assert "error: argument" in output and output.count("error:") == 1, output[-3000:]


def test_every_entry_point_is_covered():
    """The list holds the trainers, the cache, the evaluations, the converter, the examples, the app and the toy
    entry points (a new script belongs in `benchmarks/bench_cli_startup.py`'s ENTRY_POINTS)."""
    scripts = {
        str(p.relative_to(REPO_ROOT)) for folder in ("training", "examples") for p in (REPO_ROOT / folder).glob("*.py")
    }
    scripts -= {"examples/__init__.py"}
    listed = {part for entry, _ in ENTRY_POINTS.values() for part in entry}
    assert scripts | {"app/app.py", "dc_ae_hf.convert"} <= listed
    toy = {
        f"examples.toy.{n}"
        for n in ("run_recipe", "score_pipeline", "pilot_regime", "pilot_default", "measure_regime", "measure_sweep")
    }
    assert toy <= listed


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["training/train_dc_ae.py", "--max_train_steps", "0"],
            "error: --max_train_steps=0 is not allowed: must be an int >= 1",
        ),
        (
            ["training/train_usit.py", "--max_train_steps", "0"],
            "error: --max_train_steps=0 is not allowed: must be an int >= 1",
        ),
        (
            ["training/cache_latents.py", "--vae", "v", "--output_dir", "o", "--train_data_dir", "no/such/dir"],
            "error: --train_data_dir='no/such/dir' is not allowed: must be a directory (an imagefolder)",
        ),
        (
            ["training/evaluate_dc_ae.py", "--pretrained_model_name_or_path", "p", "--output_json", "o.json"]
            + ["--train_data_dir", "tests", "--batch_size", "0"],
            "error: --batch_size=0 is not allowed: must be an int >= 1",
        ),
        (
            ["training/make_reference_statistics.py", "--dataset_name", "x", "--train_data_dir", "d"]
            + ["--output", "o.npz"],
            "error: --train_data_dir='d' is not allowed: give exactly one of --dataset_name",
        ),
        (
            ["training/evaluate_usit.py", "--pipeline", "p", "--sample_dir", "s", "--output_json", "o.json"]
            + ["--num_samples", "5"],
            "error: --num_samples=5 is not allowed: the Inception Score splits the samples into 10 groups",
        ),
        (
            ["training/evaluate_usit.py", "--pipeline", "p", "--sample_dir", "s", "--output_json", "o.json"]
            + ["--metrics", "fid"],
            "error: --metrics ['fid'] (and --dinov2) need a --reference",
        ),
        (
            ["examples/sample.py", "--model", "m", "--class_labels", "1", "--output", "grid.txt"],
            "error: --output='grid.txt' is not allowed: PIL cannot write a .txt file",
        ),
        (
            ["examples/visualize_latents.py", "--images", "no/such/image.png"],
            "error: --images='no/such/image.png' is not allowed: must be image files",
        ),
        (
            ["-m", "dc_ae_hf.convert", "autoencoder", "--checkpoint", "c", "--output", "o", "--preset", "f99"],
            "error: --preset='f99' is not allowed: choose one of ['dc-ae-",
        ),
        (
            [
                "-m",
                "dc_ae_hf.convert",
                "pipeline",
                "--autoencoder",
                "a",
                "--transformer",
                "t",
                "--output",
                "README.md",
            ],
            "error: --output='README.md' is not allowed: it is a file, not a folder",
        ),
    ],
)
def test_a_bad_value_that_needs_no_model_is_refused_before_the_heavy_imports(arguments, expected):
    """A value the flag checks refuse answers as fast as a syntax error: one line, status 2."""
    report, output = _run(arguments)
    assert report == {"status": 2, "imported": []}, output[-3000:]
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), output[-3000:]
