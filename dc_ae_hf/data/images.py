"""Image datasets for training and evaluating autoencoders (and, later, diffusion models and the latent cache).

- :func:`to_rgb`: any PIL image -> 8-bit RGB (16-bit and float gray scaled, alpha composited on white);
  :func:`load_image`: an image file -> fully decoded 8-bit RGB, with an error naming the file when it cannot be read;
  :func:`undecoded_image_column` / :func:`decode_dataset_image`: the same for the rows of a ``datasets`` dataset.
- :func:`load_image_dataset`: a Hub dataset (``--dataset_name``, optionally streaming) or an imagefolder
  (``--train_data_dir``) through ``datasets.load_dataset``.
- :func:`image_transform`: PIL image -> float tensor (3, R, R) in [-1, 1], with the ADM center crop
  (:func:`center_crop_arr`, the official diffusion data pipeline's ``DMCrop``), a random crop, and a random flip.
- :class:`TransformedImageDataset` / :class:`TransformedIterableImageDataset`: apply the transform lazily, with the
  randomness of each sample a pure function of ``(seed, epoch, index)``, so a resumed run, any number of dataloader
  workers and any number of processes see exactly the same crops and flips as an uninterrupted run.
- :func:`load_labeled_image_dataset` / :class:`LabeledImageDataset`: class-labelled images (caching latents,
  encoding on the fly for diffusion training), ``{"pixel_values": (3, R, R), "labels": int}``.
- :func:`collate_images`: batches ``{"pixel_values": (B, 3, R, R)}``.
- :func:`load_train_and_validation_datasets`: all of the above for a training script, with held-out validation images.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import default_collate

from dc_ae_hf.checks import check_int
from dc_ae_hf.extras import missing_extra

try:
    import datasets
    from datasets.utils.file_utils import is_local_path, xopen
except ImportError as error:
    raise missing_extra(error, "dc_ae_hf.data (image datasets)") from error

__all__ = [
    "ImageTransform",
    "LabeledImageDataset",
    "TransformedImageDataset",
    "TransformedIterableImageDataset",
    "center_crop_arr",
    "collate_images",
    "decode_dataset_image",
    "find_image_column",
    "holdout_split",
    "image_transform",
    "is_upsampled",
    "load_image",
    "load_image_dataset",
    "load_labeled_image_dataset",
    "load_train_and_validation_datasets",
    "resize_shorter_side",
    "to_rgb",
    "undecoded_image_column",
]


# ---------------------------------------------------------------------------------------------------------------
# Decoding: every PIL mode to 8-bit RGB
# ---------------------------------------------------------------------------------------------------------------

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_PIL_CONVERTED_MODES = ("1", "L", "P", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")  # PIL's own convert("RGB") is right
_SUPPORTED_MODES = ("RGB", *_PIL_CONVERTED_MODES, *_ALPHA_MODES, *_SIXTEEN_BIT_MODES, "I", "F")


def _composite_on_white(colour: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    """An RGB image from uint8 colour (H, W, 3) and alpha (H, W), blended on white: ``c * a + 255 * (1 - a)``."""
    if alpha is not None:
        colour, alpha = colour.astype(np.uint32), alpha.astype(np.uint32)[..., None]
        colour = (colour * alpha + 255 * (255 - alpha) + 127) // 255  # rounded to the nearest level
    return Image.fromarray(np.ascontiguousarray(colour, dtype=np.uint8))


def _has_alpha(image: Image.Image) -> bool:
    """An alpha channel, a palette with alpha, or a transparent colour/index (``image.info["transparency"]``)."""
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def _integer_gray_levels(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """`I;16*` / `I` gray values 0..65535 -> uint8 levels (rounded ``v * 255 / 65535``), and the alpha of a
    transparent gray value (PNG ``tRNS``) if the image has one."""
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(
            f"a mode {image.mode!r} image with values in [{values.min()}, {values.max()}] cannot be converted to "
            "RGB: to_rgb reads integer gray images as 16-bit (0..65535); rescale it to 0..65535 (or to 8-bit "
            "mode 'L') first"
        )
    levels = ((values * 255 + 32767) // 65535).astype(np.uint8)
    transparent = image.info.get("transparency")
    alpha = None if transparent is None else np.where(values == transparent, 0, 255).astype(np.uint8)
    return levels, alpha


def _float_gray_levels(image: Image.Image) -> np.ndarray:
    """`F` values -> uint8 levels: [0, 1] scaled by 255 when every value lies in [0, 1], else [0, 255] as is."""
    values = np.asarray(image).astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("a mode 'F' image with NaN or infinite values cannot be converted to RGB")
    low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise ValueError(
            f"a mode 'F' image with values in [{low:g}, {high:g}] cannot be converted to RGB: to_rgb reads float "
            "images in [0, 1] or [0, 255]; rescale it first"
        )
    scale = 255.0 if high <= 1 else 1.0
    return np.rint(values * scale).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as an 8-bit RGB image, with the values of its mode kept (never clipped to white or black).

    Conversion rules, by mode:

    - ``RGB``: returned as is (the same object).
    - ``1``, ``L``, ``P``, ``RGBX``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: PIL's own ``convert("RGB")``.
    - Transparency: ``RGBA``, ``LA``, ``PA``, ``La``, ``RGBa``, a ``P`` image with an alpha palette, and any image
      with a transparent colour or palette index (``image.info["transparency"]``, e.g. a PNG ``tRNS`` chunk or a
      GIF) are composited on a WHITE background: ``c * a + 255 * (1 - a)`` per channel, rounded. A fully
      transparent pixel is white, an opaque one keeps its colour.
    - ``I;16``, ``I;16B``, ``I;16L``, ``I;16N`` (16-bit gray, e.g. a 16-bit grayscale PNG) and ``I`` (32-bit int;
      Pillow reports 16-bit PNGs as ``I;16`` or ``I`` depending on its version): the values 0..65535 are scaled to
      0..255 (rounded ``v * 255 / 65535``) and repeated in the three channels. An ``I`` image with a value below 0
      or above 65535 has no known range and raises ValueError (scale it yourself); note that an ``I`` image that
      holds 8-bit values (0..255) therefore comes out nearly black.
    - ``F`` (32-bit float gray): if every value lies in [0, 1] the image is read as [0, 1] (scaled by 255),
      otherwise as PIL's own [0, 255] scale (what ``convert("F")`` of an 8-bit image gives); rounded to the
      nearest level. Values below 0 or above 255, NaN or infinity raise ValueError. (A [0, 255] image whose
      values are all at most 1, i.e. black to within one level, is read as [0, 1].)

    Raises TypeError for a non-image and ValueError for another mode or out-of-range values (see above).
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"to_rgb expects a PIL image, got {type(image).__name__}")
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        levels, alpha = _integer_gray_levels(image)
        return _composite_on_white(np.repeat(levels[..., None], 3, axis=-1), alpha)
    if mode == "F":
        return _composite_on_white(np.repeat(_float_gray_levels(image)[..., None], 3, axis=-1), None)
    if mode not in _SUPPORTED_MODES:
        raise ValueError(f"image mode {mode!r} cannot be converted to RGB; supported modes: {list(_SUPPORTED_MODES)}")
    if _has_alpha(image):
        if mode == "La":  # PIL converts premultiplied La only to LA
            image = image.convert("LA")
        rgba = np.asarray(image.convert("RGBA"))
        return _composite_on_white(rgba[..., :3], rgba[..., 3])
    return image if mode == "RGB" else image.convert("RGB")


def _describe(path_or_file: str | os.PathLike | io.IOBase) -> str:
    if isinstance(path_or_file, (str, os.PathLike)):
        return os.fspath(path_or_file)
    return str(getattr(path_or_file, "name", None) or f"<{type(path_or_file).__name__} object>")


def load_image(path_or_file: str | os.PathLike | io.IOBase, *, name: str | None = None) -> Image.Image:
    """Open an image file, decode it fully and return it as 8-bit RGB (:func:`to_rgb`'s conversion rules).

    `path_or_file` is a path or a binary file object (e.g. ``io.BytesIO``); `name` is how error messages name it,
    verbatim (default: the path, or the file object's ``name``, quoted). The whole file is decoded here
    (``image.load()``), so a truncated file fails now and not later in a transform. An EXIF orientation tag is
    applied (``ImageOps.exif_transpose``), as ``datasets.Image`` does. The first frame of an animation is used.

    Raises ValueError naming the file when it does not exist, cannot be decoded (truncated, corrupt, not an
    image), or has a mode or values :func:`to_rgb` does not convert; the original error is chained
    (``__cause__``). TypeError when `path_or_file` is neither a path nor a file object.
    """
    if not isinstance(path_or_file, (str, os.PathLike)) and not hasattr(path_or_file, "read"):
        raise TypeError(
            f"load_image expects a path or a binary file object, got {type(path_or_file).__name__}: {path_or_file!r}"
        )
    label = name if name is not None else repr(_describe(path_or_file))
    try:
        with Image.open(path_or_file) as image:
            image.load()
            if image.getexif().get(Image.ExifTags.Base.Orientation) is not None:
                image = ImageOps.exif_transpose(image)
    except FileNotFoundError as error:
        raise ValueError(f"the image {label} could not be decoded: the file does not exist") from error
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, EOFError, zlib.error, ...
        raise ValueError(
            f"the image {label} could not be decoded (truncated, corrupt or not an image?): "
            f"{type(error).__name__}: {error}"
        ) from error
    try:
        return to_rgb(image)
    except ValueError as error:
        raise ValueError(f"the image {label} could not be converted to RGB: {error}") from error


def undecoded_image_column(
    dataset: datasets.Dataset | datasets.IterableDataset, column: str
) -> datasets.Dataset | datasets.IterableDataset:
    """`dataset` with `column` cast to ``datasets.Image(decode=False)`` (rows then hold ``{"path", "bytes"}``) when
    it is a decoding ``datasets.Image`` feature, so that :func:`decode_dataset_image` decodes it; else as is."""
    features = dataset.features
    if features is not None and isinstance(features.get(column), datasets.Image) and features[column].decode:
        return dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def decode_dataset_image(value, where: str) -> Image.Image:
    """An image value of a dataset row as 8-bit RGB, through :func:`load_image` / :func:`to_rgb`.

    `value` is an undecoded ``datasets.Image`` value ``{"path", "bytes"}`` (the bytes are decoded when present, else
    the file at the path, local or remote), a path, or an already decoded PIL image. `where` (e.g. ``"row 3 of the
    dataset's 'image' column"``) goes into error messages, after the path when there is one. Raises ValueError
    naming them; TypeError for any other value.
    """
    if isinstance(value, Image.Image):
        try:
            return to_rgb(value)
        except ValueError as error:
            raise ValueError(f"the image at {where} could not be converted to RGB: {error}") from error
    if isinstance(value, (str, os.PathLike)):
        value = {"path": os.fspath(value), "bytes": None}
    if not isinstance(value, dict) or not ({"path", "bytes"} & set(value)):
        raise TypeError(
            f"expected an image at {where} (a PIL image, a path or a datasets.Image value), got {value!r:.200}"
        )
    path, data = value.get("path"), value.get("bytes")
    name = f"{path!r} ({where})" if path else f"at {where} (no file path)"
    if data is None:
        if not path:
            raise ValueError(f"the image at {where} has neither a file path nor bytes")
        if is_local_path(path):
            return load_image(path, name=name)
        try:  # a remote file (streaming from the Hub), read as datasets.Image reads it
            with xopen(path, "rb") as file:
                data = file.read()
        except Exception as error:
            raise ValueError(f"the image {name} could not be read: {type(error).__name__}: {error}") from error
    return load_image(io.BytesIO(data), name=name)


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def load_image_dataset(
    dataset_name: str | None = None,
    train_data_dir: str | os.PathLike | None = None,
    split: str = "train",
    streaming: bool = False,
    cache_dir: str | os.PathLike | None = None,
    dataset_config_name: str | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load one split of an image dataset: a Hub dataset (`dataset_name`) or a local imagefolder (`train_data_dir`).

    An imagefolder is a tree of images (``<dir>/<split>/<class>/<file>.png``, or ``<dir>/<class>/<file>.png`` for a
    single "train" split); class folders become a ``label`` column. Exactly one of the two sources must be given.
    """
    if (dataset_name is None) == (train_data_dir is None):
        raise ValueError(
            f"give exactly one of --dataset_name (a Hub dataset) and --train_data_dir (an imagefolder), got "
            f"dataset_name={dataset_name!r} and train_data_dir={train_data_dir!r}"
        )
    if train_data_dir is not None:
        path = Path(train_data_dir)
        if not path.is_dir():
            raise ValueError(f"--train_data_dir={str(train_data_dir)!r} is not a directory (expected an imagefolder)")
        readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
        if next((f for f in path.rglob("*") if f.suffix.lower() in readable), None) is None:  # stops at the first
            raise ValueError(
                f"--train_data_dir={str(train_data_dir)!r} holds no image files: an imagefolder is "
                "<dir>/<class>/<image> (or <dir>/<split>/<class>/<image>) with images PIL reads (.png, .jpg, ...)"
            )
        name, kwargs = "imagefolder", {"data_dir": str(path)}
    else:
        name, kwargs = dataset_name, {"name": dataset_config_name}
    try:
        return datasets.load_dataset(
            name, split=split, streaming=streaming, cache_dir=None if cache_dir is None else str(cache_dir), **kwargs
        )
    except ValueError as error:
        if "split" in str(error).lower():
            source = f"--train_data_dir={str(train_data_dir)!r}" if train_data_dir else f"--dataset_name={name!r}"
            raise ValueError(f"split={split!r} is not available in {source}: {error}") from error
        raise


def find_image_column(dataset: datasets.Dataset | datasets.IterableDataset, image_column: str | None = None) -> str:
    """The name of the image column: `image_column` if given (checked), else the first `datasets.Image` feature."""
    features = dataset.features
    if features is None:  # a streaming dataset whose schema is only known after reading
        features = next(iter(dataset.take(1))).keys()
        columns = list(features)
    else:
        columns = list(features)
    if image_column is not None:
        if image_column not in columns:
            raise ValueError(f"--image_column={image_column!r} is not a column of the dataset; columns: {columns}")
        return image_column
    if isinstance(features, datasets.Features):
        for column, feature in features.items():
            if isinstance(feature, datasets.Image):
                return column
    for column in ("image", "img", "pixel_values"):
        if column in columns:
            return column
    raise ValueError(f"the dataset has no image column (a datasets.Image feature); columns: {columns}")


def holdout_split(
    dataset: datasets.Dataset | datasets.IterableDataset, num_holdout: int, seed: int = 0
) -> tuple[datasets.Dataset | datasets.IterableDataset, datasets.Dataset | datasets.IterableDataset]:
    """Split off `num_holdout` images for validation: returns ``(train, holdout)``, disjoint.

    Map-style datasets: a seeded random subset (``train_test_split``), so the held-out images cover all classes of
    an imagefolder (whose files are sorted by class). Streaming datasets: the first `num_holdout` examples.
    """
    check_int("num_holdout", num_holdout, minimum=1)
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.skip(num_holdout), dataset.take(num_holdout)
    if num_holdout >= len(dataset):
        raise ValueError(
            f"cannot hold out {num_holdout} validation images from a dataset of {len(dataset)}: lower "
            f"--num_validation_images below {len(dataset)} or pass a --validation_split"
        )
    parts = dataset.train_test_split(test_size=num_holdout, shuffle=True, seed=seed)
    return parts["train"], parts["test"]


def load_train_and_validation_datasets(
    dataset_name: str | None = None,
    train_data_dir: str | os.PathLike | None = None,
    split: str = "train",
    validation_split: str | None = None,
    num_validation_images: int = 0,
    resolution: int = 256,
    random_crop: bool = False,
    random_flip: bool = False,
    image_column: str | None = None,
    streaming: bool = False,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
    """The training set (random crop/flip as asked, else ADM center crop) and `num_validation_images` validation
    images (ADM center crop), both yielding ``{"pixel_values": (3, R, R)}``.

    The validation images come from `validation_split` when given, otherwise they are held out of the training
    split (:func:`holdout_split`). `num_validation_images=0` returns no validation set.
    """
    sources = dict(dataset_name=dataset_name, train_data_dir=train_data_dir, cache_dir=cache_dir, streaming=streaming)
    train = load_image_dataset(**sources, split=split)
    validation = None
    if num_validation_images:
        if validation_split:
            validation = load_image_dataset(**sources, split=validation_split).take(num_validation_images)
        else:
            train, validation = holdout_split(train, num_validation_images, seed=seed)
    wrap = TransformedIterableImageDataset if streaming else TransformedImageDataset
    train_transform = image_transform(resolution, random_crop=random_crop, random_flip=random_flip)
    train = wrap(train, train_transform, image_column=image_column, seed=seed)
    if validation is not None:
        validation = wrap(validation, image_transform(resolution), image_column=image_column, seed=seed)
    return train, validation


# ---------------------------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------------------------


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Resize so that the shorter side is `size`, ADM style: halve with a box filter while the shorter side is at
    least 2 * size (cheap anti-aliasing), then one bicubic resize (guided-diffusion ``center_crop_arr``)."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    return image.resize(tuple(round(side * scale) for side in image.size), resample=Image.BICUBIC)


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """ADM center crop (guided-diffusion ``image_datasets.py``; official DC-Gen ``DMCrop``): shorter side resized to
    `image_size` by :func:`resize_shorter_side`, then the central ``image_size x image_size`` square.

    Returns a uint8 array (image_size, image_size, channels).
    """
    array = np.asarray(resize_shorter_side(pil_image, image_size))
    top = (array.shape[0] - image_size) // 2
    left = (array.shape[1] - image_size) // 2
    return array[top : top + image_size, left : left + image_size]


def is_upsampled(image: Image.Image, resolution: int) -> bool:
    """Whether the transform to `resolution` px enlarges `image` (its shorter side is smaller): the ADM crop keeps
    such images, upsampled (as the official DMCrop does); the scripts count and report them."""
    return min(image.size) < resolution


class ImageTransform:
    """PIL image -> float tensor (3, resolution, resolution) in [-1, 1] (``x / 127.5 - 1``).

    Args:
        resolution: output side in pixels.
        random_crop: resize the shorter side to `resolution` (ADM style) and crop a random square.
        center_crop: the ADM center crop (:func:`center_crop_arr`). At most one of the two crops may be set; with
            neither, the whole image is resized to ``resolution x resolution`` (aspect ratio not kept). Default
            (None): center crop unless `random_crop`.
        random_flip: flip horizontally with probability 0.5.

    `__call__(image, generator=None)` converts the image with :func:`to_rgb` (e.g. 16-bit gray scaled, alpha on
    white), then draws the crop offset and the flip from `generator` (the global torch RNG when None);
    :class:`TransformedImageDataset` passes one seeded per sample.
    """

    def __init__(
        self, resolution: int, random_crop: bool = False, center_crop: bool | None = None, random_flip: bool = False
    ) -> None:
        check_int("--resolution", resolution, minimum=1)
        if center_crop is None:
            center_crop = not random_crop
        if random_crop and center_crop:
            raise ValueError("--random_crop and --center_crop are mutually exclusive; choose one crop")
        self.resolution = resolution
        self.random_crop = bool(random_crop)
        self.center_crop = bool(center_crop)
        self.random_flip = bool(random_flip)

    @property
    def is_random(self) -> bool:
        return self.random_crop or self.random_flip

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        image = to_rgb(image)
        size = self.resolution
        if self.center_crop:
            array = center_crop_arr(image, size)
        elif self.random_crop:
            array = np.asarray(resize_shorter_side(image, size))
            top = int(torch.randint(array.shape[0] - size + 1, (1,), generator=generator))
            left = int(torch.randint(array.shape[1] - size + 1, (1,), generator=generator))
            array = array[top : top + size, left : left + size]
        else:
            array = np.asarray(image.resize((size, size), resample=Image.BICUBIC))
        if self.random_flip and bool(torch.rand((), generator=generator) < 0.5):
            array = array[:, ::-1]
        pixels = torch.from_numpy(np.array(array)).permute(2, 0, 1)  # (3, R, R) uint8 (a writable copy)
        return pixels.float() / 127.5 - 1.0

    def __repr__(self) -> str:
        return (
            f"ImageTransform(resolution={self.resolution}, random_crop={self.random_crop}, "
            f"center_crop={self.center_crop}, random_flip={self.random_flip})"
        )


def image_transform(
    resolution: int, random_crop: bool = False, center_crop: bool | None = None, random_flip: bool = False
) -> ImageTransform:
    """The training/evaluation transform; see :class:`ImageTransform`."""
    return ImageTransform(resolution, random_crop=random_crop, center_crop=center_crop, random_flip=random_flip)


def _sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator whose stream depends only on (seed, epoch, index) (numpy's SeedSequence hashes the triple)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


class TransformedImageDataset(torch.utils.data.Dataset):
    """A map-style dataset yielding ``{"pixel_values": transform(image), "upsampled": bool tensor}`` (whether the
    image was smaller than the resolution, :func:`is_upsampled`); randomness from (seed, epoch, index).

    Call :meth:`set_epoch` at the start of each epoch (the training scripts do) to get new crops every epoch.
    The images are decoded here, not by ``datasets`` (the column is read as ``datasets.Image(decode=False)``), with
    :func:`load_image`: an image that cannot be decoded raises ValueError naming its file (or its row when it has
    no file path). ``self.dataset`` is that undecoded view of `dataset`.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        transform: ImageTransform,
        image_column: str | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(dataset, datasets.IterableDataset):
            raise TypeError("use TransformedIterableImageDataset for a streaming dataset")
        self.transform = transform
        self.image_column = find_image_column(dataset, image_column)
        self.dataset = undecoded_image_column(dataset, self.image_column)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        where = f"row {int(index)} of the dataset's {self.image_column!r} column"
        image = decode_dataset_image(self.dataset[int(index)][self.image_column], where)
        generator = _sample_generator(self.seed, self.epoch, int(index)) if self.transform.is_random else None
        upsampled = torch.tensor(is_upsampled(image, self.transform.resolution))  # counted by the trainers
        return {"pixel_values": self.transform(image, generator=generator), "upsampled": upsampled}


class TransformedIterableImageDataset(torch.utils.data.IterableDataset):
    """The streaming counterpart of :class:`TransformedImageDataset`.

    The index of a sample is its position in this worker's stream (with the worker id mixed into the seed);
    :meth:`set_epoch` is forwarded to the wrapped dataset, which reshuffles its shards and buffer for the epoch.
    Images are decoded as in :class:`TransformedImageDataset` when the stream's features are known (a streaming
    dataset whose schema is unknown yields images decoded by ``datasets``, converted with :func:`to_rgb`).
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        transform: ImageTransform,
        image_column: str | None = None,
        seed: int = 0,
    ) -> None:
        self.transform = transform
        self.image_column = find_image_column(dataset, image_column)
        self.dataset = undecoded_image_column(dataset, self.image_column)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        worker_id = 0 if worker is None else worker.id
        for position, example in enumerate(self.dataset):
            generator = None
            if self.transform.is_random:
                generator = _sample_generator(self.seed, self.epoch, position * 1024 + worker_id)
            where = f"position {position} of the stream's {self.image_column!r} column (worker {worker_id})"
            image = decode_dataset_image(example[self.image_column], where)
            upsampled = torch.tensor(is_upsampled(image, self.transform.resolution))
            yield {"pixel_values": self.transform(image, generator=generator), "upsampled": upsampled}


def load_labeled_image_dataset(
    dataset_name: str | None = None,
    train_data_dir: str | os.PathLike | None = None,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    dataset_config_name: str | None = None,
    image_column: str | None = None,
    label_column: str = "label",
    max_images: int | None = None,
) -> tuple[datasets.Dataset, str, dict[str, str] | None, int]:
    """A class-labelled image dataset for class-conditional training (map-style, not streaming).

    Returns ``(dataset, image_column, id2label, num_classes)``: ``id2label`` maps ``"<id>"`` to the class names of a
    ``ClassLabel`` column (an imagefolder's class folders), None for plain integer labels (then ``num_classes`` is
    the largest label + 1). ``max_images`` keeps the first N rows. ValueError for an empty dataset or a missing or
    non-integer label column.
    """
    source = train_data_dir if train_data_dir is not None else dataset_name
    try:
        dataset = load_image_dataset(
            dataset_name, train_data_dir, split, cache_dir=cache_dir, dataset_config_name=dataset_config_name
        )
    except datasets.data_files.EmptyDatasetError as error:
        raise ValueError(f"the dataset {str(source)!r} has no images ({error})") from error
    if max_images is not None:
        max_images = check_int("--max_images", max_images, minimum=1)
        dataset = dataset.select(range(min(max_images, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"the dataset {str(source)!r} (split {split!r}) has no images")
    image_column = find_image_column(dataset, image_column)
    if label_column not in dataset.features:
        raise ValueError(
            f"--label_column={label_column!r} is not a column of the dataset {str(source)!r} (columns: "
            f"{list(dataset.features)}); class-conditional training needs labels"
            + ("" if train_data_dir is None else _class_folders_note(train_data_dir))
        )
    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return dataset, image_column, {str(i): name for i, name in enumerate(feature.names)}, feature.num_classes
    labels = dataset[label_column]
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in labels):
        raise ValueError(f"--label_column={label_column!r} must hold class ids (ints >= 0) or be a ClassLabel")
    return dataset, image_column, None, max(labels) + 1


def _class_folders_note(train_data_dir: str | os.PathLike) -> str:
    """Why an imagefolder has no label column: `datasets` makes one only from two or more class folders."""
    root = Path(train_data_dir)
    folders = (
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    )
    if len(folders) >= 2:
        return ""
    found = f"one class folder ({folders[0]}/)" if folders else "no class folders (the images lie in it directly)"
    return (
        f". The imagefolder {str(root)!r} has {found}: the `datasets` imagefolder makes the label column only from "
        "two or more class folders (one per class), so a single class has no labels. Put each class's images in its "
        "own subfolder, at least two of them"
    )


class LabeledImageDataset(TransformedImageDataset):
    """`TransformedImageDataset` that also yields the class label: ``{"pixel_values": (3, R, R), "labels": int}``.

    The label column is read once at construction (cheap: no image is decoded for it).
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        transform,
        image_column: str | None = None,
        label_column: str = "label",
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, transform, image_column=image_column, seed=seed)
        if label_column not in dataset.features:
            raise ValueError(
                f"--label_column={label_column!r} is not a column of the dataset: {list(dataset.features)}"
            )
        self.labels = torch.as_tensor(dataset[label_column], dtype=torch.int64)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {**super().__getitem__(index), "labels": self.labels[int(index)]}


def collate_images(examples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack ``{"pixel_values": (3, R, R)}`` examples into ``{"pixel_values": (B, 3, R, R)}``: torch's
    `default_collate` (what a `DataLoader` without `collate_fn` does), with a clear error for an empty list."""
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    return default_collate(list(examples))
