"""The pipeline; each name is imported from its module at its first use (`dc_ae_hf.lazy_names`)."""

from ..lazy_names import lazy_names

_HOMES = {
    "DCAE15Pipeline": ".pipeline_dcae15",
    "GuidanceCutoffCallback": ".callbacks",
    "load_imagenet_id2label": ".pipeline_dcae15",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
