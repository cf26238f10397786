"""Procedurally generated, class-conditional "shapes" image dataset (no download needed).

It is a small stand-in for ImageNet so that DC-AE 1.5 (structured latent space, paper Eq. 1) and USiT with
augmented diffusion training (paper Eq. 2) can be trained and evaluated on a 2-core CPU in minutes.

Design, following the paper's split of image content into *object structure* and *image detail*:

- **Structure** (what the class is): one large (45-68% of the image side), high-contrast, saturated shape out of
  10 classes, with a random colour, position, scale and a moderate rotation (+-30 degrees). This lives at low
  spatial frequency and survives a 4x downsample.
- **Detail** (what a low-channel latent may drop): band-limited texture at the pixel scale (period 2.5-4 px):
  faint stripes plus faint noise on the background and a fine stripe or dot pattern on the object surface that
  rotates with the object. Its amplitude is modest (a few percent of the intensity range), so it is visible but
  carries a small share of the image energy.
- **Background** is kept low-variance on purpose: a muted (low-saturation) colour with a gentle linear gradient,
  always dark when the object is bright and light when it is dark. A tiny diffusion model then spends its capacity
  on the class-carrying object instead of on background clutter.

Rendering is anti-aliased: the shape's coverage mask is drawn with ``PIL.ImageDraw`` at 8x the resolution and
box-filtered down (exact area coverage); textures are band-limited sinusoids evaluated at the output resolution.

Determinism: image ``i`` of a dataset with seed ``s`` depends only on ``(s, i)`` through
``numpy.random.default_rng([s, i])``, so any subset or shard is reproducible and generation can run in parallel.
The scene parameters are drawn before the per-pixel noise, so the same ``(s, i)`` gives the same scene at every
resolution. Labels are balanced: ``label = i % 10``, indexing :data:`SHAPE_CLASSES`, which is sorted alphabetically
so that ``datasets.load_dataset("imagefolder")`` (which sorts class-folder names) assigns the same label ids.

Command line (writes an imagefolder tree ``DIR/train/<class_name>/<index:06d>.png``)::

    python -m dc_ae_hf.data.shapes --output_dir DIR --num_images 10000 --seed 0 --resolution 32
"""

from __future__ import annotations

import argparse
import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from dc_ae_hf.extras import missing_extra

if TYPE_CHECKING:
    import datasets

# Sorted alphabetically: imagefolder sorts class folders, so label id == position in this tuple in both code paths.
SHAPE_CLASSES: tuple[str, ...] = (
    "arrow",
    "circle",
    "crescent",
    "cross",
    "heart",
    "hexagon",
    "ring",
    "square",
    "star",
    "triangle",
)

MIN_RESOLUTION = 16
MAX_RESOLUTION = 256
SUPERSAMPLE = 8  # the shape mask is drawn at 8x and box-filtered down (anti-aliasing, 65 coverage levels)
# Object size: longer side of the unrotated shape's bounding box, as a fraction of the image side. With the rotation
# limit and margin below every rotated object fits inside the image (worst case: a square at 30 degrees spans 0.93).
MIN_SIZE, MAX_SIZE = 0.45, 0.68
MAX_ROTATION_DEGREES = 30.0
EDGE_MARGIN = 0.035  # minimal gap between the rotated object's bounding box and the image border (fraction of side)
TEXTURE_PERIOD_PX = (2.5, 4.0)  # detail lives at the pixel scale, whatever the resolution
BACKGROUND_STRIPE_AMPLITUDE = 0.025
BACKGROUND_NOISE_STD = 0.012
OBJECT_PATTERN_AMPLITUDE = (0.04, 0.07)
BACKGROUND_GRADIENT_AMPLITUDE = (0.02, 0.06)  # half peak-to-peak of the smooth luminance ramp
MIN_LUMA_CONTRAST = 0.3  # |luma(object) - luma(background)| lower bound before gradient/texture


def _regular_polygon(num_vertices: int, radius: float = 1.0, start_deg: float = -90.0) -> np.ndarray:
    angles = np.deg2rad(start_deg) + 2.0 * np.pi * np.arange(num_vertices) / num_vertices
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _disk(radius: float = 1.0, center: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    return _regular_polygon(96, radius) + np.asarray(center)


def _star(num_points: int = 5, inner_ratio: float = 0.45) -> np.ndarray:
    outer = _regular_polygon(num_points, 1.0)
    inner = _regular_polygon(num_points, inner_ratio, start_deg=-90.0 + 180.0 / num_points)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross(half_width: float = 0.3) -> np.ndarray:
    w = half_width
    return np.asarray(
        [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1)],
        dtype=np.float64,
    )


