"""The built-in default's pilot (examples/toy/pilot_default.py) end to end at the default-smoke budget: two
variants on the bundled autoencoder, each scored at every checkpoint; a re-run does nothing again."""

from __future__ import annotations

import json

import pytest

from examples.toy import pilot_default

pytestmark = pytest.mark.slow  # trainer subprocesses


def test_the_pilot_trains_and_scores_each_variant(tmp_path, capsys):
    argv = ["--smoke", "--output_dir", str(tmp_path / "run"), "--results_dir", str(tmp_path / "results")]
    argv += ["--variants", "baseline", "wide", "--usit_steps", "2", "--usit_checkpoints", "2", "--num_samples", "10"]
    results = pilot_default.main(argv)
    rows = results["rows"]
    assert {(r["run"], r["step"], r["guidance_scale"]) for r in rows} == {
        (run, step, scale) for run in ("baseline", "wide") for step in (1, 2) for scale in (1.0, 3.0)
    }
    assert all(0 <= r["class_accuracy"] <= 1 for r in rows)
    config = json.loads((tmp_path / "run" / "configs" / "usit_wide.json").read_text())
    assert config["attention_head_dim"] == 64  # the variant's change, the rest the default's
    assert json.loads((tmp_path / "results" / "pilot.json").read_text())["rows"] == rows
    assert set(results["seconds_per_step"]) == {"baseline", "wide"}
    assert "| wide | 2 |" in capsys.readouterr().out
    again = pilot_default.main(argv)  # done: skipped jobs, cached rows
    assert again["rows"] == rows
