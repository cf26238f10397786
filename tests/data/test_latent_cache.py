"""The latent cache: training/cache_latents.py (values, flips, metadata, resumability, errors) and its reader
`dc_ae_hf.data.latent_cache.LatentCacheDataset`."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_AE15_CONFIG
from helpers import run_in_process
from PIL import Image
from safetensors.torch import load_file, save_file

from dc_ae_hf.data.images import center_crop_arr
from dc_ae_hf.data.latent_cache import (
    LatentCacheDataset,
    autoencoder_config_hash,
    check_cache_matches_autoencoder,
    load_latent_cache_metadata,
    read_shard_statistics,
    shard_path,
    shards_of_process,
    update_latent_cache_metadata,
)
from dc_ae_hf.data.shapes import render_shape_image
from dc_ae_hf.latents import compute_scaling_factor, encode_to_diffusion_space
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15

CLASSES = ("apple", "kiwi")  # imagefolder sorts class folders: apple = 0, kiwi = 1


pytestmark = pytest.mark.usefixtures("one_thread")


def _load_script():
    spec = importlib.util.spec_from_file_location("cache_latents", REPO_ROOT / "training" / "cache_latents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _load_script()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny AE (32 px -> 4x4x16 latents) and 12 non-square images (48x40 and 40x56) in two class folders."""
    root = tmp_path_factory.mktemp("latent_cache")
    torch.manual_seed(0)
    AutoencoderDC15(**TINY_AE15_CONFIG).save_pretrained(root / "vae")
    for i in range(12):
        image, _ = render_shape_image(i, seed=3, resolution=64)
        image = image.crop((0, 8, 48, 48)) if i % 2 else image.crop((12, 0, 52, 56))  # 48x40 or 40x56
        folder = root / "images" / "train" / CLASSES[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:03d}.png")
    return root


def _center_crops(workspace: Path) -> tuple[list[Path], torch.Tensor]:
    """The image files in imagefolder order (class, then name) and their ADM center crops (N, 3, 32, 32) in [-1, 1]."""
    files = sorted((workspace / "images" / "train").rglob("*.png"))
    crops = torch.stack([torch.from_numpy(center_crop_arr(Image.open(f).convert("RGB"), 32).copy()) for f in files])
    return files, crops.permute(0, 3, 1, 2).float() / 127.5 - 1


def _cached_latents(output_dir: Path) -> torch.Tensor:
    """Every latent of a cache as `LatentCacheDataset` reads it back, float64."""
    dataset = LatentCacheDataset(output_dir)
    return torch.stack([dataset[i]["latents"] for i in range(len(dataset))]).double()


