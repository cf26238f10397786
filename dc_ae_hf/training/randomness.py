"""Stateless randomness: every random draw of a training step is seeded by (seed, rank, step); and which channel
prefixes c' a diffusion run draws from (`diffusion_channel_choices`).

As EDM2 reseeds its noise from (seed, rank, nimg) (``training/training_loop.py``), the trainers reseed torch's RNG at
the start of each optimisation step (`seed_step`) and draw the step's channel prefixes c' from a generator of their
own (`LatentChannelSampler`). A resumed run therefore draws exactly what an uninterrupted one draws, and nothing but
the step number has to be checkpointed for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dc_ae_hf.checks import check_channel_prefixes, check_int, invalid

__all__ = ["LatentChannelSampler", "diffusion_channel_choices", "seed_step", "step_seed"]

# Separate streams for the users of a step's seed: torch's global RNG (t, noise, label dropout), the per-step c' draw
# and the per-sample c' draw (one sub-stream per micro-batch).
_GLOBAL_STREAM, _CHANNEL_STREAM, _PER_SAMPLE_STREAM = 0, 1, 2


def step_seed(seed: int, rank: int, step: int, stream: int = _GLOBAL_STREAM, *more: int) -> int:
    """A 63-bit seed that depends on nothing but (seed, rank, step, stream, *more) (numpy `SeedSequence` mixing)."""
    entropy = [int(seed) % 2**63, int(rank), int(step), int(stream), *map(int, more)]
    words = np.random.SeedSequence(entropy).generate_state(2)
    return int((int(words[0]) << 31 ^ int(words[1])) % 2**63)


def seed_step(seed: int, rank: int, step: int) -> None:
    """Reseed torch's RNG (CPU and every accelerator) for optimisation step `step` of process `rank`."""
    torch.manual_seed(step_seed(seed, rank, step))


