"""Everything only training needs; inference (`dc_ae_hf.models`, `pipelines`, `latents`, `convert`)
never imports it.

| module | what |
|---|---|
| `arguments` | the flags both trainers share, one meaning each, their checks; `from_flags`, where flags stop |
| `run` | `TrainingRun` (`RunSettings`): run folder (ownership, lock), accelerator, resume, step loop, logging, end |
| `checkpoints` | atomic `checkpoint-<step>` folders of `save_pretrained` models; resume candidates and settings |
| `randomness` | (seed, rank, step) seeding, the c' draw `LatentChannelSampler`, the c' to train (Eq. 1/2) |
| `optimization` | AdamW and the LR schedule (`OptimizerSettings`), `compile_blocks` (`--compile`) |
| `sharding` | FSDP2 (`--fsdp`): `shard_model`, DCP checkpoints of the shards, gathered export |
| `ema` | `ExponentialWarmupEMAModel` (the official EMA warm-up), one EMA per decay (`make_emas`) |
| `autoencoder` | the autoencoder to train, DC-AE phases, encode-once/decode-every-prefix reconstruction (Eq. 1) |
| `losses` | L1 + LPIPS reconstruction, hinge GAN |
| `flow_matching` | the SiT loss with augmented diffusion training (Eq. 2) |
| `diffusion` | the USiT trainer's data (`DiffusionDataSettings`), model config, optimiser groups, validation grids |
| `export` | what a finished run of either trainer writes: model folders, the pipeline, their model cards |
"""

from .flow_matching import flow_matching_loss
from .randomness import LatentChannelSampler

__all__ = ["LatentChannelSampler", "flow_matching_loss"]
