"""The toy recipe's channel sweep (`--mode sweep`) without running a trainer: its settings and checks, the passes
accounting, the job list and command lines, the budget estimate (examples/toy/measure_sweep.py), the
evaluation's pure pieces and the report from a fake results dict."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image

from dc_ae_hf.data.latent_cache import shard_path
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from examples.toy import measure_sweep, run_recipe, toy_evaluation, toy_stages
from examples.toy.report.common import common_step, steps_to_reach
from examples.toy.report.sweep import (
    SWEEP_PLOTS,
    channel_runs,
    speedup_rows,
    sweep_results_summary,
    table5_runs,
    write_sweep_report,
)
from examples.toy.toy_scheduler import check_jobs
from examples.toy.toy_settings import (
    AUTOENCODER_CONFIG,
    EVAL_GUIDANCE_SCALES,
    SWEEP_MODES,
    SweepAutoencoder,
    SweepRun,
    sweep_autoencoders,
    sweep_passes_per_step,
    sweep_prefixes,
    sweep_runs,
    usit_run_dir,
)

SWEEP = SWEEP_MODES["sweep"]
SMOKE = SWEEP_MODES["sweep-smoke"]


def _values(command: list[str], flag: str) -> list[str] | None:
    """The words after `flag` up to the next flag ([] for a bare flag), None when the flag is absent."""
    if flag not in command:
        return None
    start = command.index(flag) + 1
    end = next((i for i in range(start, len(command)) if command[i].startswith("--")), len(command))
    return command[start:end]


def test_sweep_modes_and_their_checks():
    assert sorted(SWEEP_MODES) == ["sweep", "sweep-smoke"]
    assert SWEEP.plain_channels == (8, 16, 32, 64, 128) and SWEEP.structured_channels == (64, 128)
    assert SWEEP.seeds == (0, 1) and SWEEP.largest_channels == 128  # at least 2 seeds for the Table 5 cells
    assert SWEEP.usit_steps % SWEEP.usit_checkpoints == 0 and SWEEP.usit_checkpoints % 2 == 0
    bad = [  # the messages name the field and its value (wording: dc_ae_hf/checks.py)
        ({"usit_checkpoints": 3}, ValueError, r"usit_checkpoints=3 .*even and divide usit_steps=4"),
        ({"usit_steps": 6, "usit_checkpoints": 4}, ValueError, r"usit_checkpoints=4 .*divide usit_steps=6"),
        ({"plain_channels": (8, 12, 32)}, ValueError, r"latent_channels=12 .*multiple of 8"),
        ({"plain_channels": (32, 8)}, ValueError, r"plain_channels=\[32, 8\] .*strictly increasing"),
        ({"structured_channels": (16,)}, ValueError, r"structured_channels=\(16,\) .*largest plain_channels 32"),
        ({"structured_channels": ()}, ValueError, r"structured_channels=\(\) .*non-empty"),
        ({"seeds": ()}, ValueError, r"seeds=\(\) .*non-empty"),
        ({"channel_seeds": (0, -1)}, ValueError, r"channel_seeds=-1 .*>= 0"),
        ({"ae_steps": 1.5}, TypeError, r"ae_steps=1\.5 .*int"),
        ({"usit_learning_rate": 0.0}, ValueError, r"usit_learning_rate=0\.0 .*> 0"),
    ]
    for change, kind, message in bad:
        with pytest.raises(kind, match=message):
            dataclasses.replace(SMOKE, **change)
    with pytest.raises(ValueError, match="latent_channels=8 .*2\\+ prefixes"):
        SweepAutoencoder(8, structured=True)


def test_passes_per_step_of_each_objective():
    # compute = forward/backward passes of the transformer: the official k = 2 schedule runs two per step
    assert [sweep_passes_per_step(o) for o in ("plain", "per_pass", "per_sample")] == [1, 2, 1]
    with pytest.raises(ValueError, match=r"objective='aug' is not allowed"):
        sweep_passes_per_step("aug")
    run = SweepRun(SweepAutoencoder(128, structured=False), "per_pass", seed=1)
    assert (run.name, run.passes_per_step) == ("plain_c128_per_pass", 2)
    assert run.folder(REPO_ROOT) == usit_run_dir(REPO_ROOT, "plain_c128_per_pass", 1)
    assert sweep_prefixes(32) == [8, 16, 24, 32] and len(sweep_prefixes(128)) == 16


def test_the_sweep_job_list():
    assert [ae.name for ae in sweep_autoencoders(SWEEP)] == [
        "ae_struct_c128",
        "ae_plain_c128",
        "ae_struct_c64",
        "ae_plain_c64",
        "ae_plain_c32",
        "ae_plain_c16",
        "ae_plain_c8",
    ]
    runs = [(run.name, run.seed) for run in sweep_runs(SWEEP)]
    table5 = [  # the 2x2 of Table 5 with both augmentations, most expensive first, every seed
        (f"{latent}_c128_{objective}", seed)
        for objective in ("per_pass", "per_sample", "plain")
        for seed in (0, 1)
        for latent in ("struct", "plain")
    ]
    fig1b = [(f"plain_c{c}_plain", seed) for c in (64, 32, 16, 8) for seed in (0, 1)]
    assert runs == table5 + fig1b
    passes = sum(run.passes_per_step for run in sweep_runs(SWEEP))
    assert passes == 4 * 2 + 8 * 1 + 8 * 1  # per_pass runs count twice


def test_sweep_configs_and_command_lines(tmp_path):
    toy_stages.write_sweep_configs(tmp_path, SWEEP)
    config = json.loads((tmp_path / "configs" / "ae_struct_c128.json").read_text())
    assert config["latent_channels"] == 128 and config["latent_channel_choices"] == sweep_prefixes(128)
    assert json.loads((tmp_path / "configs" / "ae_plain_c8.json").read_text())["latent_channel_choices"] == [8]
    assert AutoencoderDC15.from_config(config).config.latent_channels == 128

    jobs = toy_stages.sweep_jobs(tmp_path, SWEEP)
    check_jobs(jobs)  # one valid pool
    by_name = {job.name: job for job in jobs}
    assert len(jobs) == 7 + 7 + 20
    for ae in ("ae_struct_c128", "ae_plain_c8"):  # same data, steps and seed for every autoencoder
        command = by_name[ae].command
        assert _values(command, "--max_train_steps") == ["2000"] and _values(command, "--seed") == ["0"]
        assert _values(command, "--model_config") == [str(tmp_path / "configs" / f"{ae}.json")]
    assert _values(by_name["ae_struct_c128"].command, "--latent_channel_choices") == [
        str(c) for c in sweep_prefixes(128)
    ]
    cache = by_name["cache_ae_plain_c64"]
    assert cache.after == ("ae_plain_c64",) and cache.stage == "latent caches"
    assert _values(cache.command, "--vae") == [str(tmp_path / "ae_plain_c64" / "vae_ema")]
    # the scaling factor on all (class-balanced) training images, not the first 1000 of a class-sorted folder
    assert _values(cache.command, "--scaling_factor") == ["auto"]
    assert _values(cache.command, "--scaling_factor_images") == ["4000"]
    assert cache.done_marker == shard_path(tmp_path / "latents_ae_plain_c64", 0)

    choices = [str(c) for c in sweep_prefixes(128)]
    per_pass = by_name["usit_plain_c128_per_pass_seed1"].command
    assert _values(per_pass, "--num_channel_samples") == ["2"] and _values(per_pass, "--always_include_full") == []
    assert _values(per_pass, "--latent_channel_choices") == choices  # prefixes of the plain latent too
    assert _values(per_pass, "--channel_sampling") is None and _values(per_pass, "--seed") == ["1"]
    per_sample = by_name["usit_struct_c128_per_sample_seed0"].command
    assert _values(per_sample, "--channel_sampling") == ["per_sample"]
    assert _values(per_sample, "--always_include_full") == [] and _values(per_sample, "--num_channel_samples") is None
    plain = by_name["usit_plain_c16_plain_seed0"]
    assert _values(plain.command, "--no_augmented") == [] and plain.after == ("cache_ae_plain_c16",)
    assert _values(plain.command, "--latent_cache_dir") == [str(tmp_path / "latents_ae_plain_c16")]
    for job in jobs:
        if job.stage == "diffusion":
            assert _values(job.command, "--max_train_steps") == ["2400"]
            assert _values(job.command, "--checkpointing_steps") == ["600"]  # per_pass has one at half the steps
            assert _values(job.command, "--lr_warmup_steps") == ["120"]


def test_the_budget_estimate_of_the_sweep_is_under_two_and_a_half_hours():
    estimate = measure_sweep.estimate(SWEEP, measure_sweep.RECORDED_COSTS)
    assert set(estimate["job_seconds"]) == {job.name for job in toy_stages.sweep_jobs(REPO_ROOT, SWEEP)}
    assert estimate["total_wall_seconds"] < 2.5 * 3600
    assert estimate["evaluation_seconds"]["checkpoint_evaluations"] == 20 * 4
    jobs = estimate["job_seconds"]  # a per_pass step costs more than a plain one; no job is faster than its chain
    assert jobs["usit_plain_c128_per_pass_seed0"] > jobs["usit_plain_c128_per_sample_seed0"]
    assert estimate["training_wall_seconds"] > jobs["ae_struct_c128"] + jobs["usit_struct_c128_per_pass_seed0"]


def test_seconds_per_step_from_the_checkpoint_saves_of_a_log():
    def save(time, step):
        line = "INFO accelerate.accelerator: [RANK 0] Saving current state to"
        return f"2026-12-01 15:{time} {line} /x/checkpoint-{step}.tmp\n"

    first_run = "\n$ python train.py\n" + save("00:00,000", 10) + save("00:05,000", 20)  # 0.5 s per step
    second_run = "\n$ python train.py\n" + save("10:00,000", 30) + "steps\r" + save("10:03,000", 60)  # 0.1 s
    assert measure_sweep.seconds_per_step(first_run) == pytest.approx(0.5)
    assert measure_sweep.seconds_per_step(first_run + second_run) == pytest.approx(0.1)  # the fastest run
    with pytest.raises(ValueError, match="no run in the log saved two checkpoints"):
        measure_sweep.seconds_per_step("\n$ python train.py\n" + save("00:00,000", 10))
    assert measure_sweep.interpolate(64, {8: 1.0, 128: 2.5}) == pytest.approx(1.7)


def test_reconstruction_prefixes_of_each_sweep_autoencoder():
    prefixes = {ae.name: toy_evaluation.sweep_reconstruction_prefixes(ae, SWEEP) for ae in sweep_autoencoders(SWEEP)}
    assert prefixes["ae_struct_c128"] == prefixes["ae_plain_c128"] == sweep_prefixes(128)  # plain: rest zeroed
    assert prefixes["ae_struct_c64"] == sweep_prefixes(64) and prefixes["ae_plain_c16"] == [16]


def test_one_classifier_for_every_sweep_autoencoder(tmp_path):
    images = torch.rand(30, 3, 32, 32) * 2 - 1
    labels = torch.arange(30) // 3  # sorted by class, as the imagefolder
    vaes = {}
    for k, ae in enumerate(sweep_autoencoders(SMOKE)):
        torch.manual_seed(k)
        config = {**AUTOENCODER_CONFIG, "latent_channels": ae.latent_channels}
        vaes[ae.name] = AutoencoderDC15(**config, latent_channel_choices=ae.channel_choices).eval()
    settings = dataclasses.replace(SMOKE, num_samples=10, classifier_steps=2)
    _, references, info = toy_evaluation.evaluate_classifier(vaes, (images, labels), (images, labels), settings)
    names = ["ae_struct_c32", "ae_plain_c32", "ae_plain_c8"]
    assert info["trained_on"] == names and list(references) == names and list(info["fd_floor"]) == names
    assert list(info["accuracy"]) == ["held-out real images", *names] and info["steps"] == 2
    torch.testing.assert_close(references["ae_plain_c8"], toy_evaluation.reconstruct(vaes["ae_plain_c8"], images))
    assert all(0 <= value <= 1 for value in info["accuracy"].values())


def _row(run, seed, step, passes_per_step, scale, accuracy, fd):
    return {
        "run": run,
        "seed": seed,
        "step": step,
        "passes": step * passes_per_step,
        "guidance_scale": scale,
        "class_accuracy": accuracy,
        "classifier_fd": fd,
        "eval_seconds": 1.0,
    }


@pytest.fixture
def sweep_results():
    settings = dataclasses.replace(
        SMOKE, plain_channels=(8, 16, 32), structured_channels=(16, 32), seeds=(0, 1), channel_seeds=(0, 1)
    )
    reconstruction = {}
    for ae in sweep_autoencoders(settings):
        prefixes = toy_evaluation.sweep_reconstruction_prefixes(ae, settings)
        offset = 5.0 if ae.structured else 0.0
        reconstruction[ae.name] = {str(c): {"psnr": 10.0 + offset + c / 8, "ssim": 0.5 + c / 1000} for c in prefixes}
    rows = []
    for run in sweep_runs(settings):
        for step in (2, 4):
            for scale in EVAL_GUIDANCE_SCALES:
                accuracy = 0.1 + run.seed / 10 + step / 100 + (0.05 if run.objective == "per_pass" else 0)
                fd = 30.0 + run.autoencoder.latent_channels - run.seed
                rows.append(_row(run.name, run.seed, step, run.passes_per_step, scale, accuracy, fd))
    names = [ae.name for ae in sweep_autoencoders(settings)]
    classifier = {
        "accuracy": {"held-out real images": 0.9, **dict.fromkeys(names, 0.8)},
        "fd_floor": dict.fromkeys(names, 1.25),
        "steps": 5,
        "trained_on": names,
    }
    return sweep_results_summary(
        "sweep-smoke", settings, reconstruction, classifier, rows, {"autoencoders": 12.0}, {}, max_parallel=2
    )


def test_sweep_results_summary_describes_every_autoencoder_and_run(sweep_results):
    assert sweep_results["runs"]["plain_c32_per_pass"] == {
        "autoencoder": "ae_plain_c32",
        "latent_channels": 32,
        "structured": False,
        "objective": "per_pass",
        "passes_per_step": 2,
        "seeds": [0, 1],
    }
    assert sweep_results["autoencoders"]["ae_struct_c16"]["channel_choices"] == [8, 16]
    assert table5_runs(sweep_results) == [
        "struct_c32_plain",
        "struct_c32_per_pass",
        "struct_c32_per_sample",
        "plain_c32_plain",
        "plain_c32_per_pass",
        "plain_c32_per_sample",
    ]
    assert channel_runs(sweep_results) == ["plain_c8_plain", "plain_c16_plain", "plain_c32_plain"]
    rows = sweep_results["diffusion"]
    assert common_step(rows, table5_runs(sweep_results)) == 4
    # equal compute: the per_pass runs reach 4 passes at step 2, the one-pass runs at step 4
    assert common_step(rows, table5_runs(sweep_results), by="passes") == 4
    assert common_step(rows, ["nothing"]) is None


def test_write_sweep_report_writes_every_table_and_plot(sweep_results, tmp_path):
    write_sweep_report(tmp_path, sweep_results)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["diffusion"] == sweep_results["diffusion"] and saved["settings"]["seeds"] == [0, 1]
    assert {"reconstruction", "classifier", "runs", "autoencoders", "stage_seconds"} <= set(saved)
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[0] == "# Toy DC-AE 1.5 channel sweep (sweep-smoke mode)"
    assert any("are not results" in line for line in lines)  # a smoke run says so
    header = "| c' | plain AE with c = c' | structured c=16, first c' | structured c=32, first c' |"
    assert header + " plain c=32, first c' (rest zeroed) |" in lines
    assert "| 8 | 11.00 / 0.508 | 16.00 / 0.508 | 16.00 / 0.508 | 11.00 / 0.508 |" in lines
    assert "| 24 | - | - | 18.00 / 0.524 | 13.00 / 0.524 |" in lines
    assert "| 32 | 14.00 / 0.532 | - | 19.00 / 0.532 | - |" in lines  # the full plain latent: first column
    assert "| ae_plain_c8 | 0.800 |" in lines
    # generation vs c: mean [min, max] over the two seeds, and the AE's FD floor
    c16 = "0.190 [0.140, 0.240] | 45.5 [45.0, 46.0]"
    assert f"| 16 | 2 | {c16} | {c16} | 1.25 |" in lines
    steps = lines.index("## Table 5 cells at c = 32, equal steps: step 4")
    passes = lines.index("## Table 5 cells at c = 32, equal passes (compute): passes 4")
    aug = "0.240 [0.190, 0.290] | 61.5 [61.0, 62.0]"
    assert f"| plain | per_pass | 4 | 8 | {aug} | {aug} |" in lines[steps:passes]
    half = "0.220 [0.170, 0.270] | 61.5 [61.0, 62.0]"
    assert f"| plain | per_pass | 2 | 4 | {half} | {half} |" in lines[passes:]
    one_pass = "0.190 [0.140, 0.240] | 61.5 [61.0, 62.0]"
    assert f"| structured | per_sample | 4 | 4 | {one_pass} | {one_pass} |" in lines[passes:]
    assert lines[-1] == "| autoencoders | 12 |"
    for name, size in zip(SWEEP_PLOTS, ((12 * 90, 4.5 * 90), (22 * 90, 4.5 * 90), (22 * 90, 13 * 90))):
        with Image.open(tmp_path / name) as plot:
            assert plot.size == tuple(int(v) for v in size), name


def test_steps_to_reach_interpolates_between_checkpoints():
    curve = {600: (0.2,), 1200: (0.4,), 1800: (0.5,)}
    assert steps_to_reach(curve, 0.3) == pytest.approx(900.0)
    assert steps_to_reach(curve, 0.1) == 600.0  # already at the first checkpoint: an upper bound
    assert steps_to_reach(curve, 0.6) is None
    fd = {600: (40.0,), 1200: (20.0,)}
    assert steps_to_reach(fd, 30.0, higher_is_better=False) == pytest.approx(900.0)


def test_the_speed_up_table_of_the_report(sweep_results, tmp_path):
    rows = {(r["latent"], r["objective"], r["metric"], r["guidance_scale"]): r for r in speedup_rows(sweep_results)}
    assert len(rows) == 2 * 2 * 2 * len(EVAL_GUIDANCE_SCALES)
    # per_pass is ahead by 0.05: it passes the plain run's final 0.19 at its first checkpoint (step 2, 4 passes)
    per_pass = rows[("plain", "per_pass", "class_accuracy", 3.0)]
    assert per_pass["target"] == pytest.approx(0.19) and per_pass["reached_step"] == 2.0
    assert per_pass["speedup_steps"] == 2.0 and per_pass["speedup_passes"] == 1.0
    per_sample = rows[("structured", "per_sample", "class_accuracy", 1.0)]  # the plain run's own curve
    assert per_sample["reached_step"] == 4.0 and per_sample["speedup_steps"] == 1.0
    write_sweep_report(tmp_path, sweep_results)
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert "| plain | per_pass | class accuracy | 3 | 0.190 | <= 2 | >= 2.00x | >= 1.00x |" in lines
    assert "| structured | per_sample | class accuracy | 1 | 0.190 | 4 | 1.00x | 1.00x |" in lines


def test_report_only_rewrites_the_report_from_results_json(sweep_results, tmp_path, capsys):
    write_sweep_report(tmp_path, sweep_results)
    before = (tmp_path / "results.md").read_text()
    (tmp_path / "results.md").unlink()
    argv = ["--mode", "sweep-smoke", "--output_dir", str(tmp_path / "nothing"), "--results_dir", str(tmp_path)]
    run_recipe.main([*argv, "--report_only"])
    assert (tmp_path / "results.md").read_text() == before
    assert not (tmp_path / "nothing").exists()  # nothing trained or written there
    with pytest.raises(SystemExit) as exit_info:
        run_recipe.main(["--mode", "sweep-smoke", "--results_dir", str(tmp_path / "empty"), "--report_only"])
    assert exit_info.value.code == 2 and "error: --report_only needs" in capsys.readouterr().err


def test_entry_point_takes_the_sweep_modes(capsys):
    assert run_recipe.parse_args(["--mode", "sweep"]).mode == "sweep"
    with pytest.raises(SystemExit) as exit_info:
        run_recipe.main(["--mode", "sweep-smoke", "--bundle_to", "/tmp/bundle"])
    assert exit_info.value.code == 2
    assert "--bundle_to is not available with --mode sweep-smoke" in capsys.readouterr().err


def test_measure_sweep_entry_point(capsys):
    recorded = measure_sweep.main(["--recorded"])  # the documented estimate, nothing run
    assert (
        recorded["total_wall_seconds"]
        == measure_sweep.estimate(SWEEP, measure_sweep.RECORDED_COSTS)["total_wall_seconds"]
    )
    assert json.loads(capsys.readouterr().out)["mode"] == "sweep"
    for bad, message in (
        (["--usit_steps", "7"], "usit_checkpoints=2 .*divide usit_steps=7"),
        (["--ae_steps", "2"], "--ae_steps=2"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            measure_sweep.main(["--recorded", *bad])
        assert exit_info.value.code == 2
        assert re.search(message, capsys.readouterr().err)
    with pytest.raises(ValueError, match=r"objective='aug' is not allowed: choose one of \['plain'"):
        toy_stages.sweep_objective_flags("aug", [8, 16])