def _arrow() -> np.ndarray:
    return np.asarray([(-1.0, -0.25), (0.1, -0.25), (0.1, -0.65), (1.0, 0.0), (0.1, 0.65), (0.1, 0.25), (-1.0, 0.25)])


def _heart() -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, 96, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))  # image y points down
    return np.stack([x, y], axis=1)


def _normalised(parts: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, int]]:
    """Centre the bounding box of the filled parts at 0 and scale its longer side to 2 (fits [-1, 1]^2)."""
    filled = np.concatenate([polygon for polygon, fill in parts if fill])
    low, high = filled.min(axis=0), filled.max(axis=0)
    center, scale = (low + high) / 2.0, 2.0 / float((high - low).max())
    return [((polygon - center) * scale, fill) for polygon, fill in parts]


# Each class is a list of (polygon, fill) drawn in order (fill 0 cuts a hole), normalised so the unrotated shape's
# bounding box is centred at 0 with longer side 2; the sampled object "size" is that side as a fraction of the image.
_SHAPE_POLYGONS: dict[str, list[tuple[np.ndarray, int]]] = {
    name: _normalised(parts)
    for name, parts in {
        "arrow": [(_arrow(), 255)],
        "circle": [(_disk(), 255)],
        "crescent": [(_disk(), 255), (_disk(0.8, center=(0.45, -0.1)), 0)],
        "cross": [(_cross(), 255)],
        "heart": [(_heart(), 255)],
        "hexagon": [(_regular_polygon(6, start_deg=0.0), 255)],
        "ring": [(_disk(), 255), (_disk(0.5), 0)],
        "square": [(_regular_polygon(4, start_deg=45.0), 255)],
        "star": [(_star(), 255)],
        "triangle": [(_regular_polygon(3), 255)],
    }.items()
}


def _rotation_matrix(angle_deg: float) -> np.ndarray:
    theta = np.deg2rad(angle_deg)
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


@dataclass(frozen=True)
class ShapeSample:
    """One rendered sample with the ground truth used to build it (for tests, debugging and analysis).

    Attributes:
        image: the RGB image (``resolution x resolution``).
        label: class id, an index into :data:`SHAPE_CLASSES`.
        mask: float32 ``(H, W)`` anti-aliased coverage of the shape in ``[0, 1]``.
        structure: float32 ``(H, W, 3)`` in ``[0, 1]``: the same scene without any texture (object structure
            only). ``image / 255 - structure`` is the image detail (plus 8-bit rounding).
        center: object centre ``(x, y)`` in pixels (centre of the unrotated shape's bounding box).
        size: longer side of the unrotated shape's bounding box in pixels.
        angle: rotation of the object in degrees (clockwise on screen, since image y points down).
    """

    image: Image.Image
    label: int
    mask: np.ndarray
    structure: np.ndarray
    center: tuple[float, float]
    size: float
    angle: float


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {value!r} of type {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def _check_resolution(resolution: object) -> int:
    resolution = _check_int("resolution", resolution, MIN_RESOLUTION)
    if resolution > MAX_RESOLUTION or resolution % 8 != 0:
        raise ValueError(
            f"`resolution` must be a multiple of 8 in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution}."
        )
    return resolution


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))  # ITU-R BT.601


