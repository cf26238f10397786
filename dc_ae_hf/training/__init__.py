"""Everything only training needs; inference (`dc_ae_hf.models`, `pipelines`, `latents`, `convert`)
never imports it.

Which module a training change belongs in: docs/training.md ("Both trainers"), the one map of this package. The
names below are imported from their modules at their first use (`dc_ae_hf.lazy_names`), so that the trainers'
flags (`dc_ae_hf.training.arguments`) are read without torch.
"""

from ..lazy_names import lazy_names

_HOMES = {"LatentChannelSampler": ".randomness", "flow_matching_loss": ".flow_matching"}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