class LatentChannelSampler:
    """Draws the channel prefixes c' used in one training step (paper Eq. 1 for the autoencoder, Eq. 2 for diffusion).

    Official semantics (`dc_gen/aecore/trainer.py` and `dc_gen/c2icore/trainer.py`, `prepare_batch`): each step
    draws `num_samples` values uniformly from `choices` (with replacement); with `always_include_full` the first
    value is the full latent `max(choices)` and only `num_samples - 1` are drawn. The draw is the same for the whole
    local batch and differs between processes (the official code uses a per-rank generator).

    The draw of step n is a function of (seed, process_index, n) only, so it needs no checkpointed state.

    Args:
        choices: allowed prefixes, strictly increasing positive ints (e.g. `vae.latent_channel_choices`).
        num_samples: how many prefixes per step (>= 1).
        always_include_full: force the full latent as the first prefix.
        seed: the run's seed.
        process_index: the rank of this process.
    """

    def __init__(
        self,
        choices: Sequence[int],
        num_samples: int = 1,
        always_include_full: bool = False,
        seed: int = 0,
        process_index: int = 0,
    ) -> None:
        self.choices = check_channel_prefixes("latent_channel_choices", choices, increasing=True)
        self.num_samples = check_int("num_channel_samples", num_samples, minimum=1)
        self.always_include_full = bool(always_include_full)
        self.seed = check_int("seed", seed)
        self.process_index = check_int("process_index", process_index, minimum=0)
        self._next_step = 1  # for calls without a step: 1, 2, 3, ...

    def __call__(self, step: int | None = None) -> list[int]:
        """The prefixes of optimisation step `step` (default: the step after the previous call), e.g. `[128, 48]`
        with `num_samples=2, always_include_full=True`."""
        if step is None:
            step = self._next_step
        step = check_int("step", step, minimum=0)
        self._next_step = step + 1
        drawn = [self.choices[-1]] if self.always_include_full else []
        num_random = self.num_samples - len(drawn)
        if num_random:
            generator = torch.Generator().manual_seed(step_seed(self.seed, self.process_index, step, _CHANNEL_STREAM))
            index = torch.randint(len(self.choices), (num_random,), generator=generator)
            drawn.extend(self.choices[i] for i in index.tolist())
        return drawn

    def per_sample(self, step: int, batch_size: int, micro_batch: int = 0) -> torch.Tensor:
        """One prefix per sample for a micro-batch of optimisation step `step`: int64 (batch_size,) on the CPU, for
        the one-pass loss (`flow_matching_loss` with a tensor). Each c'_i is uniform over `choices`; with
        `always_include_full` the first half of the batch (rounded up) gets the full latent, the per-sample analogue
        of the official k = 2 with the full latent. A function of (seed, rank, step, micro_batch) only."""
        step = check_int("step", step, minimum=0)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        seed = step_seed(
            self.seed, self.process_index, step, _PER_SAMPLE_STREAM, check_int("micro_batch", micro_batch)
        )
        generator = torch.Generator().manual_seed(seed)
        choices = torch.tensor(self.choices, dtype=torch.int64)
        drawn = choices[torch.randint(len(self.choices), (batch_size,), generator=generator)]
        if self.always_include_full:
            drawn[: (batch_size + 1) // 2] = self.choices[-1]
        return drawn


def diffusion_channel_choices(
    latent_channels: int,
    choices: Sequence[int] | None = None,
    autoencoder_choices: Sequence[int] | None = None,
    *,
    augmented: bool = True,
    num_samples: int = 1,
    always_include_full: bool = False,
    channel_sampling: str = "per_pass",
    autoencoder: str = "the autoencoder",
    from_latent_cache: bool = False,
) -> list[int]:
    """The prefixes c' a diffusion run trains on (paper Eq. 2), for `LatentChannelSampler`: `choices` when given
    (`--latent_channel_choices`), else the autoencoder's (`autoencoder_choices`: its config's
    `latent_channel_choices` or the latent cache's; without them only the full latent, which augmented training
    refuses as it would be the plain objective), sorted; `[latent_channels]` without augmentation (`--no_augmented`).

    Args:
        latent_channels: the full latent's channels c (the transformer's `in_channels`).
        num_samples, always_include_full: the sampler's (`--num_channel_samples`, `--always_include_full`).
        channel_sampling: "per_pass" (one pass per drawn c') or "per_sample" (one c' per sample, needs
            `num_samples=1`).
        autoencoder, from_latent_cache: for the messages: the autoencoder's name and where its choices came from.
    """
    c = latent_channels
    if channel_sampling == "per_sample" and num_samples != 1:
        raise invalid("--num_channel_samples", num_samples, "per_sample draws one c' per sample in one pass: use 1")
    if not augmented:
        if choices or num_samples != 1 or always_include_full:
            raise ValueError(
                "--no_augmented trains on the full latent only; drop --latent_channel_choices, "
                "--num_channel_samples and --always_include_full"
            )
        if channel_sampling != "per_pass":
            raise invalid("--channel_sampling", channel_sampling, "--no_augmented trains the full latent only")
        return [c]
    resolved = sorted(choices or autoencoder_choices or [c])
    if not choices and resolved == [c]:
        # an unstructured autoencoder: the choices fall back to [c], so "augmented" would be the plain objective
        raise ValueError(
            f"augmented training (the default) needs channel prefixes c' < {c}, but the autoencoder "
            f"{autoencoder!r} has no structured latent space (no latent_channel_choices in its config"
            f"{' or the cache metadata' if from_latent_cache else ''}; the choices fall back to "
            f"[{c}], the full latent only). Pass --latent_channel_choices C1 C2 ... if it is structured but was "
            "saved without the list, or --no_augmented to train on the full latent"
        )
    check_channel_prefixes("--latent_channel_choices", resolved, c, increasing=True)
    if always_include_full and resolved[-1] != c:
        raise invalid("--latent_channel_choices", resolved, f"--always_include_full needs the full latent {c}")
    return resolved