def _assert_statistics_of_the_whole_cache(output_dir: Path, summary: dict | None = None) -> dict:
    latents = _cached_latents(output_dir)
    meta = load_latent_cache_metadata(output_dir)
    mean, std = latents.mean().item(), latents.std(unbiased=False).item()
    assert meta["latent_mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
    assert meta["latent_std"] == pytest.approx(std, rel=1e-9)
    assert meta["scaling_factor_for_unit_std"] == pytest.approx(meta["scaling_factor"] / std, rel=1e-9)
    if summary is not None:
        assert (summary["latent_mean"], summary["latent_std"]) == (meta["latent_mean"], meta["latent_std"])
    return meta


def _folder_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _our_warnings(records) -> list[str]:
    return [str(r.message) for r in records if "LATENT_STD_WARNING_RANGE" in str(r.message)]


def _argv(workspace: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--vae",
        str(workspace / "vae"),
        "--train_data_dir",
        str(workspace / "images"),
        "--cache_dir",
        str(workspace / "hf_cache"),
        "--output_dir",
        str(output_dir),
        *"--resolution 32 --shard_size 5 --batch_size 3".split(),
        *extra,
    ]


@pytest.fixture(scope="module")
def flip_cache(script, workspace):
    output_dir = workspace / "cache_flip"
    summary = run_in_process(script, _argv(workspace, output_dir, "--random_flip"))
    return output_dir, summary


def test_cache_holds_center_cropped_scaled_latents_and_their_flips(flip_cache, workspace):
    output_dir, summary = flip_cache
    assert summary["written"] == [0, 1, 2] and summary["skipped"] == []
    vae = AutoencoderDC15.from_pretrained(workspace / "vae").eval()
    files, pixels = _center_crops(workspace)  # (12, 3, 32, 32) in [-1, 1], the ADM center crop
    with torch.no_grad():
        expected = encode_to_diffusion_space(vae, pixels)  # (12, 16, 4, 4), times the scaling factor 0.7
        expected_flip = encode_to_diffusion_space(vae, torch.flip(pixels, dims=[-1]))
    labels = torch.tensor([0 if f.parent.name == "apple" else 1 for f in files])

    dataset = LatentCacheDataset(output_dir)
    assert len(dataset) == 24 and dataset.latent_shape == (16, 4, 4)
    seen = set()
    for shard in range(3):
        tensors = load_file(str(shard_path(output_dir, shard)))
        n = len(range(shard * 5, min(shard * 5 + 5, 12)))
        assert tensors["latents"].shape == (2 * n, 16, 4, 4) and tensors["labels"].dtype == torch.int64
        assert tensors["flipped"].tolist() == [0] * n + [1] * n  # originals first, then their mirror images
        for latent, label, index, flipped in zip(
            tensors["latents"], tensors["labels"], tensors["indices"], tensors["flipped"]
        ):
            reference = (expected_flip if flipped else expected)[index]
            torch.testing.assert_close(latent, reference, atol=1e-5, rtol=1e-5)
            assert label == labels[index]
            seen.add((int(index), int(flipped)))
    assert seen == {(i, f) for i in range(12) for f in (0, 1)}
    item = dataset[10 + 1]  # shard 0 holds 10 rows (5 images + flips); shard 1, row 1: image 6, not flipped
    torch.testing.assert_close(item["latents"], expected[6], atol=1e-5, rtol=1e-5)
    assert item["labels"] == labels[6] and item["latents"].dtype == torch.float32
    assert torch.equal(
        dataset.labels, torch.cat([load_file(str(shard_path(output_dir, s)))["labels"] for s in range(3)])
    )


def test_metadata_records_the_autoencoder_and_settings(flip_cache, workspace):
    output_dir, summary = flip_cache
    meta = _assert_statistics_of_the_whole_cache(output_dir, summary)  # latent_mean / latent_std of all 24 latents
    assert meta["scaling_factor_source"] == "the autoencoder's config" and meta["scaling_factor_measurement"] is None
    vae = AutoencoderDC15.from_pretrained(workspace / "vae")
    assert meta["autoencoder"]["config_hash"] == autoencoder_config_hash(vae.config)
    assert meta["autoencoder"]["name_or_path"] == str((workspace / "vae").resolve())
    assert meta["autoencoder"]["latent_channels"] == 16
    assert meta["autoencoder"]["latent_channel_choices"] == [4, 8, 12, 16]
    assert meta["scaling_factor"] == pytest.approx(0.7) and meta["resolution"] == 32
    assert meta["latent_shape"] == [16, 4, 4] and meta["flip"] is True and meta["crop"] == "adm_center_crop"
    assert (meta["num_images"], meta["num_latents"], meta["num_shards"]) == (12, 24, 3)
    assert meta["id2label"] == {"0": "apple", "1": "kiwi"} and meta["num_classes"] == 2
    check_cache_matches_autoencoder(meta, vae.config, "vae")  # same autoencoder: no error
    other = AutoencoderDC15(**{**TINY_AE15_CONFIG, "scaling_factor": 0.5})
    with pytest.raises(ValueError, match="cannot be decoded by it"):
        check_cache_matches_autoencoder(meta, other.config, "other-vae")


def test_images_smaller_than_the_resolution_are_counted(script, workspace, flip_cache, tmp_path, capsys):
    assert load_latent_cache_metadata(flip_cache[0])["upsampled_images"] == 0  # 48x40 and 40x56 at 32 px
    output_dir = tmp_path / "cache48"  # every image's shorter side (40) is below 48: all upsampled, said once
    run_in_process(script, [*_argv(workspace, output_dir), "--resolution", "48"])
    said = [line for line in capsys.readouterr().out.splitlines() if "upsampled" in line]
    assert said == [
        "12 of 12 images (100.0%) were smaller than --resolution=48 and were upsampled by the ADM center crop"
    ]
    assert load_latent_cache_metadata(output_dir)["upsampled_images"] == 12


def test_rerun_skips_finished_shards_and_redoes_missing_ones(script, workspace):
    output_dir = workspace / "cache_resume"
    first = run_in_process(script, _argv(workspace, output_dir))
    assert first["written"] == [0, 1, 2]
    before = {s: shard_path(output_dir, s).stat().st_mtime_ns for s in range(3)}
    original = load_file(str(shard_path(output_dir, 1)))
    shard_path(output_dir, 1).unlink()  # as if the run had been killed before writing shard 1
    (output_dir / "shard-00001.safetensors.tmp").write_bytes(b"partial")  # a crash leaves at most a .tmp file
    with pytest.raises(ValueError, match="incomplete: 1 of 3 shards missing"):
        LatentCacheDataset(output_dir)
    second = run_in_process(script, _argv(workspace, output_dir))
    assert second["written"] == [1] and second["skipped"] == [0, 2]
    _assert_statistics_of_the_whole_cache(output_dir, second)  # all 3 shards, though this run wrote only one
    assert {s: shard_path(output_dir, s).stat().st_mtime_ns for s in (0, 2)} == {s: before[s] for s in (0, 2)}
    redone = load_file(str(shard_path(output_dir, 1)))
    for key in original:
        torch.testing.assert_close(redone[key], original[key])
    assert not (output_dir / "shard-00001.safetensors.tmp").exists()  # replaced by the atomic write
    assert len(LatentCacheDataset(output_dir)) == 12  # no flips
    first_meta = load_latent_cache_metadata(output_dir)

    # metadata.json lost and a shard from an older version without statistics: a rerun still reports all of it
    (output_dir / "metadata.json").unlink()
    tensors = load_file(str(shard_path(output_dir, 2)))
    save_file(tensors, str(shard_path(output_dir, 2)), metadata={"shard": "2"})
    third = run_in_process(script, _argv(workspace, output_dir))
    assert third["written"] == [] and third["skipped"] == [0, 1, 2]
    meta = _assert_statistics_of_the_whole_cache(output_dir, third)
    assert meta["latent_std"] == pytest.approx(first_meta["latent_std"], rel=1e-12)
    computed = read_shard_statistics(shard_path(output_dir, 2))  # from the latents themselves
    assert computed.count == tensors["latents"].numel()
    assert computed.std == pytest.approx(tensors["latents"].double().std(unbiased=False).item(), rel=1e-9)
    with pytest.raises(ValueError, match=r"cannot change the identity fields \['scaling_factor'\]"):
        update_latent_cache_metadata(output_dir, {"scaling_factor": 2.0})


def test_rerun_with_other_settings_is_refused(script, workspace):
    output_dir = workspace / "cache_resume_other"
    run_in_process(script, _argv(workspace, output_dir, "--max_images", "4"))
    with pytest.raises(ValueError, match=r"other settings \(resolution: cache has 32, now 16"):
        run_in_process(script, [*_argv(workspace, output_dir, "--max_images", "4"), "--resolution", "16"])


def test_bfloat16_storage_and_pickling_for_dataloader_workers(script, workspace):
    output_dir = workspace / "cache_bf16"
    run_in_process(script, _argv(workspace, output_dir, "--latent_dtype", "bfloat16", "--max_images", "3"))
    assert load_file(str(shard_path(output_dir, 0)))["latents"].dtype == torch.bfloat16
    dataset = LatentCacheDataset(output_dir)
    first = dataset[0]["latents"]  # opens a file handle
    copy = pickle.loads(pickle.dumps(dataset))  # what a DataLoader worker receives
    assert copy._handles == {} and torch.equal(copy[0]["latents"], first) and first.dtype == torch.float32
    with pytest.raises(IndexError):
        dataset[3]


def test_process_shard_assignment_partitions_the_shards():
    assert shards_of_process(7, 0, 2) == [0, 2, 4, 6] and shards_of_process(7, 1, 2) == [1, 3, 5]
    assert sorted(sum((shards_of_process(10, r, 3) for r in range(3)), [])) == list(range(10))


def test_bad_inputs_fail_with_clear_messages(script, workspace, tmp_path):
    with pytest.raises(ValueError, match="no metadata.json"):
        LatentCacheDataset(tmp_path)  # an empty folder
    with pytest.raises(ValueError, match="is not a directory"):
        LatentCacheDataset(tmp_path / "missing")
    (tmp_path / "empty" / "train" / "apple").mkdir(parents=True)
    with pytest.raises(ValueError, match="--train_data_dir='.*empty' holds no image files"):
        run_in_process(
            script,
            [
                "--vae",
                str(workspace / "vae"),
                "--train_data_dir",
                str(tmp_path / "empty"),
                "--output_dir",
                str(tmp_path / "out"),
            ],
        )
    with pytest.raises(ValueError, match="--label_column='class'"):
        run_in_process(script, [*_argv(workspace, tmp_path / "out"), "--label_column", "class"])
    with pytest.raises(ValueError, match="divisible by the autoencoder's compression ratio 8"):
        run_in_process(script, [*_argv(workspace, tmp_path / "out"), "--resolution", "30"])
    with pytest.raises(ValueError, match="--vae='nowhere/vae' could not be loaded"):
        run_in_process(
            script,
            [
                "--vae",
                "nowhere/vae",
                "--train_data_dir",
                str(workspace / "images"),
                "--cache_dir",
                str(workspace / "hf_cache"),
                "--output_dir",
                str(tmp_path / "out"),
            ],
        )
    meta = json.loads((workspace / "cache_flip" / "metadata.json").read_text())
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metadata.json").write_text(json.dumps({**meta, "format_version": 0}))
    with pytest.raises(ValueError, match="format_version 0"):
        LatentCacheDataset(tmp_path / "old")


def test_a_wrong_scaling_factor_warns_with_the_factor_that_fits(script, workspace, tmp_path):
    """The user's case: an autoencoder config with an unmeasured factor; the cache says so and what to use."""
    vae = AutoencoderDC15.from_pretrained(workspace / "vae")
    vae.register_to_config(scaling_factor=5.0)  # ~7x too large for this autoencoder
    vae.save_pretrained(tmp_path / "wrong_vae")
    argv = _argv(workspace, tmp_path / "cache", "--max_images", "6")
    argv[argv.index("--vae") + 1] = str(tmp_path / "wrong_vae")
    with pytest.warns(UserWarning, match=r"outside LATENT_STD_WARNING_RANGE \[0.5, 2.0\]") as records:
        summary = run_in_process(script, argv)
    messages = _our_warnings(records)
    assert len(messages) == 1  # once
    meta = _assert_statistics_of_the_whole_cache(tmp_path / "cache", summary)
    assert meta["latent_std"] > 2.0
    assert f"have std {meta['latent_std']:.4g}" in messages[0]
    assert "multiplied by scaling_factor=5 (the autoencoder's config)" in messages[0]
    unit = meta["scaling_factor_for_unit_std"]
    assert f"the factor that gives std 1 is {unit:.6g} (= 5 / {meta['latent_std']:.4g})" in messages[0]
    assert "--scaling_factor auto" in messages[0] and f"--scaling_factor {unit:.6g}" in messages[0]


def test_scaling_factor_auto_measures_caches_and_saves_the_autoencoder(script, workspace, tmp_path, capsys):
    source = workspace / "vae"
    before = _folder_hashes(source)
    output_dir = tmp_path / "auto"
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        summary = run_in_process(script, _argv(workspace, output_dir, "--scaling_factor", "auto"))
    assert _our_warnings(records) == []
    printed = capsys.readouterr().out
    meta = _assert_statistics_of_the_whole_cache(output_dir, summary)
    # Measured on all 12 crops the cache holds (1000 by default, capped at the dataset): the cache's std is 1 up to
    # the encoder's batch-size-dependent fp32 rounding (batches of 3 when measuring, 3 + 2 per shard), ~1e-7.
    assert meta["latent_std"] == pytest.approx(1.0, abs=1e-4)
    _, pixels = _center_crops(workspace)
    expected = compute_scaling_factor(AutoencoderDC15.from_pretrained(source).eval(), [pixels])
    assert (
        meta["scaling_factor"] == pytest.approx(expected, rel=1e-5)
        and summary["scaling_factor"] == meta["scaling_factor"]
    )
    assert meta["scaling_factor_measurement"] == {
        "source_name_or_path": str(source.resolve()),
        "source_scaling_factor": pytest.approx(0.7),
        "num_images": 12,
        "flip": False,
        "resolution": 32,
        "vae_dtype": "float32",
    }
    assert meta["scaling_factor_source"] == "measured: 1 / std of the latents of the first 12 images"

    # <output_dir>/vae: the same weights, the measured factor; the cache refers to it and passes train_usit's check
    saved = output_dir / "vae"
    assert json.loads((saved / "config.json").read_text())["scaling_factor"] == meta["scaling_factor"]
    assert meta["autoencoder"]["name_or_path"] == str(saved.resolve())
    assert meta["autoencoder"]["source_name_or_path"] == str(source.resolve())
    assert f"saved the autoencoder with scaling_factor={meta['scaling_factor']:.6g} to {saved}" in printed
    with torch.device("meta"):  # how train_usit.py reads the cache's autoencoder config
        config = dict(AutoencoderDC15.from_config(AutoencoderDC15.load_config(saved)).config)
    check_cache_matches_autoencoder(meta, config, str(saved))
    source_weights = load_file(str(source / "diffusion_pytorch_model.safetensors"))
    saved_weights = load_file(str(saved / "diffusion_pytorch_model.safetensors"))
    assert source_weights.keys() == saved_weights.keys()
    assert all(torch.equal(source_weights[k], saved_weights[k]) for k in source_weights)
    assert _folder_hashes(source) == before  # the input autoencoder is never modified

    # the same command again: nothing re-encoded, the recorded factor reused (no refusal), the saved vae kept
    saved_hashes = _folder_hashes(saved)
    again = run_in_process(script, _argv(workspace, output_dir, "--scaling_factor", "auto"))
    assert again["skipped"] == [0, 1, 2] and again["scaling_factor"] == meta["scaling_factor"]
    assert "as measured by the earlier run" in capsys.readouterr().out
    assert _folder_hashes(saved) == saved_hashes and _folder_hashes(source) == before


def test_scaling_factor_number_and_bad_values(script, workspace, tmp_path):
    output_dir = tmp_path / "fixed"
    run_in_process(script, _argv(workspace, output_dir, "--scaling_factor", "1.5", "--max_images", "4"))
    meta = load_latent_cache_metadata(output_dir)
    assert meta["scaling_factor"] == 1.5 and meta["scaling_factor_source"] == "--scaling_factor"
    assert json.loads((output_dir / "vae" / "config.json").read_text())["scaling_factor"] == 1.5
    _, pixels = _center_crops(workspace)
    vae = AutoencoderDC15.from_pretrained(workspace / "vae").eval()
    with torch.no_grad():
        expected = vae.encode(pixels).latent * 1.5
    for row in range(4):
        index = int(load_file(str(shard_path(output_dir, 0)))["indices"][row])
        torch.testing.assert_close(
            LatentCacheDataset(output_dir)[row]["latents"], expected[index], atol=1e-5, rtol=1e-5
        )
    with pytest.raises(ValueError, match=r"scaling_factor: cache has 1.5, now 2.0"):  # latents scaled otherwise
        run_in_process(script, _argv(workspace, output_dir, "--scaling_factor", "2", "--max_images", "4"))
    assert json.loads((output_dir / "vae" / "config.json").read_text())["scaling_factor"] == 1.5  # refused first

    for bad in ("0", "-1", "nan", "inf", "big"):
        with pytest.raises(ValueError, match=rf"--scaling_factor='{bad}' is not allowed: give 'auto' or a finite"):
            run_in_process(script, _argv(workspace, tmp_path / "bad", "--scaling_factor", bad))
    with pytest.raises(
        ValueError, match="--scaling_factor_images=5 is not allowed: it is only used with --scaling_factor auto"
    ):
        run_in_process(script, _argv(workspace, tmp_path / "bad", "--scaling_factor_images", "5"))
    with pytest.raises(ValueError, match="--scaling_factor_images=0 is not allowed: must be an int >= 1"):
        run_in_process(
            script, _argv(workspace, tmp_path / "bad", "--scaling_factor", "auto", "--scaling_factor_images", "0")
        )
    argv = _argv(workspace, output_dir, "--scaling_factor", "auto")
    argv[argv.index("--vae") + 1] = str(output_dir / "vae")
    with pytest.raises(ValueError, match=r"is the folder --scaling_factor writes \(<output_dir>/vae\)"):
        run_in_process(script, argv)
    assert not (tmp_path / "bad").exists()


def test_the_output_dir_must_be_new_empty_or_a_latent_cache(script, workspace, tmp_path):
    run = tmp_path / "run"  # a training run: refused before anything is written
    run.mkdir()
    (run / "training_config.json").write_text('{"script": "train_usit"}')
    with pytest.raises(ValueError, match=r"--output_dir=.* is not allowed: it holds a training run of train_usit.py"):
        run_in_process(script, _argv(workspace, run, "--max_images", "2"))
    assert [p.name for p in run.iterdir()] == ["training_config.json"]
    cache = tmp_path / "cache"
    run_in_process(script, _argv(workspace, cache, "--max_images", "2"))
    assert json.loads((cache / ".dc_ae_hf_output.json").read_text()) == {"writer": "training/cache_latents.py"}
    run_in_process(script, _argv(workspace, cache, "--max_images", "2"))  # its own cache: resumed
