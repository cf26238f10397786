"""Built-in data: the procedural shapes dataset (no download needed)."""

from .shapes import SHAPE_CLASSES, export_imagefolder, make_shapes_dataset, render_shape_image

__all__ = ["SHAPE_CLASSES", "export_imagefolder", "make_shapes_dataset", "render_shape_image"]
