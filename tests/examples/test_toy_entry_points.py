"""The toy recipe's entry points through their command lines (`python -m examples.toy.<module>`): a user error that
only the code can detect (argparse accepts the flags) ends as one line `error: ...` on stderr and status 2, not as
a traceback, before any work is done."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from helpers import subprocess_env

pytestmark = pytest.mark.slow  # one Python process per case (torch imports: a few seconds each)


def _run_module(module: str, *argv: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", f"examples.toy.{module}", *argv]
    return subprocess.run(command, env=subprocess_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def _assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_run_recipe_report_only_without_or_with_foreign_results(tmp_path):
    results_dir = tmp_path / "results"
    argv = ["--mode", "sweep-smoke", "--output_dir", str(tmp_path / "out"), "--results_dir", str(results_dir)]
    _assert_one_line_error(_run_module("run_recipe", *argv, "--report_only"), "--report_only needs", "results.json")

    results_dir.mkdir()
    (results_dir / "results.json").write_text(json.dumps({"mode": "smoke", "diffusion": []}))
    result = _run_module("run_recipe", *argv, "--report_only")
    _assert_one_line_error(result, "holds results of --mode smoke", "'sweep-smoke'")
    assert not (tmp_path / "out").exists()  # nothing trained or written


def test_pilot_regime_refuses_a_budget_the_regime_cannot_take(tmp_path):
    out, results_dir = tmp_path / "pilot", tmp_path / "results"
    argv = ["--output_dir", str(out), "--results_dir", str(results_dir), "--usit_steps", "6"]
    # argparse takes any int; the regime's settings need 4 evenly spaced checkpoints
    _assert_one_line_error(_run_module("pilot_regime", *argv), "usit_steps=6")
    assert not out.exists() and not results_dir.exists()


def test_measure_regime_refuses_a_recorded_file_without_ratios(tmp_path):
    recorded = tmp_path / "budget.json"
    recorded.write_text(json.dumps({"costs": {}}))
    _assert_one_line_error(_run_module("measure_regime", "--recorded", str(recorded)), str(recorded), "ratios")
    recorded.write_text("not json")
    _assert_one_line_error(_run_module("measure_regime", "--recorded", str(recorded)), "is not JSON")


def test_run_recipe_bundles_only_into_a_new_folder_or_an_earlier_bundle(tmp_path):
    model = tmp_path / "model"  # another model's folder: refused before any training
    model.mkdir()
    (model / "config.json").write_text("{}")
    argv = ["--mode", "smoke", "--output_dir", str(tmp_path / "out"), "--bundle_to", str(model)]
    _assert_one_line_error(_run_module("run_recipe", *argv), "--bundle_to=", "it holds a model (config.json)")
    assert not (tmp_path / "out").exists() and sorted(p.name for p in model.iterdir()) == ["config.json"]
    # an earlier bundle (the bundled default: its card names the recipe) may be replaced
    from examples.toy.report.card import claim_bundle_folder

    bundled = REPO_ROOT / "dc_ae_hf" / "assets" / "toy-dcae15-shapes"
    assert claim_bundle_folder(bundled) == bundled and claim_bundle_folder(tmp_path / "new") == tmp_path / "new"
