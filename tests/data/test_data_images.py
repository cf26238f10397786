"""Image decoding (dc_ae_hf/data/images.py): `to_rgb` for every PIL mode, `load_image` on good and broken files,
and the dataset wrappers naming the file of an image that cannot be decoded."""

from __future__ import annotations

import importlib.util
import io
import re

import datasets
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image

from dc_ae_hf.data.images import (
    TransformedImageDataset,
    TransformedIterableImageDataset,
    center_crop_arr,
    decode_dataset_image,
    image_transform,
    load_image,
    load_image_dataset,
    to_rgb,
)


def _rgb(image: Image.Image) -> np.ndarray:
    """`to_rgb(image)` as an int array (H, W, 3), checking that it is 8-bit RGB."""
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == image.size
    return np.asarray(out).astype(int)


def _blend(colour: int, alpha: int) -> int:
    """The exact composite of one channel on white."""
    return round(colour * alpha / 255 + 255 * (1 - alpha / 255))


def _save_png(image: Image.Image, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", **kwargs)
    return path


# ---------------------------------------------------------------------------------------------------------------
# 16-bit and 32-bit gray
# ---------------------------------------------------------------------------------------------------------------


def test_16_bit_gray_png_is_scaled_not_clipped_to_white(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    path = _save_png(Image.fromarray(values), tmp_path / "gray16.png")
    with Image.open(path) as opened:
        assert opened.mode in ("I;16", "I")  # depends on the Pillow version; both are handled
        assert np.asarray(opened.convert("RGB"))[0, 2].tolist() == [255, 255, 255]  # the bug: PIL clips to white
    rgb = np.asarray(load_image(path)).astype(int)
    assert rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (rgb == rgb[..., :1]).all()  # gray: the same value in every channel


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2")])
def test_every_16_bit_mode_is_scaled(mode, dtype):
    values = np.array([[0, 32768, 65535]], dtype=dtype)
    image = Image.frombytes(mode, (3, 1), values.tobytes())
    assert np.asarray(image).astype(int).tolist() == [[0, 32768, 65535]]  # the bytes say what we meant
    assert _rgb(image)[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]


def test_32_bit_int_gray_is_read_as_16_bit_and_out_of_range_values_raise():
    image = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32))
    assert image.mode == "I"
    assert _rgb(image)[0, :, 1].tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match=r"mode 'I' .*\[0, 70000\].*16-bit \(0\.\.65535\)"):
        to_rgb(Image.fromarray(np.array([[0, 70000]], dtype=np.int32)))
    with pytest.raises(ValueError, match=r"\[-1, 5\]"):
        to_rgb(Image.fromarray(np.array([[-1, 5]], dtype=np.int32)))


def test_16_bit_gray_png_with_a_transparent_value(tmp_path):
    path = _save_png(
        Image.fromarray(np.array([[1000, 40000]], dtype=np.uint16)), tmp_path / "t.png", transparency=1000
    )
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)  # transparent: white
    assert load_image(path).getpixel((1, 0)) == (156, 156, 156)  # 40000 * 255 / 65535 = 155.7


def test_16_bit_image_through_the_transform_is_mid_gray_not_white():
    image = Image.frombytes("I;16", (8, 8), np.full((8, 8), 32768, dtype="<u2").tobytes())
    pixels = image_transform(8)(image)
    assert pixels.shape == (3, 8, 8)
    assert torch.allclose(pixels, torch.full_like(pixels, 128 / 127.5 - 1), atol=1e-6)  # not 1.0 (white)


# ---------------------------------------------------------------------------------------------------------------
# Transparency: composited on white
# ---------------------------------------------------------------------------------------------------------------


def test_rgba_png_is_composited_on_white(tmp_path):
    pixels = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 100, 255, 128]]], dtype=np.uint8)
    path = _save_png(Image.fromarray(pixels), tmp_path / "rgba.png")
    with Image.open(path) as opened:
        assert opened.mode == "RGBA"
        assert opened.convert("RGB").getpixel((0, 0)) == (10, 20, 30)  # the bug: the hidden colour shows
    rgb = np.asarray(load_image(path)).astype(int)
    assert rgb[0, 0].tolist() == [255, 255, 255]  # alpha 0: white
    assert rgb[0, 1].tolist() == [10, 20, 30]  # alpha 255: its colour
    assert rgb[0, 2].tolist() == [_blend(0, 128), _blend(100, 128), _blend(255, 128)] == [127, 177, 255]


