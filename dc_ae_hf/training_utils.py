"""Moved to `dc_ae_hf.training` (`randomness`, `checkpoints`, `run`); this alias keeps existing imports working."""

from dc_ae_hf.training.checkpoints import (  # noqa: F401
    CHECKPOINT_PREFIX,
    checkpoint_step,
    find_latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    read_checkpoint_metadata,
    register_pretrained_hooks,
    resolve_resume_checkpoint,
    save_checkpoint,
)
from dc_ae_hf.training.randomness import LatentChannelSampler  # noqa: F401
from dc_ae_hf.training.run import make_accelerator  # noqa: F401
