"""Tests for the procedural shapes dataset (dc_ae_hf/data/shapes.py)."""

import hashlib
import math

import datasets
import numpy as np
import pytest
from PIL import Image

from dc_ae_hf.data.shapes import (
    SHAPE_CLASSES,
    export_imagefolder,
    main,
    make_shapes_dataset,
    render_shape_image,
    render_shape_sample,
)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def _foreground(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) -> (N, H, W): distance from the background grey level (median of the border), max-normalised."""
    grey = images.mean(-1)
    border = np.concatenate([grey[:, 0], grey[:, -1], grey[:, :, 0], grey[:, :, -1]], axis=1)
    fg = np.abs(grey - np.median(border, axis=1)[:, None, None])
    return fg / fg.max(axis=(1, 2), keepdims=True)


def _recentred(fg: np.ndarray, out: int = 16) -> np.ndarray:
    """Crop each foreground map to its object's bounding box (square) and resample to out x out (nearest)."""
    crops = []
    for m in fg:
        ys, xs = np.nonzero(m > 0.5)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 + 1
        grid = np.linspace(-1.0, 1.0, out)
        rows = np.clip(np.round(cy + grid[:, None] * half).astype(int), 0, m.shape[0] - 1)
        cols = np.clip(np.round(cx + grid[None, :] * half).astype(int), 0, m.shape[1] - 1)
        crops.append(m[rows, cols])
    return np.stack(crops).reshape(len(fg), -1)