def test_la_png_is_composited_on_white(tmp_path):
    pixels = np.array([[[100, 0], [100, 255], [0, 128]]], dtype=np.uint8)
    path = _save_png(Image.fromarray(pixels), tmp_path / "la.png")
    with Image.open(path) as opened:
        assert opened.mode == "LA"
    rgb = np.asarray(load_image(path)).astype(int)
    assert rgb[0].tolist() == [[255] * 3, [100] * 3, [_blend(0, 128)] * 3]


def _palette_image() -> Image.Image:
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0])  # 0 red, 1 blue, 2 green
    image.putdata([0, 1, 2])
    return image


def test_palette_png_with_a_transparent_index(tmp_path):
    path = _save_png(_palette_image(), tmp_path / "p.png", transparency=0)
    with Image.open(path) as opened:
        assert opened.mode == "P" and opened.info["transparency"] == 0
    assert np.asarray(load_image(path)).tolist() == [[[255, 255, 255], [0, 0, 255], [0, 255, 0]]]


def test_palette_without_transparency_and_with_an_alpha_palette():
    assert _rgb(_palette_image()).tolist() == [[[255, 0, 0], [0, 0, 255], [0, 255, 0]]]
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 0, 255, 128], "RGBA")  # red fully transparent, blue half
    image.putdata([0, 1])
    assert _rgb(image).tolist() == [[[255, 255, 255], [127, 127, 255]]]


def test_pa_la_premultiplied_and_rgba_in_memory():
    pa = Image.new("PA", (2, 1))
    pa.putpalette([0, 0, 255, 255, 0, 0])  # 0 blue, 1 red
    pa.putdata([(0, 0), (1, 255)])
    assert _rgb(pa).tolist() == [[[255, 255, 255], [255, 0, 0]]]
    assert _rgb(Image.new("La", (1, 1), (50, 0))).tolist() == [[[255, 255, 255]]]
    assert _rgb(Image.new("RGBa", (1, 1), (10, 20, 30, 255))).tolist() == [[[10, 20, 30]]]
    assert _rgb(Image.new("RGBA", (1, 1), (0, 0, 0, 0))).tolist() == [[[255, 255, 255]]]


def test_rgb_png_with_a_transparent_colour(tmp_path):
    image = Image.fromarray(np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8))
    path = _save_png(image, tmp_path / "trns.png", transparency=(1, 2, 3))
    assert np.asarray(load_image(path)).tolist() == [[[255, 255, 255], [4, 5, 6]]]


# ---------------------------------------------------------------------------------------------------------------
# Other modes
# ---------------------------------------------------------------------------------------------------------------


def test_rgb_is_returned_as_is_and_gray_and_bilevel_are_repeated():
    image = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(image) is image
    assert _rgb(Image.new("L", (1, 1), 77)).tolist() == [[[77, 77, 77]]]
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    assert _rgb(bilevel).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_cmyk():
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putdata([(0, 255, 255, 0), (0, 0, 0, 0), (0, 0, 0, 255)])
    assert _rgb(cmyk).tolist() == [[[255, 0, 0], [255, 255, 255], [0, 0, 0]]]


@pytest.mark.parametrize("mode, tolerance", [("YCbCr", 2), ("HSV", 3), ("LAB", 10), ("RGBX", 0)])  # 8-bit quantisation
def test_colour_spaces_round_trip(mode, tolerance):
    colours = np.array([[[255, 255, 255], [255, 0, 0], [0, 0, 0], [10, 200, 30], [90, 90, 200]]], dtype=np.uint8)
    image = Image.fromarray(colours)
    if mode == "LAB":
        from PIL import ImageCms

        srgb, lab = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
        converted = ImageCms.applyTransform(image, ImageCms.buildTransform(srgb, lab, "RGB", "LAB"))
    else:
        converted = image.convert(mode)
    assert converted.mode == mode
    assert np.abs(_rgb(converted) - colours.astype(int)).max() <= tolerance


def test_float_gray_in_0_1_and_in_0_255():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    assert _rgb(unit)[0, :, 0].tolist() == [0, 128, 255]
    byte_scale = Image.fromarray(np.array([[0.0, 127.6, 200.0, 255.0]], dtype=np.float32))
    assert _rgb(byte_scale)[0, :, 2].tolist() == [0, 128, 200, 255]
    assert _rgb(Image.new("L", (1, 1), 90).convert("F")).tolist() == [[[90, 90, 90]]]  # PIL's own F scale


OUT_OF_RANGE = [([0.0, 300.0], r"\[0, 300\]"), ([-0.5, 1.0], r"\[-0.5, 1\]"), ([0.0, np.nan], "NaN")]


