"""The toy recipe's regime modes (`--mode regime`, issue #20) without running a trainer: the settings and their
checks, the arms and their compute, the f16 / f32 autoencoders, the job list and command lines, that the older
modes are unchanged, and the report (speed-ups, the headline in its three outcomes) from fake results."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import REPO_ROOT

from dc_ae_hf.data.shapes import SHAPE_CLASSES
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from examples.toy import measure_regime, toy_evaluation, toy_stages
from examples.toy.report.regime import (
    REGIME_PLOTS,
    regime_headline,
    regime_results_summary,
    regime_speedups,
    write_regime_report,
)
from examples.toy.toy_scheduler import check_jobs
from examples.toy.toy_settings import (
    AUTOENCODER_CONFIG,
    EVAL_GUIDANCE_SCALES,
    MODES,
    REGIME_ARMS,
    REGIME_MODES,
    REGIME_USIT_CONFIG,
    SWEEP_MODES,
    USIT_CONFIG,
    SweepAutoencoder,
    autoencoder_config,
    resolution_of,
    sweep_autoencoders,
    sweep_prefixes,
    sweep_runs,
    usit_config_of,
    usit_hidden_size,
)

REGIME = REGIME_MODES["regime"]
SMOKE = REGIME_MODES["regime-smoke"]


def _values(command: list[str], flag: str) -> list[str] | None:
    """The words after `flag` up to the next flag ([] for a bare flag), None when the flag is absent."""
    if flag not in command:
        return None
    start = command.index(flag) + 1
    end = next((i for i in range(start, len(command)) if command[i].startswith("--")), len(command))
    return command[start:end]


def test_regime_modes_are_in_the_papers_regime():
    assert sorted(REGIME_MODES) == ["regime", "regime-smoke"]
    for settings in REGIME_MODES.values():
        assert settings.resolution == 64 and settings.baseline_latent == (16, 32) and settings.high_latent == (32, 128)
        # equal size, >= 16x fewer values than pixels, 4x the channels and a quarter of the tokens
        assert settings.latent_values(settings.baseline_latent) == settings.latent_values(settings.high_latent) == 512
        assert settings.compression == 24
        tokens = {ae.name: settings.tokens(ae) for ae in settings.autoencoders()}
        assert tokens == {"ae_struct_f32c128": 4, "ae_plain_f32c128": 4, "ae_plain_f16c32": 16}
    assert usit_hidden_size(REGIME_USIT_CONFIG) == 256 >= 2 * 128  # twice the channels it denoises
    assert REGIME.seeds == (0, 1) and not REGIME.smoke  # every arm with 2 seeds
    assert REGIME.usit_steps % REGIME.usit_checkpoints == 0 and REGIME.usit_checkpoints % 4 == 0


def test_regime_settings_checks():
    bad = [  # the messages name the field and its value (wording: dc_ae_hf/checks.py)
        ({"seeds": (0,), "smoke": False}, ValueError, r"seeds=\(0,\) .*at least 2 seeds"),
        ({"usit_steps": 12, "usit_checkpoints": 6}, ValueError, r"usit_checkpoints=6 .*multiple of 4"),
        ({"usit_steps": 6, "usit_checkpoints": 4}, ValueError, r"usit_checkpoints=4 .*dividing usit_steps=6"),
        ({"high_latent": (32, 64)}, ValueError, r"high_latent=\(32, 64\) .*as many values"),
        ({"high_latent": (16, 32)}, ValueError, r"high_latent=\(16, 32\) .*4x the baseline's channels"),
        ({"baseline_latent": (8, 32), "high_latent": (16, 128)}, ValueError, r"compress 6x, need >= 16x"),
        ({"high_latent": (32, 12), "baseline_latent": (16, 3)}, ValueError, r"latent_channels=12 .*multiple of 8"),
        ({"baseline_latent": (12, 32)}, ValueError, r"spatial_compression=12 .*choose 8, 16 or 32"),
        ({"resolution": 48}, ValueError, r"high_latent=\(32, 128\) .*f must divide the resolution 48"),
        ({"ae_steps": 0}, ValueError, r"ae_steps=0"),
    ]
    for change, kind, message in bad:
        with pytest.raises(kind, match=message):
            dataclasses.replace(SMOKE, **change)


def test_the_arms_their_runs_and_compute():
    arms = {arm: REGIME.arm(arm, seed=1) for arm in REGIME_ARMS}
    assert {arm: run.name for arm, run in arms.items()} == {
        "i": "plain_f16c32_plain",
        "ii": "plain_f32c128_plain",
        "iii": "struct_f32c128_plain",
        "iv": "struct_f32c128_per_pass",
        "v": "struct_f32c128_per_sample",
    }
    compute = {arm: run.passes_per_step * REGIME.tokens(run.autoencoder) for arm, run in arms.items()}
    assert compute == {"i": 16, "ii": 4, "iii": 4, "iv": 8, "v": 4}  # (i) costs 4x a one-pass step of the others
    assert all(run.seed == 1 for run in arms.values())
    assert [REGIME.arm_of(run.name) for run in arms.values()] == list(REGIME_ARMS)
    with pytest.raises(ValueError, match="arm='vi' is not allowed"):
        REGIME.arm("vi", 0)
    with pytest.raises(ValueError, match="plain_c128_plain"):
        REGIME.arm_of("plain_c128_plain")
    # most expensive first, every seed; sweep_runs / sweep_autoencoders hand over to the regime's
    runs = [(run.name, run.seed) for run in sweep_runs(REGIME)]
    order = ["i", "iv", "ii", "iii", "v"]
    assert runs == [(REGIME.arm(a, 0).name, seed) for a in order for seed in (0, 1)]
    assert [ae.name for ae in sweep_autoencoders(REGIME)] == [
        "ae_struct_f32c128",
        "ae_plain_f32c128",
        "ae_plain_f16c32",
    ]


def test_autoencoder_configs_of_each_compression():
    assert autoencoder_config(8) == AUTOENCODER_CONFIG  # the sweep's and the other modes' autoencoder, unchanged
    assert SweepAutoencoder(64, structured=True).name == "ae_struct_c64"  # sweep names unchanged
    assert SweepAutoencoder(32, structured=False, spatial_compression=16).name == "ae_plain_f16c32"
    wide = autoencoder_config(32, deep_width=256)  # the pilot's option for the deepest stages
    assert wide["encoder_block_out_channels"] == wide["decoder_block_out_channels"] == [16, 32, 64, 128, 256, 256]
    assert autoencoder_config(16)["encoder_block_out_channels"] == [16, 32, 64, 128, 128]
    assert (
        dataclasses.replace(SMOKE, ae_deep_width=256).autoencoders()[0].config["encoder_block_out_channels"][-1] == 256
    )
    with pytest.raises(ValueError, match="deep_width=256 .*f8 has no deeper stages"):
        autoencoder_config(8, deep_width=256)
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    shapes = {}
    for ae in SMOKE.autoencoders():
        torch.manual_seed(0)
        vae = AutoencoderDC15(**ae.config).eval()
        with torch.no_grad():
            shapes[ae.name] = tuple(vae.encode(images).latent.shape)
            assert vae.decode(vae.encode(images).latent).sample.shape == images.shape
        assert ae.config["latent_channel_choices"] == (sweep_prefixes(128) if ae.structured else [ae.latent_channels])
    assert shapes == {
        "ae_struct_f32c128": (1, 128, 2, 2),
        "ae_plain_f32c128": (1, 128, 2, 2),
        "ae_plain_f16c32": (1, 32, 4, 4),
    }


def test_regime_configs_and_command_lines(tmp_path):
    toy_stages.write_sweep_configs(tmp_path, REGIME)
    assert json.loads((tmp_path / "configs" / "usit.json").read_text()) == REGIME_USIT_CONFIG
    for ae in REGIME.autoencoders():
        assert json.loads((tmp_path / "configs" / f"{ae.name}.json").read_text()) == ae.config
    jobs = toy_stages.sweep_jobs(tmp_path, REGIME)
    check_jobs(jobs)
    by_name = {job.name: job for job in jobs}
    assert len(jobs) == 3 + 3 + 10
    for name in ("ae_plain_f16c32", "ae_struct_f32c128"):
        command = by_name[name].command
        assert _values(command, "--resolution") == ["64"] and _values(command, "--max_train_steps") == [
            str(REGIME.ae_steps)
        ]
    assert _values(by_name["ae_struct_f32c128"].command, "--latent_channel_choices") == [
        str(c) for c in sweep_prefixes(128)
    ]
    # the structured autoencoder reconstructs from the full latent and one random prefix in every step
    struct = by_name["ae_struct_f32c128"].command
    assert _values(struct, "--num_channel_samples") == ["2"] and _values(struct, "--always_include_full") == []
    assert "--always_include_full" not in by_name["ae_plain_f32c128"].command
    cache = by_name["cache_ae_plain_f16c32"]
    assert _values(cache.command, "--resolution") == ["64"] and cache.after == ("ae_plain_f16c32",)
    # the same optimiser, steps and checkpoints for every arm; the objective of each
    for arm in REGIME_ARMS:
        run = REGIME.arm(arm, 0)
        command = by_name[f"usit_{run.name}_seed0"].command
        assert _values(command, "--learning_rate") == ["0.001"] and _values(command, "--adam_beta2") == ["0.999"]
        assert _values(command, "--max_train_steps") == [str(REGIME.usit_steps)]
        assert _values(command, "--checkpointing_steps") == [str(REGIME.usit_steps // REGIME.usit_checkpoints)]
        assert _values(command, "--model_config") == [str(tmp_path / "configs" / "usit.json")]
    assert _values(by_name["usit_plain_f16c32_plain_seed1"].command, "--no_augmented") == []
    per_pass = by_name["usit_struct_f32c128_per_pass_seed0"].command
    assert _values(per_pass, "--num_channel_samples") == ["2"] and _values(per_pass, "--always_include_full") == []
    per_sample = by_name["usit_struct_f32c128_per_sample_seed0"].command
    assert _values(per_sample, "--channel_sampling") == ["per_sample"]


def test_the_other_modes_keep_their_resolution_and_configs(tmp_path):
    assert resolution_of(MODES["full"]) == resolution_of(SWEEP_MODES["sweep"]) == 32
    assert usit_config_of(SWEEP_MODES["sweep"]) == USIT_CONFIG
    toy_stages.write_sweep_configs(tmp_path, SWEEP_MODES["sweep"])
    config = json.loads((tmp_path / "configs" / "ae_plain_c64.json").read_text())
    assert config == {**AUTOENCODER_CONFIG, "latent_channels": 64, "latent_channel_choices": [64]}
    assert json.loads((tmp_path / "configs" / "usit.json").read_text()) == USIT_CONFIG
    command = toy_stages.sweep_jobs(tmp_path, SWEEP_MODES["sweep"])[0].command
    assert _values(command, "--resolution") == ["32"]
    sweep_commands = [job.command for job in toy_stages.sweep_jobs(tmp_path, SWEEP_MODES["sweep"])]
    assert not [c for c in sweep_commands if "train_dc_ae.py" in str(c[1]) and "--always_include_full" in c]


def test_reconstruction_prefixes_of_the_regime_autoencoders():
    prefixes = {ae.name: toy_evaluation.sweep_reconstruction_prefixes(ae, REGIME) for ae in REGIME.autoencoders()}
    assert prefixes == {
        "ae_struct_f32c128": sweep_prefixes(128),
        "ae_plain_f32c128": sweep_prefixes(128),  # the rest zeroed
        "ae_plain_f16c32": [32],
    }


# The report, from fake rows: `curves` gives each arm's guided class accuracy at each checkpoint (the other
# metrics follow from it), so each test states the outcome it wants.


def _fake_results(curves: dict[str, list[float]], settings=SMOKE) -> dict:
    every = settings.usit_steps // settings.usit_checkpoints
    rows = []
    for arm, values in curves.items():
        for seed in settings.seeds:
            run = settings.arm(arm, seed)
            for k, value in enumerate(values, start=1):
                for g in EVAL_GUIDANCE_SCALES:
                    accuracy = value + 0.01 * seed if g == 3.0 else value / 2
                    rows.append(
                        {
                            "run": run.name,
                            "seed": seed,
                            "step": every * k,
                            "passes": every * k * run.passes_per_step,
                            "guidance_scale": g,
                            "class_accuracy": accuracy,
                            "classifier_fd": 100 * (1 - accuracy),
                            "eval_seconds": 1.0,
                        }
                    )
    reconstruction = {
        ae.name: {
            str(c): {"psnr": 20.0 + c / 64, "ssim": 0.5}
            for c in toy_evaluation.sweep_reconstruction_prefixes(ae, settings)
        }
        for ae in settings.autoencoders()
    }
    classifier = {"accuracy": {"held-out real images": 0.9}, "fd_floor": {"x": 1.0}, "steps": 5, "trained_on": []}
    return regime_results_summary(
        "regime", settings, reconstruction, classifier, rows, {"diffusion": 10.0}, {}, max_parallel=2
    )


TWO_SEEDS = dataclasses.replace(REGIME, usit_steps=800, usit_checkpoints=8)


def test_speedups_against_arms_i_and_ii():
    curves = {
        "i": [0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65],
        "ii": [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45],
        "iii": [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45],
        "iv": [0.2, 0.4, 0.66, 0.7, 0.72, 0.74, 0.76, 0.78],
        "v": [0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.22, 0.24],
    }
    results = _fake_results(curves, TWO_SEEDS)
    assert results["arms"]["i"] == "plain_f16c32_plain"
    assert results["runs"]["plain_f16c32_plain"]["compute_per_step"] == 16
    assert results["runs"]["struct_f32c128_per_pass"]["compute_per_step"] == 8
    rows = {
        (r["reference"], r["arm"]): r
        for r in regime_speedups(results)
        if r["metric"] == "class_accuracy" and r["guidance_scale"] == 3.0
    }
    # (i) ends at 0.655 (mean of its seeds) at step 800, compute 12800; (iv) passes it between steps 200 and 300
    iv = rows[("i", "iv")]
    assert iv["target"] == pytest.approx(0.655) and iv["reference_compute"] == 800 * 16
    assert 200 < iv["reached_step"] < 300
    assert iv["speedup_compute"] == pytest.approx(800 * 16 / (iv["reached_step"] * 8))
    assert rows[("i", "v")]["reached_step"] is None and rows[("i", "v")]["speedup_steps"] is None
    assert rows[("i", "v")]["final_compute"] == 800 * 4
    assert rows[("ii", "i")]["reached_step"] is not None  # (i) against (ii) too
    fd = [r for r in regime_speedups(results) if r["metric"] == "classifier_fd"]
    assert fd and all(r["target"] > 0 for r in fd)


def test_the_headline_holds_does_not_hold_or_cannot_be_told(tmp_path):
    holds = {
        "i": [0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65],
        "ii": [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45],
        "iii": [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45],
        "iv": [0.2, 0.4, 0.66, 0.7, 0.72, 0.74, 0.76, 0.78],
        "v": [0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.22, 0.24],
    }
    headline = regime_headline(_fake_results(holds, TWO_SEEDS))
    assert headline["verdict"] == "holds", headline["statement"]
    assert headline["compute_claim"]["iv"]["met"] and not headline["compute_claim"]["v"]["met"]
    assert headline["versus"]["iv_vs_ii"]["equal_compute"] == "ahead"
    assert headline["versus"]["v_vs_ii"]["equal_compute"].startswith("behind")
    assert headline["equal_compute"] == 3200  # the one-pass high-channel arms' final compute
    assert "(v) does not reach (i)'s final class accuracy (0.655)" in headline["statement"]

    fails = {**holds, "iv": holds["ii"], "v": holds["ii"]}
    headline = regime_headline(_fake_results(fails, TWO_SEEDS))
    assert headline["verdict"] == "does not hold"
    assert headline["versus"]["iv_vs_iii"]["equal_steps"] == "level"

    part = {**holds, "iv": [0.2, 0.3, 0.45, 0.5, 0.55, 0.6, 0.66, 0.7]}  # ahead of (ii), (iii); > 1/4 compute
    headline = regime_headline(_fake_results(part, TWO_SEEDS))
    assert headline["verdict"] == "holds in part"
    assert not headline["compute_claim"]["iv"]["met"]

    chance = {arm: [0.1 + 0.01 * k for k in range(8)] for arm in REGIME_ARMS}
    headline = regime_headline(_fake_results(chance, TWO_SEEDS))
    assert headline["verdict"] == "cannot tell" and "too small" in headline["statement"]
    assert f"chance is {1 / len(SHAPE_CLASSES):g}" in headline["statement"]

    # the report of the outcome that holds: every section, the plots, the JSON with the headline
    results = write_regime_report(tmp_path, _fake_results(holds, TWO_SEEDS))
    for name in ("results.json", "results.md", *REGIME_PLOTS):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["headline"]["verdict"] == "holds" and saved["speedups"] == json.loads(json.dumps(results["speedups"]))
    markdown = (tmp_path / "results.md").read_text()
    for heading in (
        "## Reconstruction on held-out images",
        "## Classifier",
        "equal steps: step 800",
        "equal compute (passes x tokens): compute 3200",
        "## Speed-ups",
        "not reached by 800",
        "## The headline",
        "The headline holds",
        "## Every checkpoint",
    ):
        assert heading in markdown, heading
    assert "are not results" not in markdown  # not a smoke run


def test_a_smoke_report_says_its_numbers_are_not_results(tmp_path):
    curves = {arm: [0.1, 0.1, 0.1, 0.1] for arm in REGIME_ARMS}
    write_regime_report(tmp_path, _fake_results(curves))
    markdown = (tmp_path / "results.md").read_text()
    assert "are not results" in markdown and "Cannot tell" in markdown


def test_the_budget_estimate_from_step_cost_ratios():

    ratios = {
        "autoencoder_step": {"reference": 1.0, "f16c32": 4.0, "f32c128": 4.2},
        "usit_step": {"reference": 1.0, "i": 3.0, "plain": 1.0, "per_pass": 1.8, "per_sample": 1.05},
        "reconstruction": {"reference": 1.0, "f16c32": 4.0, "f32c128": 4.1},
        "classifier_step": 4.0,
        "sampling": {str(g): {"reference": 1.0, "i": 3.0, "high": 1.5} for g in EVAL_GUIDANCE_SCALES},
    }
    costs = measure_regime.costs_from_ratios(ratios)
    recorded = measure_regime.RECORDED_COSTS
    assert costs["usit_step"]["i"] == pytest.approx(3 * measure_regime.interpolate(32, recorded.usit_step))
    assert costs["eval_checkpoint"]["3.0"]["high"] == pytest.approx(1.5 * recorded.eval_checkpoint[3.0])
    estimate = measure_regime.estimate(REGIME, costs)
    assert set(estimate["job_seconds"]) == {job.name for job in toy_stages.sweep_jobs(REPO_ROOT, REGIME)}
    jobs = estimate["job_seconds"]
    assert jobs["usit_plain_f16c32_plain_seed0"] > jobs["usit_struct_f32c128_per_pass_seed0"]
    assert jobs["usit_struct_f32c128_per_pass_seed0"] > jobs["usit_struct_f32c128_plain_seed1"]
    assert estimate["evaluation_seconds"]["checkpoint_evaluations"] == 10 * REGIME.usit_checkpoints
    assert estimate["total_wall_seconds"] > estimate["training_wall_seconds"] > jobs["ae_struct_f32c128"]
