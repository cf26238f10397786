"""Everything only training needs; inference (`dc_ae_hf.models`, `pipelines`, `latents`, `sampling`, `convert`)
never imports it.

| module | what |
|---|---|
| `arguments` | the command-line flags both trainers share, one meaning each, and their checks |
| `run` | `TrainingRun`: the run folder (ownership, lock), accelerator, resume, the step loop, logging, the end |
| `checkpoints` | atomic `checkpoint-<step>` folders of `save_pretrained` models; resume candidates and settings |
| `randomness` | stateless (seed, rank, step) seeding and the c' draw `LatentChannelSampler` (paper Eq. 1/2) |
| `optimization` | AdamW and the LR schedule from the flags, `compile_blocks` (`--compile`) |
| `sharding` | FSDP2 (`--fsdp`): `shard_model`, DCP checkpoints of the shards, gathered export |
| `ema` | `ExponentialWarmupEMAModel` (the official EMA warm-up) |
| `autoencoder` | DC-AE training phases, encode-once/decode-every-prefix reconstruction (Eq. 1) |
| `losses` | L1 + LPIPS reconstruction, hinge GAN |
| `flow_matching` | the SiT loss with augmented diffusion training (Eq. 2) |
| `diffusion` | the USiT trainer's data, model config, optimiser groups, validation grids, pipeline export |
| `cards` | the model cards of trained autoencoders and pipelines |
"""

from .flow_matching import flow_matching_loss
from .randomness import LatentChannelSampler

__all__ = ["LatentChannelSampler", "flow_matching_loss"]
