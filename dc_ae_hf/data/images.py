"""Image datasets for training and evaluating autoencoders (and, later, diffusion models and the latent cache).

- :func:`load_image_dataset`: a Hub dataset (``--dataset_name``, optionally streaming) or an imagefolder
  (``--train_data_dir``) through ``datasets.load_dataset``.
- :func:`image_transform`: PIL image -> float tensor (3, R, R) in [-1, 1], with the ADM center crop
  (:func:`center_crop_arr`, the official diffusion data pipeline's ``DMCrop``), a random crop, and a random flip.
- :class:`TransformedImageDataset` / :class:`TransformedIterableImageDataset`: apply the transform lazily, with the
  randomness of each sample a pure function of ``(seed, epoch, index)``, so a resumed run, any number of dataloader
  workers and any number of processes see exactly the same crops and flips as an uninterrupted run.
- :func:`collate_images`: batches ``{"pixel_values": (B, 3, R, R)}``.
- :func:`load_train_and_validation_datasets`: all of the above for a training script, with held-out validation images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

__all__ = [
    "ImageTransform",
    "TransformedImageDataset",
    "TransformedIterableImageDataset",
    "center_crop_arr",
    "collate_images",
    "find_image_column",
    "holdout_split",
    "image_transform",
    "load_image_dataset",
    "load_train_and_validation_datasets",
    "resize_shorter_side",
]


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
    if isinstance(num_holdout, bool) or not isinstance(num_holdout, int) or num_holdout < 1:
        raise ValueError(f"num_holdout must be a positive int, got {num_holdout!r}")
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


class ImageTransform:
    """PIL image -> float tensor (3, resolution, resolution) in [-1, 1] (``x / 127.5 - 1``).

    Args:
        resolution: output side in pixels.
        random_crop: resize the shorter side to `resolution` (ADM style) and crop a random square.
        center_crop: the ADM center crop (:func:`center_crop_arr`). At most one of the two crops may be set; with
            neither, the whole image is resized to ``resolution x resolution`` (aspect ratio not kept). Default
            (None): center crop unless `random_crop`.
        random_flip: flip horizontally with probability 0.5.

    `__call__(image, generator=None)` draws the crop offset and the flip from `generator` (the global torch RNG
    when None); :class:`TransformedImageDataset` passes one seeded per sample.
    """

    def __init__(
        self, resolution: int, random_crop: bool = False, center_crop: bool | None = None, random_flip: bool = False
    ) -> None:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"--resolution must be a positive int, got {resolution!r}")
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
        image = image.convert("RGB")
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
    """A map-style dataset yielding ``{"pixel_values": transform(image)}``; randomness from (seed, epoch, index).

    Call :meth:`set_epoch` at the start of each epoch (the training scripts do) to get new crops every epoch.
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
        self.dataset = dataset
        self.transform = transform
        self.image_column = find_image_column(dataset, image_column)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = self.dataset[int(index)][self.image_column]
        generator = _sample_generator(self.seed, self.epoch, int(index)) if self.transform.is_random else None
        return {"pixel_values": self.transform(image, generator=generator)}


class TransformedIterableImageDataset(torch.utils.data.IterableDataset):
    """The streaming counterpart of :class:`TransformedImageDataset`.

    The index of a sample is its position in this worker's stream (with the worker id mixed into the seed);
    :meth:`set_epoch` is forwarded to the wrapped dataset, which reshuffles its shards and buffer for the epoch.
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        transform: ImageTransform,
        image_column: str | None = None,
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.image_column = find_image_column(dataset, image_column)
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
            yield {"pixel_values": self.transform(example[self.image_column], generator=generator)}


def collate_images(examples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack ``{"pixel_values": (3, R, R)}`` examples into ``{"pixel_values": (B, 3, R, R)}`` (contiguous)."""
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    pixel_values = torch.stack([example["pixel_values"] for example in examples])
    return {"pixel_values": pixel_values.contiguous(memory_format=torch.contiguous_format).float()}