def _sample_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A saturated object colour and a muted background colour at least MIN_LUMA_CONTRAST away in luma."""
    obj = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.65, 1.0), rng.uniform(0.75, 1.0)))
    obj_luma = _luma(obj)
    if obj_luma >= 0.5:  # bright object -> dark background
        low, high = 0.08, min(0.3, obj_luma - MIN_LUMA_CONTRAST)
    else:  # dark object -> light background
        low, high = max(0.7, obj_luma + MIN_LUMA_CONTRAST), 0.92
    target_luma = rng.uniform(low, high)
    tint = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.08, 0.3), 1.0))
    background = np.clip(tint * (target_luma / _luma(tint)), 0.0, 1.0)
    return obj, background


def _draw_mask(label: int, resolution: int, center: np.ndarray, half_size: float, angle_deg: float) -> np.ndarray:
    """Anti-aliased coverage mask: draw at SUPERSAMPLE x resolution, then exact box-filter downsample."""
    big = resolution * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    rotation = _rotation_matrix(angle_deg)
    for polygon, fill in _SHAPE_POLYGONS[SHAPE_CLASSES[label]]:
        points = (polygon @ rotation.T * half_size + center) * SUPERSAMPLE  # (V, 2) in supersampled pixels
        draw.polygon([tuple(p) for p in points.tolist()], fill=fill)
    small = canvas.resize((resolution, resolution), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render_shape_sample(index: int, seed: int = 0, resolution: int = 32) -> ShapeSample:
    """Render image ``index`` of the dataset with ``seed``, returning the image and its ground truth.

    The result depends only on ``(seed, index)`` (and ``resolution`` for the sampling grid and the pixel noise).
    """
    index = _check_int("index", index, 0)
    seed = _check_int("seed", seed, 0)
    resolution = _check_resolution(resolution)
    rng = np.random.default_rng([seed, index])
    label = index % len(SHAPE_CLASSES)

    # 1) Scene parameters (resolution independent, all drawn before any per-pixel randomness).
    size_frac = rng.uniform(MIN_SIZE, MAX_SIZE)
    angle = rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES)
    filled = np.concatenate([polygon for polygon, fill in _SHAPE_POLYGONS[SHAPE_CLASSES[label]] if fill])
    half_extent = np.abs(filled @ _rotation_matrix(angle).T).max(axis=0) * size_frac / 2  # (2,) rotated bbox / 2
    low = half_extent + EDGE_MARGIN
    center_frac = low + rng.uniform(size=2) * np.maximum(1.0 - 2.0 * low, 0.0)  # keep the whole object inside
    obj_colour, bg_colour = _sample_colours(rng)
    gradient_dir = rng.uniform(0.0, 2.0 * np.pi)
    gradient_amp = rng.uniform(*BACKGROUND_GRADIENT_AMPLITUDE)
    stripe_dir, stripe_period = rng.uniform(0, np.pi), rng.uniform(*TEXTURE_PERIOD_PX)
    stripe_phase = rng.uniform(0, 2 * np.pi)
    pattern_dots = rng.uniform() < 0.5  # object surface: dots (product of two cosines) or stripes
    pattern_period, pattern_amp = rng.uniform(*TEXTURE_PERIOD_PX), rng.uniform(*OBJECT_PATTERN_AMPLITUDE)
    pattern_phase = rng.uniform(0, 2 * np.pi, size=2)

    # 2) Structure: shape coverage, object colour, smooth background.
    # Pixel (j, i) covers [i, i+1) x [j, j+1) in continuous coordinates, so its centre is at (i + 0.5, j + 0.5).
    center = center_frac * resolution
    half_size = size_frac * resolution / 2
    mask = _draw_mask(label, resolution, center, half_size, angle)
    ys, xs = np.mgrid[0:resolution, 0:resolution].astype(np.float64) + 0.5
    ramp = ((xs / resolution - 0.5) * np.cos(gradient_dir) + (ys / resolution - 0.5) * np.sin(gradient_dir)) * 2
    background = bg_colour[None, None, :] + (gradient_amp * ramp)[..., None]  # (H, W, 3)
    alpha = mask[..., None]
    structure = np.clip(background * (1 - alpha) + obj_colour[None, None, :] * alpha, 0.0, 1.0)

    # 3) Detail: pixel-scale band-limited texture (background stripes + noise, object surface pattern).
    along = xs * np.cos(stripe_dir) + ys * np.sin(stripe_dir)
    bg_texture = BACKGROUND_STRIPE_AMPLITUDE * np.cos(2 * np.pi * along / stripe_period + stripe_phase)
    bg_texture = bg_texture + BACKGROUND_NOISE_STD * rng.standard_normal((resolution, resolution))
    theta = np.deg2rad(angle)  # the surface pattern is attached to the object and rotates with it
    u = (xs - center[0]) * np.cos(theta) + (ys - center[1]) * np.sin(theta)
    v = -(xs - center[0]) * np.sin(theta) + (ys - center[1]) * np.cos(theta)
    pattern = np.cos(2 * np.pi * u / pattern_period + pattern_phase[0])
    if pattern_dots:
        pattern = pattern * np.cos(2 * np.pi * v / pattern_period + pattern_phase[1])
    texture = bg_texture * (1 - mask) + pattern_amp * pattern * mask
    pixels = np.clip(structure + texture[..., None], 0.0, 1.0)

    image = Image.fromarray(np.round(pixels * 255.0).astype(np.uint8), mode="RGB")
    return ShapeSample(
        image=image,
        label=label,
        mask=mask,
        structure=structure.astype(np.float32),
        center=(float(center[0]), float(center[1])),
        size=float(2 * half_size),
        angle=float(angle),
    )


def render_shape_image(index: int, seed: int = 0, resolution: int = 32) -> tuple[Image.Image, int]:
    """Render image ``index`` of the dataset with ``seed``; returns ``(RGB image, label)`` with ``label = index % 10``."""
    sample = render_shape_sample(index, seed=seed, resolution=resolution)
    return sample.image, sample.label


def _datasets():
    """The `datasets` package (the train extra), imported where a dataset is built: rendering the shapes and
    `SHAPE_CLASSES` need only numpy and PIL (the toy scripts read their flags without it)."""
    try:
        import datasets
    except ImportError as error:
        raise missing_extra(error, "dc_ae_hf.data.shapes (the built-in shapes dataset)") from error
    return datasets


def shapes_features() -> datasets.Features:
    """The schema of :func:`make_shapes_dataset`, identical to what ``load_dataset("imagefolder")`` gives."""
    datasets = _datasets()
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(SHAPE_CLASSES))})


def make_shapes_dataset(
    num_images: int, seed: int = 0, resolution: int = 32, num_proc: int | None = None
) -> datasets.Dataset:
    """Build an in-memory ``datasets.Dataset`` of images ``0 .. num_images - 1`` with columns ``image``, ``label``.

    ``num_proc`` renders in parallel with ``Dataset.map`` (the result does not depend on it).
    """
    num_images = _check_int("num_images", num_images, 1)
    seed = _check_int("seed", seed, 0)
    resolution = _check_resolution(resolution)
    if num_proc is not None:
        num_proc = _check_int("num_proc", num_proc, 1)

    def render_batch(batch: dict[str, list[int]]) -> dict[str, list]:
        rendered = [render_shape_image(i, seed=seed, resolution=resolution) for i in batch["index"]]
        return {"image": [image for image, _ in rendered], "label": [label for _, label in rendered]}

    indices = _datasets().Dataset.from_dict({"index": list(range(num_images))})
    return indices.map(
        render_batch,
        batched=True,
        batch_size=256,
        remove_columns=["index"],
        features=shapes_features(),
        num_proc=num_proc if num_proc is not None and num_proc > 1 and num_images > 1 else None,
        desc=f"Rendering {num_images} shapes images at {resolution}px",
    )


def export_imagefolder(output_dir: str | Path, num_images: int, seed: int = 0, resolution: int = 32) -> Path:
    """Write ``output_dir/train/<class_name>/<index:06d>.png`` for images ``0 .. num_images - 1``; returns
    ``output_dir``.

    ``datasets.load_dataset("imagefolder", data_dir=output_dir)`` then loads it with the generator's labels.
    Re-running with the same arguments overwrites the files with identical content (idempotent). A ``train``
    folder that holds other PNG files (e.g. from an export with more images or other class names) is refused,
    since they would silently mix into the dataset.
    """
    num_images = _check_int("num_images", num_images, 1)
    seed = _check_int("seed", seed, 0)
    resolution = _check_resolution(resolution)
    output_dir = Path(output_dir)
    train_dir = output_dir / "train"
    expected = {train_dir / SHAPE_CLASSES[i % len(SHAPE_CLASSES)] / f"{i:06d}.png" for i in range(num_images)}
    if train_dir.exists():
        unexpected = sorted(p for p in train_dir.rglob("*.png") if p not in expected)
        if unexpected:
            raise ValueError(
                f"`output_dir` {str(output_dir)!r} already holds {len(unexpected)} PNG file(s) that are not part of "
                f"this export (num_images={num_images}), e.g. {str(unexpected[0])!r}; use an empty or new directory."
            )
    for name in SHAPE_CLASSES:
        (train_dir / name).mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        image, label = render_shape_image(i, seed=seed, resolution=resolution)
        image.save(train_dir / SHAPE_CLASSES[label] / f"{i:06d}.png", format="PNG")
    return output_dir


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m dc_ae_hf.data.shapes",
        description="Export the procedural shapes dataset as an imagefolder tree DIR/train/<class_name>/<index>.png.",
    )
    parser.add_argument("--output_dir", type=Path, required=True, help="Directory to write (created if missing).")
    parser.add_argument("--num_images", type=int, required=True, help="Number of images (balanced over 10 classes).")
    parser.add_argument("--seed", type=int, default=0, help="Dataset seed (image i depends only on (seed, i)).")
    parser.add_argument("--resolution", type=int, default=32, help="Image side in pixels, multiple of 8 in [16, 256].")
    args = parser.parse_args(argv)
    try:
        path = export_imagefolder(args.output_dir, args.num_images, seed=args.seed, resolution=args.resolution)
    except ValueError as error:
        parser.error(str(error))  # usage + message, exit status 2
    print(path)
    return path


if __name__ == "__main__":
    main()
