"""Everything only training needs; inference (`dc_ae_hf.models`, `pipelines`, `latents`, `convert`)
never imports it.

Which module a training change belongs in: docs/training.md ("Both trainers"), the one map of this package.
"""

from .flow_matching import flow_matching_loss
from .randomness import LatentChannelSampler

__all__ = ["LatentChannelSampler", "flow_matching_loss"]