def _nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray, num_train: int) -> float:
    train, test = features[:num_train], features[num_train:]
    centroids = np.stack([train[labels[:num_train] == c].mean(0) for c in range(len(SHAPE_CLASSES))])
    pred = ((test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    return float((pred == labels[num_train:]).mean())


def _box_lowpass(image: Image.Image, factor: int = 4) -> Image.Image:
    side = image.size[0]
    small = image.resize((side // factor, side // factor), Image.Resampling.BOX)
    return small.resize((side, side), Image.Resampling.BILINEAR)


def test_classes_are_sorted_unique_folder_names():
    assert len(SHAPE_CLASSES) == 10
    assert list(SHAPE_CLASSES) == sorted(set(SHAPE_CLASSES))  # imagefolder sorts folder names
    assert all(name.isidentifier() and name.islower() for name in SHAPE_CLASSES)


def test_render_is_deterministic_per_seed_and_index():
    a, label_a = render_shape_image(13, seed=5)
    b, label_b = render_shape_image(13, seed=5)
    assert a.size == (32, 32) and a.mode == "RGB"
    assert label_a == label_b == 3
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other_seed, _ = render_shape_image(13, seed=6)
    other_index, _ = render_shape_image(23, seed=5)  # same class, different image
    assert np.abs(_pixels(a) - _pixels(other_seed)).mean() > 0.05
    assert np.abs(_pixels(a) - _pixels(other_index)).mean() > 0.05


def test_same_scene_at_every_resolution():
    low, high = render_shape_sample(4, seed=1, resolution=32), render_shape_sample(4, seed=1, resolution=64)
    assert high.image.size == (64, 64) and high.label == low.label
    np.testing.assert_allclose(np.asarray(high.center) / 2, low.center, rtol=1e-12)
    # The anti-aliased coverage at 64 px, box-downsampled, matches the one rendered at 32 px.
    high_mask = high.mask.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    assert np.abs(high_mask - low.mask).max() < 0.1


def test_dataset_subset_consistency_and_schema():
    small = make_shapes_dataset(10, seed=3)
    large = make_shapes_dataset(20, seed=3)
    assert small.features == large.features
    assert small.features["label"].names == list(SHAPE_CLASSES)
    assert isinstance(small.features["image"], datasets.Image)
    assert small["label"] == [i % 10 for i in range(10)]
    assert large["label"] == [i % 10 for i in range(20)]
    np.testing.assert_array_equal(np.asarray(small[7]["image"]), np.asarray(large[7]["image"]))
    np.testing.assert_array_equal(np.asarray(large[17]["image"]), np.asarray(render_shape_image(17, seed=3)[0]))
    # Parallel rendering gives the same dataset.
    parallel = make_shapes_dataset(20, seed=3, num_proc=2)
    for i in (0, 9, 19):
        np.testing.assert_array_equal(np.asarray(parallel[i]["image"]), np.asarray(large[i]["image"]))


# Area of each shape as a fraction of (bounding-box longer side)^2, computed by hand (independently of the polygons
# in the module): a label drawn with the wrong geometry would not match.
_EXPECTED_AREA_FRACTION = {
    "circle": math.pi / 4,
    "ring": math.pi / 4 * (1 - 0.5**2),
    "square": 1.0,
    "triangle": math.sqrt(3) / 4,  # equilateral, width = side
    "hexagon": 3 * math.sqrt(3) / 8,  # regular, vertex-to-vertex width = side
    "cross": (2 * 0.3 * 2 * 2 - 0.6**2) / 4,  # plus with arm width 0.3 of the side
}


@pytest.mark.parametrize("resolution", [32, 64])
def test_objects_are_never_cut_by_the_border(resolution):
    # The margin is 3.5% of the side (>= 1 px from 32 px on), so the outermost pixels stay uncovered.
    for index in range(300):  # covers the extremes of size, rotation and position for every class
        mask = render_shape_sample(index, seed=9, resolution=resolution).mask
        assert mask[0].max() == mask[-1].max() == mask[:, 0].max() == mask[:, -1].max() == 0.0, index


@pytest.mark.parametrize("index", range(40))
def test_mask_geometry_matches_label(index):
    sample = render_shape_sample(index, seed=11)
    name = SHAPE_CLASSES[sample.label]
    mask, size = sample.mask, sample.size
    assert mask.shape == (32, 32) and mask.min() >= 0.0 and mask.max() <= 1.0
    assert 0.45 * 32 - 1e-6 <= size <= 0.68 * 32 + 1e-6
    area = mask.sum() / 32**2
    assert 0.05 < area < 0.7
    # The centroid lies near the declared centre (within a quarter of the object size for all shapes).
    ys, xs = np.mgrid[0:32, 0:32] + 0.5
    centroid = np.array([(xs * mask).sum(), (ys * mask).sum()]) / mask.sum()
    assert np.linalg.norm(centroid - np.asarray(sample.center)) < size / 4
    if name in _EXPECTED_AREA_FRACTION:
        np.testing.assert_allclose(mask.sum() / size**2, _EXPECTED_AREA_FRACTION[name], rtol=0.06)
    # Ring and crescent have background at their centre; solid shapes are covered there.
    cx, cy = (int(v) for v in sample.center)
    if name in ("ring", "crescent"):
        assert mask[cy, cx] < 0.3
    elif name in ("circle", "square", "hexagon", "cross", "star"):
        assert mask[cy, cx] == 1.0
    # Inside the object the structure image is one flat colour, and it differs clearly from the background.
    inside, outside = sample.structure[mask == 1.0], sample.structure[mask == 0.0]
    assert np.ptp(inside, axis=0).max() < 1e-6
    luma = np.array([0.299, 0.587, 0.114])
    assert abs(inside[0] @ luma - np.median(outside @ luma)) > 0.2


def test_class_signal_is_learnable_from_structure():
    # 300 training and 100 held-out images; nearest-centroid on the recentred foreground map (colour/position free).
    samples = [render_shape_sample(i, seed=1) for i in range(400)]
    labels = np.array([s.label for s in samples])
    images = np.stack([_pixels(s.image) for s in samples])
    full = _nearest_centroid_accuracy(_recentred(_foreground(images)), labels, 300)
    structure = np.stack([s.structure for s in samples]).astype(np.float64)
    structure_only = _nearest_centroid_accuracy(_recentred(_foreground(structure)), labels, 300)
    lowpass = np.stack([_pixels(_box_lowpass(s.image, 4)) for s in samples])
    lowpass_only = _nearest_centroid_accuracy(_recentred(_foreground(lowpass)), labels, 300)
    assert full > 0.6, full  # chance is 0.1
    assert structure_only > 0.6 and structure_only >= full - 0.05, (structure_only, full)  # detail is not needed
    assert lowpass_only > 0.5, lowpass_only  # even a 4x low-pass keeps most of the class signal


@pytest.mark.parametrize("resolution", [32, 64])
def test_structure_and_detail_are_separable(resolution):
    samples = [render_shape_sample(i, seed=2, resolution=resolution) for i in range(60)]
    images = np.stack([_pixels(s.image) for s in samples])
    structure = np.stack([s.structure for s in samples]).astype(np.float64)
    lowpass = np.stack([_pixels(_box_lowpass(s.image, 4)) for s in samples])
    variance = ((images - images.mean(axis=(1, 2), keepdims=True)) ** 2).sum(axis=(1, 2, 3))

    # Detail (image minus the texture-free render) is small but present in every image, with modest amplitude.
    detail = images - structure
    detail_share = (detail**2).sum(axis=(1, 2, 3)) / variance
    assert detail_share.min() > 0.002 and detail_share.max() < 0.15, (detail_share.min(), detail_share.max())
    assert 0.005 < np.median(detail_share) < 0.06
    assert np.abs(detail).max() < 0.15

    # Detail lives at the pixel scale: a 4x box low-pass removes almost all of it.
    n, h, w, c = detail.shape
    detail_low = detail.reshape(n, h // 4, 4, w // 4, 4, c).mean(axis=(2, 4))
    low_share = (detail_low**2).sum(axis=(1, 2, 3)) * 16 / (detail**2).sum(axis=(1, 2, 3))
    assert low_share.max() < 0.2, low_share.max()

    # The 4x low-pass image carries most of the image energy (the rest is edges plus texture).
    residual_share = ((images - lowpass) ** 2).sum(axis=(1, 2, 3)) / variance
    assert np.median(residual_share) < 0.35 and residual_share.max() < 0.5, residual_share.max()

    # Texture adds fine detail on top of the edges: the image has more 3x3-blur residual than its structure.
    def blur_residual(x: np.ndarray) -> np.ndarray:
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        blurred = sum(padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9
        return ((x - blurred) ** 2).sum(axis=(1, 2, 3))

    assert (blur_residual(images) > blur_residual(structure)).all()


def _file_digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.png")}


def test_export_imagefolder_roundtrip_and_idempotence(tmp_path):
    out = tmp_path / "shapes"
    assert export_imagefolder(out, 25, seed=4, resolution=16) == out
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    expected = sorted(f"train/{SHAPE_CLASSES[i % 10]}/{i:06d}.png" for i in range(25))
    assert files == expected
    digests = _file_digests(out)
    export_imagefolder(out, 25, seed=4, resolution=16)  # same call again: identical files
    assert _file_digests(out) == digests

    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf_cache"))
    train = loaded["train"]
    assert train.num_rows == 25
    assert train.features["label"].names == list(SHAPE_CLASSES)
    assert train.features == make_shapes_dataset(2, seed=4, resolution=16).features
    # Match every loaded image to the generator's image by content and compare labels.
    by_pixels = {}
    for i in range(25):
        image, label = render_shape_image(i, seed=4, resolution=16)
        by_pixels[np.asarray(image).tobytes()] = label
    assert len(by_pixels) == 25
    for row in train:
        assert row["image"].size == (16, 16)
        assert by_pixels[np.asarray(row["image"].convert("RGB")).tobytes()] == row["label"]

    # Exporting fewer images into the same folder would silently keep stale files: refused.
    with pytest.raises(ValueError, match="output_dir"):
        export_imagefolder(out, 10, seed=4, resolution=16)


def test_cli_main(tmp_path, capsys):
    out = tmp_path / "cli"
    path = main(["--output_dir", str(out), "--num_images", "12", "--seed", "2", "--resolution", "32"])
    assert path == out
    assert capsys.readouterr().out.strip() == str(out)
    assert len(list((out / "train").rglob("*.png"))) == 12
    saved = Image.open(out / "train" / SHAPE_CLASSES[1] / "000011.png")
    np.testing.assert_array_equal(np.asarray(saved), np.asarray(render_shape_image(11, seed=2)[0]))
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(out), "--num_images", "0"])
    assert exit_info.value.code == 2
    assert "`num_images` must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: make_shapes_dataset(0), ValueError, "num_images"),
        (lambda: export_imagefolder("unused", -3), ValueError, "num_images"),
        (lambda: make_shapes_dataset(5, resolution=20), ValueError, "resolution"),
        (lambda: make_shapes_dataset(5, resolution=8), ValueError, "resolution"),
        (lambda: render_shape_image(0, resolution=512), ValueError, "resolution"),
        (lambda: render_shape_image(0, seed=-1), ValueError, "seed"),
        (lambda: render_shape_image(-1), ValueError, "index"),
        (lambda: render_shape_image(1.5), TypeError, "index"),
        (lambda: render_shape_image(0, resolution=32.0), TypeError, "resolution"),
        (lambda: make_shapes_dataset(True), TypeError, "num_images"),
        (lambda: make_shapes_dataset(5, num_proc=0), ValueError, "num_proc"),
    ],
)
def test_bad_inputs_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()
