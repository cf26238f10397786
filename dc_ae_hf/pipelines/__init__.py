from .callbacks import GuidanceCutoffCallback
from .pipeline_dcae15 import DCAE15Pipeline, load_imagenet_id2label

__all__ = ["DCAE15Pipeline", "GuidanceCutoffCallback", "load_imagenet_id2label"]
