"""Which prefixes c' a diffusion run trains on: `dc_ae_hf.training.randomness.diffusion_channel_choices`."""

from __future__ import annotations

import pytest

from dc_ae_hf.training.randomness import LatentChannelSampler, diffusion_channel_choices


def test_the_flags_choices_else_the_autoencoders_sorted():
    assert diffusion_channel_choices(16, [12, 4], [4, 8, 12, 16]) == [4, 12]
    assert diffusion_channel_choices(16, None, (16, 4, 8)) == [4, 8, 16]
    assert diffusion_channel_choices(16, None, [4, 16], always_include_full=True, num_samples=2) == [4, 16]
    choices = diffusion_channel_choices(16, None, [4, 8, 12, 16], channel_sampling="per_sample")
    assert LatentChannelSampler(choices).choices == [4, 8, 12, 16]


def test_without_augmentation_only_the_full_latent():
    assert diffusion_channel_choices(16, None, [4, 8, 12, 16], augmented=False) == [16]
    assert diffusion_channel_choices(16, None, None, augmented=False) == [16]  # an unstructured autoencoder
    with pytest.raises(ValueError, match="--no_augmented trains on the full latent only; drop --latent_channel"):
        diffusion_channel_choices(16, [4, 16], None, augmented=False)
    with pytest.raises(ValueError, match="--no_augmented trains on the full latent only"):
        diffusion_channel_choices(16, None, None, augmented=False, always_include_full=True)
    with pytest.raises(ValueError, match="--channel_sampling='per_sample' is not allowed: --no_augmented trains"):
        diffusion_channel_choices(16, None, None, augmented=False, channel_sampling="per_sample")


def test_an_unstructured_autoencoder_cannot_train_augmented():
    # its choices fall back to the full latent, which would make "augmented" the plain objective
    for fallback in (None, [], [16]):
        with pytest.raises(ValueError, match=r"needs channel prefixes c' < 16, but the autoencoder 'ae' has no str"):
            diffusion_channel_choices(16, None, fallback, autoencoder="ae")
    with pytest.raises(ValueError, match=r"in its config or the cache metadata; the choices fall back to \[16\]"):
        diffusion_channel_choices(16, None, None, autoencoder="ae", from_latent_cache=True)
    assert diffusion_channel_choices(16, [4, 16], None) == [4, 16]  # named on the command line: allowed


def test_bad_choices_are_refused_naming_the_flag():
    with pytest.raises(ValueError, match="--latent_channel_choices"):
        diffusion_channel_choices(16, [4, 32], None)  # beyond the latent
    with pytest.raises(ValueError, match="--always_include_full needs the full latent 16"):
        diffusion_channel_choices(16, [4, 8], None, always_include_full=True)
    with pytest.raises(ValueError, match="--num_channel_samples=2 is not allowed: per_sample draws one c' per"):
        diffusion_channel_choices(16, None, [4, 16], num_samples=2, channel_sampling="per_sample")
