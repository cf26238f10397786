"""The toy recipe's report of the smoke, quick and full modes (examples/toy/report/) from a small fake results dict:
the seed summary, the markdown tables, the plots, the pictures and the bundled pipeline with its card; and the entry
point's flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dc_ae_hf.data.shapes import SHAPE_CLASSES
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from dc_ae_hf.self_contained import is_self_contained
from examples.toy import run_recipe
from examples.toy.report.card import write_bundle
from examples.toy.report.common import aggregate
from examples.toy.report.pictures import sample_grid, write_prefix_grids
from examples.toy.report.quick_full import results_summary, write_report
from examples.toy.toy_settings import AUTOENCODER_CONFIG, CHANNEL_CHOICES, MODES, USIT_CONFIG

SMOKE = MODES["smoke"]  # usit_steps 4, seeds (0,)


def _row(run, seed, step, scale, accuracy, fd):
    passes = step * (2 if run == "struct_aug" else 1)
    return {
        "run": run,
        "seed": seed,
        "step": step,
        "passes": passes,
        "guidance_scale": scale,
        "class_accuracy": accuracy,
        "classifier_fd": fd,
        "eval_seconds": 1.0,
    }


@pytest.fixture
def results():
    ae = {
        "structured": {str(c): {"psnr": 20.0 + c / 8, "ssim": 0.5 + c / 100} for c in CHANNEL_CHOICES},
        "plain_zeroed": {str(c): {"psnr": 10.0 + c / 2, "ssim": 0.3 + c / 100} for c in CHANNEL_CHOICES},
        "plain_finetuned": {"8": {"psnr": 22.5, "ssim": 0.61}},
    }
    rows = []
    for seed, offset in ((0, 0.0), (1, 0.2)):
        for step in (2, 4):
            for scale in (1.0, 3.0):
                rows.append(_row("struct_aug", seed, step, scale, 0.1 + offset + step / 100, 30.0 - 10 * offset))
                rows.append(_row("struct_plain", seed, step, scale, 0.1 + step / 100, 40.0))
                rows.append(_row("plain_plain", seed, step, scale, 0.1, 50.0 + step))
    classifier = {
        "accuracy": {"held-out real images": 0.9, "held-out structured-AE reconstructions": 0.85},
        "fd_floor": {"ae_struct": 1.5, "ae_plain": 1.75},
        "steps": 5,
    }
    timings = {"ae_struct": {"stage": "autoencoders", "seconds": 26.0, "start": 0.0, "end": 26.0}}
    return results_summary(
        "smoke", SMOKE, ae, classifier, rows, {"autoencoders": 26.0, "diffusion": 30.4}, timings, max_parallel=3
    )


def test_aggregate_summarises_seeds_per_run_and_step(results):
    table = aggregate(results["diffusion"], "class_accuracy", 3.0)
    assert list(table) == ["struct_aug", "struct_plain", "plain_plain"]
    mean, low, high, passes = table["struct_aug"][4]
    assert (mean, low, high, passes) == pytest.approx((0.24, 0.14, 0.34, 8))
    assert table["plain_plain"][2] == pytest.approx((0.1, 0.1, 0.1, 2))
    assert aggregate(results["diffusion"], "classifier_fd", 2.0) == {run: {} for run in table}


def test_aggregate_leaves_out_a_checkpoint_not_every_seed_wrote(results):
    # a trainer stopped by SIGTERM checkpoints off the schedule (step 3 of seed 0 only): no mean over one seed
    rows = results["diffusion"]
    extra = {**next(r for r in rows if r["run"] == "struct_aug" and r["guidance_scale"] == 3.0), "step": 3}
    table = aggregate([*rows, extra], "class_accuracy", 3.0)
    assert 3 not in table["struct_aug"] and table == aggregate(rows, "class_accuracy", 3.0)


def test_results_summary_holds_settings_and_the_structure_cost(results):
    assert results["mode"] == "smoke" and results["settings"]["usit_steps"] == 4
    assert results["autoencoder_config"] == AUTOENCODER_CONFIG and results["usit_config"] == USIT_CONFIG
    assert results["channel_choices"] == CHANNEL_CHOICES and results["augmented_passes_per_step"] == 2
    assert results["structure_cost_psnr_db"] == pytest.approx((20 + 4) - (10 + 16))  # at c' = 32
    assert results["max_parallel"] == 3 and results["stage_seconds"]["diffusion"] == 30.4


def test_write_report_writes_json_markdown_and_plots(results, tmp_path):
    write_report(tmp_path, results)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["diffusion"] == results["diffusion"] and saved["settings"]["seeds"] == [0]
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[0] == "# Toy DC-AE 1.5 recipe results (smoke mode)"
    assert "| c' | structured | plain, trailing channels zeroed | plain, decoder fine-tuned for c' |" in lines
    assert "| 8 | 21.00 / 0.580 | 14.00 / 0.380 | 22.50 / 0.610 |" in lines
    assert "| 32 | 24.00 / 0.820 | 26.00 / 0.620 | - |" in lines
    assert "Full-channel cost of structure: structured minus plain PSNR at c = 32: -2.00 dB." in lines
    assert "| held-out real images | 0.900 |" in lines
    assert any(line.endswith("same N as the samples): ae_struct: 1.500, ae_plain: 1.750") for line in lines)
    assert "## Diffusion (EMA weights; euler, 2 steps; mean over seeds [min, max])" in lines
    assert (
        "| run | step | passes | class accuracy, CFG 1 | classifier FD, CFG 1 | class accuracy, CFG 3 | "
        "classifier FD, CFG 3 |" in lines
    )
    aug = "0.240 [0.140, 0.340] | 29.0 [28.0, 30.0]"  # mean [min, max] over the seeds, same at both scales
    assert f"| struct_aug | 4 | 8 | {aug} | {aug} |" in lines
    plain = "0.100 [0.100, 0.100] | 52.0 [52.0, 52.0]"
    assert f"| plain_plain | 2 | 2 | {plain} | {plain} |" in lines
    assert any("share one pool of 3 parallel jobs" in line for line in lines)
    assert lines[-2:] == ["| autoencoders | 26 |", "| diffusion | 30 |"]
    with Image.open(tmp_path / "plots.png") as plots:
        assert plots.size == (21 * 90, 9 * 90)  # 2 x 4 panels, figsize (21, 9) at 90 dpi


def test_sample_grid_frames_every_cell_and_enlarges():
    colours = [(255 * (i % 2), 20 * i, 0) for i in range(8)]
    images = [Image.new("RGB", (32, 32), colour) for colour in colours]
    grid = sample_grid(images, columns=4)
    assert grid.size == ((4 * 34 + 2) * 3, (2 * 34 + 2) * 3)  # 32 px cells 2 px apart and from the edge, x3
    pixels = np.asarray(grid)
    for i, colour in enumerate(colours):
        row, column = divmod(i, 4)
        top, left = 3 * (2 + 34 * row), 3 * (2 + 34 * column)
        assert (pixels[top : top + 96, left : left + 96] == colour).all()
        assert (pixels[top - 6 : top, left : left + 96] == 255).all()  # the white frame above it
    assert (sample_grid(images, columns=2, border=0, upscale=1).size) == (64, 128)
    with pytest.raises(ValueError, match="non-empty multiple of columns=3 images, got 8"):
        sample_grid(images, columns=3)
    with pytest.raises(ValueError, match="columns=0"):
        sample_grid(images, columns=0)


def _autoencoder(choices) -> AutoencoderDC15:
    torch.manual_seed(0)
    return AutoencoderDC15(**{**AUTOENCODER_CONFIG, "latent_channel_choices": choices}).eval()


def test_prefix_grids_show_one_image_per_class(tmp_path):
    heldout = torch.rand(20, 3, 32, 32) * 2 - 1
    write_prefix_grids(tmp_path, _autoencoder(CHANNEL_CHOICES), _autoencoder([32]), heldout)
    for name in ("structured", "plain"):
        with Image.open(tmp_path / f"prefix_grid_{name}.png") as grid:
            # 10 rows (classes) x 6 columns (input, c' = 4, 8, 16, 24, 32), 32 px cells with 2 px padding
            assert grid.size == (6 * 34 + 2, 10 * 34 + 2)


def test_bundle_copies_the_pipeline_with_a_card(results, tmp_path):
    torch.manual_seed(0)
    transformer = USiTTransformer2DModel(**USIT_CONFIG, sample_size=4, in_channels=32, num_classes=10).eval()
    source = tmp_path / "usit" / "struct_aug_seed0" / "pipeline"
    pipe = DCAE15Pipeline(transformer, _autoencoder(CHANNEL_CHOICES), id2label=dict(enumerate(SHAPE_CLASSES)))
    pipe.save_pretrained(source)
    DCAE15Pipeline.from_pretrained(source).save_pretrained(source)  # now its configs name the local folder
    target = tmp_path / "bundle"
    write_bundle(source, target, "smoke", SMOKE, results["autoencoders"], results["diffusion"])
    (target / "stale").mkdir()  # an earlier bundle is replaced whole, not merged
    write_bundle(source, target, "smoke", SMOKE, results["autoencoders"], results["diffusion"])
    assert not (target / "stale").exists()
    foreign = tmp_path / "foreign"  # not a bundle: refused, untouched
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"--bundle_to=.*foreign' is not allowed: it holds other files \(notes.txt\)"):
        write_bundle(source, foreign, "smoke", SMOKE, results["autoencoders"], results["diffusion"])
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    bundled = DCAE15Pipeline.from_pretrained(target)
    assert bundled.get_label_ids("star") == [SHAPE_CLASSES.index("star")]
    assert not any(str(tmp_path) in path.read_text() for path in target.rglob("*.json"))  # no local paths
    assert is_self_contained(target) and is_self_contained(target / "vae")  # plain diffusers loads it too
    card = (target / "README.md").read_text()
    plain = card.index(f'DiffusionPipeline.from_pretrained("{target}", trust_remote_code=True)')
    assert plain < card.index(f'DCAE15Pipeline.from_pretrained("{target}")')  # the plain-diffusers snippet first
    assert "`examples/toy/run_recipe.py --mode smoke`, run `struct_aug`, seed 0" in card
    assert "| 3 | 0.140 | 30.0 |" in card and "| 1 | 0.140 | 30.0 |" in card  # seed 0, step 4, both scales
    assert "c'=4: 20.50 dB, c'=8: 21.00 dB, c'=16: 22.00 dB, c'=32: 24.00 dB" in card
    rows = [r for r in results["diffusion"] if r["step"] != 4]
    with pytest.raises(ValueError, match="no evaluation of run struct_aug, seed 0, step 4"):
        write_bundle(source, tmp_path / "other", "smoke", SMOKE, results["autoencoders"], rows)


def test_entry_point_checks_its_flags(capsys):
    args = run_recipe.parse_args(["--mode", "smoke", "--output_dir", "/tmp/x"])
    assert (args.mode, args.output_dir, args.results_dir, args.bundle_to, args.max_parallel) == (
        "smoke",
        "/tmp/x",
        None,
        None,
        2,
    )
    for bad in (["--max_parallel", "0"], ["--mode", "huge"]):
        with pytest.raises(SystemExit) as exit_info:
            run_recipe.main(bad)
        assert exit_info.value.code == 2
    assert "--max_parallel=0" in capsys.readouterr().err