@pytest.mark.parametrize("values, message", OUT_OF_RANGE)
def test_float_gray_out_of_range_raises(values, message):
    with pytest.raises(ValueError, match=message):
        to_rgb(Image.fromarray(np.array([values], dtype=np.float32)))


def test_to_rgb_rejects_a_non_image():
    with pytest.raises(TypeError, match="expects a PIL image, got ndarray"):
        to_rgb(np.zeros((2, 2, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# load_image: files
# ---------------------------------------------------------------------------------------------------------------


def _truncated_png(path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def test_load_image_decodes_fully_and_accepts_file_objects(tmp_path):
    path = _save_png(Image.new("RGB", (3, 2), (9, 8, 7)), tmp_path / "good.png")
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (3, 2) and image.getpixel((2, 1)) == (9, 8, 7)
    assert load_image(str(path)).getpixel((0, 0)) == (9, 8, 7)
    with open(path, "rb") as file:
        assert load_image(file).getpixel((0, 0)) == (9, 8, 7)
    assert load_image(io.BytesIO(path.read_bytes())).size == (3, 2)


def test_load_image_applies_the_exif_orientation(tmp_path):
    image = Image.new("RGB", (4, 2), (1, 2, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    assert load_image(path).size == (2, 4)


def test_truncated_random_and_missing_files_name_the_file(tmp_path):
    truncated = _truncated_png(tmp_path / "truncated.png")
    with pytest.raises(ValueError, match=re.escape(repr(str(truncated))) + r" could not be decoded"):
        load_image(truncated)
    noise = tmp_path / "noise.png"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=re.escape(str(noise)) + r".* could not be decoded") as raised:
        load_image(noise)
    assert raised.value.__cause__ is not None  # PIL's own error is kept
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "missing.png")) + r".*does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="my upload could not be decoded"):
        load_image(io.BytesIO(b"not an image"), name="my upload")
    with pytest.raises(TypeError, match="a path or a binary file object, got int"):
        load_image(3)


# ---------------------------------------------------------------------------------------------------------------
# Datasets: same tensors for good images, the file named for a bad one
# ---------------------------------------------------------------------------------------------------------------


def _imagefolder(root):
    """Five PNGs in two class folders: RGB, RGBA, 16-bit gray and L images of different sizes."""
    rng = np.random.default_rng(2)
    images = {
        "cat/0.png": Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)),
        "cat/1.png": Image.fromarray(rng.integers(0, 256, (24, 20, 4), dtype=np.uint8)),
        "cat/2.png": Image.fromarray(rng.integers(0, 65536, (18, 18), dtype=np.uint16)),
        "dog/0.png": Image.fromarray(rng.integers(0, 256, (16, 30), dtype=np.uint8)),
        "dog/1.png": Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
    }
    return [_save_png(image, root / name) for name, image in images.items()]


def _sample_generator(seed: int, index: int) -> torch.Generator:
    """The generator TransformedImageDataset seeds for (seed, epoch 0, index)."""
    state = np.random.SeedSequence([seed, 0, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def _paths(wrapped: TransformedImageDataset) -> list[str]:
    return [wrapped.dataset[i][wrapped.image_column]["path"] for i in range(len(wrapped))]


@pytest.mark.parametrize("random", [False, True])
def test_imagefolder_dataset_yields_the_same_tensors_for_good_files(tmp_path, random):
    files = _imagefolder(tmp_path / "data")
    dataset = load_image_dataset(train_data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    transform = image_transform(16, random_crop=random, random_flip=random)
    wrapped = TransformedImageDataset(dataset, transform, seed=3)
    assert len(wrapped) == 5 and sorted(_paths(wrapped)) == sorted(str(f) for f in files)
    for index, path in enumerate(_paths(wrapped)):
        generator = _sample_generator(3, index) if random else None
        expected = transform(to_rgb(Image.open(path)), generator=generator)
        assert torch.equal(wrapped[index]["pixel_values"], expected), path
        if Image.open(path).mode in ("RGB", "L"):  # also unchanged from the former datasets decoding + convert("RGB")
            generator = _sample_generator(3, index) if random else None
            before = transform(dataset[index]["image"].convert("RGB"), generator=generator)
            assert torch.equal(wrapped[index]["pixel_values"], before), path


def test_streaming_imagefolder_matches_the_map_style_dataset(tmp_path):
    _imagefolder(tmp_path / "data")
    kwargs = dict(train_data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    mapped = TransformedImageDataset(load_image_dataset(**kwargs), image_transform(16))
    streamed = TransformedIterableImageDataset(load_image_dataset(**kwargs, streaming=True), image_transform(16))
    for index, example in enumerate(streamed):
        assert torch.equal(example["pixel_values"], mapped[index]["pixel_values"])
    assert index == 4


@pytest.mark.parametrize("breakage", ["random bytes", "truncated"])
def test_a_corrupt_file_in_an_imagefolder_is_named(tmp_path, breakage):
    _imagefolder(tmp_path / "data")
    bad = tmp_path / "data" / "dog" / "bad.png"
    if breakage == "truncated":
        _truncated_png(bad)
    else:
        bad.write_bytes(np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8).tobytes())
    kwargs = dict(train_data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    wrapped = TransformedImageDataset(load_image_dataset(**kwargs), image_transform(16))
    bad_index = _paths(wrapped).index(str(bad))
    for index in range(len(wrapped)):
        if index != bad_index:
            assert wrapped[index]["pixel_values"].shape == (3, 16, 16)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + rf".*row {bad_index}\b.*could not be decoded"):
        wrapped[bad_index]
    streamed = TransformedIterableImageDataset(load_image_dataset(**kwargs, streaming=True), image_transform(16))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + r".*could not be decoded"):
        list(streamed)


def test_an_image_without_a_path_is_named_by_its_row():
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(buffer, "PNG")
    features = datasets.Features({"image": datasets.Image()})
    dataset = datasets.Dataset.from_dict(
        {"image": [{"bytes": buffer.getvalue(), "path": None}, {"bytes": b"garbage", "path": None}]}, features=features
    )
    wrapped = TransformedImageDataset(dataset, image_transform(4))
    assert torch.equal(wrapped[0]["pixel_values"], torch.ones(3, 4, 4))  # transparent: white, not black
    with pytest.raises(
        ValueError, match=r"row 1 of the dataset's 'image' column \(no file path\) could not be decoded"
    ):
        wrapped[1]
    with pytest.raises(TypeError, match="expected an image at row 7"):
        decode_dataset_image(42, "row 7")


def test_reference_statistics_dataset_names_a_corrupt_file(tmp_path):
    spec = importlib.util.spec_from_file_location("mrs", REPO_ROOT / "training" / "make_reference_statistics.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _imagefolder(tmp_path / "data")
    bad = tmp_path / "data" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    dataset = load_image_dataset(train_data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    images = script.CenterCroppedUInt8(dataset, "image", 16)
    paths = [images.dataset[i]["image"]["path"] for i in range(len(images))]
    sixteen_bit = tmp_path / "data" / "cat" / "2.png"
    expected = torch.from_numpy(center_crop_arr(load_image(sixteen_bit), 16).copy()).permute(2, 0, 1)
    assert torch.equal(images[paths.index(str(sixteen_bit))], expected)
    assert expected.dtype == torch.uint8 and expected.float().mean() < 200  # scaled, not clipped to white
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        images[paths.index(str(bad))]


@pytest.mark.parametrize("class_folders", [["circle"], []])
def test_an_imagefolder_of_one_class_says_why_it_has_no_labels(tmp_path, class_folders):
    from dc_ae_hf.data.images import load_labeled_image_dataset

    root = tmp_path / "data"
    for folder in class_folders or [""]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(root / folder / f"{i}.png")
    found = (
        "one class folder \\(circle/\\)" if class_folders else "no class folders \\(the images lie in it directly\\)"
    )
    with pytest.raises(ValueError, match=f"--label_column='label' is not a column .*has {found}: the `datasets` "):
        load_labeled_image_dataset(train_data_dir=root, cache_dir=tmp_path / "cache")
    if class_folders:  # a second class folder: labelled
        (root / "star").mkdir()
        Image.new("RGB", (8, 8)).save(root / "star" / "0.png")
        _, _, id2label, num_classes = load_labeled_image_dataset(train_data_dir=root, cache_dir=tmp_path / "cache2")
        assert id2label == {"0": "circle", "1": "star"} and num_classes == 2


@pytest.mark.parametrize("content", ["nothing", "empty class folders", "other files"])
def test_an_imagefolder_without_images_is_named_with_what_it_should_hold(tmp_path, content):
    from dc_ae_hf.data.images import load_image_dataset

    root = tmp_path / "data"
    root.mkdir()
    if content != "nothing":
        (root / "circle").mkdir()
    if content == "other files":
        (root / "circle" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"--train_data_dir='.*data' holds no image files: an imagefolder is <dir>/"):
        load_image_dataset(train_data_dir=root, cache_dir=tmp_path / "cache")
