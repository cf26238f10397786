"""Paper Eq. 2 (augmented diffusion training) as `dc_ae_hf.training.flow_matching.flow_matching_loss` computes it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.training.flow_matching import (
    draw_time_and_noise,
    flow_matching_loss,
    flow_matching_pass,
    linear_interpolant,
)

C, S, B = 16, 4, 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> USiTTransformer2DModel:
    torch.manual_seed(0)
    model = USiTTransformer2DModel(
        sample_size=S,
        in_channels=C,
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=16,
        num_classes=10,
        class_dropout_prob=0.1,
    )
    with torch.no_grad():  # move the zero-initialised biases away from 0 so nothing cancels by accident
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()  # no label dropout: a fixed draw


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(B, C, S, S, generator=generator), torch.tensor([1, 4, 7])


def _hand_draws(channels: list[int], seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The documented draw order: for each prefix, t (B,) then noise (B, c', H, W) from one generator."""
    generator = torch.Generator().manual_seed(seed)
    draws = []
    for c in channels:
        t = torch.rand(B, generator=generator)
        draws.append((t, torch.randn(B, c, S, S, generator=generator)))
    return draws


def test_loss_is_the_truncated_objective_for_a_fixed_draw(model, batch):
    latents, labels = batch
    channels = [4, 16, 8]
    loss, logs = flow_matching_loss(model, latents, labels, channels, generator=torch.Generator().manual_seed(5))
    per_prefix = []
    with torch.no_grad():
        for c, (t, noise) in zip(channels, _hand_draws(channels, seed=5)):
            x1 = latents[:, :c]
            x_t = t.view(B, 1, 1, 1) * x1 + (1 - t.view(B, 1, 1, 1)) * noise  # SiT linear path
            v_target = x1 - noise
            v_pred = model(x_t, t, labels).sample  # the model sees and predicts c' channels
            assert v_pred.shape == (B, c, S, S)
            per_prefix.append(((v_target - v_pred) ** 2).sum() / (B * c * S * S))  # normalised by active channels
    expected = torch.stack(per_prefix).mean()  # equal weight per prefix
    torch.testing.assert_close(loss.detach(), expected, atol=1e-6, rtol=1e-6)
    for c, value in zip(channels, per_prefix):
        torch.testing.assert_close(logs[f"loss_c{c}"], value, atol=1e-6, rtol=1e-6)
    assert loss.requires_grad


def test_loss_equals_the_zero_masked_form_of_eq2(model, batch):
    """|| v * m - model(x_t * m) * m ||^2 / (B c' H W) on full-channel tensors, m = (1 x c', 0 x (C - c'))."""
    latents, labels = batch
    for c in (4, 12, 16):
        ((t, noise_c),) = _hand_draws([c], seed=11)
        loss, _ = flow_matching_loss(model, latents, labels, [c], generator=torch.Generator().manual_seed(11))
        mask = torch.zeros(1, C, 1, 1)
        mask[:, :c] = 1
        noise = F.pad(noise_c, (0, 0, 0, 0, 0, C - c))  # any values in the masked channels: they are masked
        x_t = t.view(B, 1, 1, 1) * latents + (1 - t.view(B, 1, 1, 1)) * noise
        with torch.no_grad():
            v_pred = model(x_t * mask, t, labels).sample  # full-width model call on the masked input
        masked = (((latents - noise) * mask - v_pred * mask) ** 2).sum() / (B * c * S * S)
        torch.testing.assert_close(loss.detach(), masked, atol=1e-5, rtol=1e-5)
        if c < C:  # normalising by all channels would be a different (smaller) number
            assert not torch.allclose(loss.detach(), masked * c / C)


def test_linear_interpolant_endpoints_and_velocity():
    x1, x0 = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    x_t, v = linear_interpolant(x1, x0, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(x_t[0], x0[0])  # t = 0 is noise
    torch.testing.assert_close(x_t[1], x1[1])  # t = 1 is data
    torch.testing.assert_close(v, x1 - x0)


def test_pass_matches_loss_with_one_prefix(model, batch):
    latents, labels = batch
    t, noise = draw_time_and_noise(latents[:, :8], torch.Generator().manual_seed(2))
    assert t.shape == (B,) and 0 <= t.min() and t.max() < 1 and noise.shape == (B, 8, S, S)
    direct = flow_matching_pass(model, latents[:, :8], labels, t, noise)
    loss, _ = flow_matching_loss(model, latents, labels, [8], generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(loss, direct)


def test_each_pass_draws_its_own_time_noise_and_label_dropout(batch):
    latents, labels = batch
    torch.manual_seed(0)
    model = USiTTransformer2DModel(
        sample_size=S,
        in_channels=C,
        num_layers=0,
        num_attention_heads=1,
        attention_head_dim=8,
        num_classes=10,
        class_dropout_prob=0.5,
    ).train()
    seen = []
    hook = model.label_embed.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    times = []
    pre = model.register_forward_pre_hook(lambda module, args: times.append(args[1].clone()))
    try:
        torch.manual_seed(3)
        first, _ = flow_matching_loss(model, latents.repeat(8, 1, 1, 1), labels.repeat(8), [16, 16])
        torch.manual_seed(3)
        again, _ = flow_matching_loss(model, latents.repeat(8, 1, 1, 1), labels.repeat(8), [16, 16])
    finally:
        hook.remove()
        pre.remove()
    assert torch.equal(first, again)  # deterministic under the global seed (dropout included)
    assert not torch.equal(seen[0], seen[1])  # two passes, two label-dropout draws (p = 0.5, 24 labels)
    assert (seen[0] == 10).any() and not torch.equal(times[0], times[1])  # null class id = num_classes


def test_repeated_prefix_logs_the_mean_of_its_passes(model, batch):
    latents, labels = batch
    loss, logs = flow_matching_loss(model, latents, labels, [8, 8], generator=torch.Generator().manual_seed(4))
    assert set(logs) == {"loss", "loss_c8"}
    torch.testing.assert_close(logs["loss_c8"], loss.detach())


@pytest.mark.parametrize(
    "channels, error, message",
    [
        ([], ValueError, "empty"),
        ([0], ValueError, "outside 1..16"),
        ([17], ValueError, "outside 1..16"),
        ([4.0], ValueError, "outside 1..16"),
        (8, TypeError, "list of ints"),
    ],
)
def test_bad_channels_are_rejected(model, batch, channels, error, message):
    with pytest.raises(error, match=message):
        flow_matching_loss(model, batch[0], batch[1], channels)


def test_bad_shapes_are_rejected(model, batch):
    latents, labels = batch
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        flow_matching_loss(model, latents[0], labels, [4])
    with pytest.raises(ValueError, match="one label per latent"):
        flow_matching_loss(model, latents, labels[:2], [4])


# ---------------------------------------------------------------------------------------------------------------
# One pass, a prefix per sample
# ---------------------------------------------------------------------------------------------------------------


def test_per_sample_prefixes_in_one_pass_equal_each_sample_run_alone(model):
    """Loss and gradients of the one-pass masked loss == the mean over samples of each sample alone on its first
    c'_i channels, with the same t and noise (drawn as draw_time_and_noise(latents, generator) draws them)."""
    generator = torch.Generator().manual_seed(3)
    latents, labels = torch.randn(6, C, S, S, generator=generator), torch.tensor([0, 3, 3, 5, 9, 2])
    channels = torch.tensor([4, 16, 8, 4, 12, 16])
    model.zero_grad()
    loss, logs = flow_matching_loss(model, latents, labels, channels, generator=torch.Generator().manual_seed(8))
    loss.backward()
    one_pass = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    t, noise = draw_time_and_noise(latents, torch.Generator().manual_seed(8))
    model.zero_grad()
    alone = []
    for i, c in enumerate(channels.tolist()):
        loss_i = flow_matching_pass(
            model, latents[i : i + 1, :c], labels[i : i + 1], t[i : i + 1], noise[i : i + 1, :c]
        )
        alone.append(loss_i)
    reference = torch.stack(alone).mean()
    reference.backward()
    torch.testing.assert_close(loss, reference, atol=1e-5, rtol=1e-5)
    for name, grad in one_pass.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, atol=1e-5, rtol=1e-4, msg=name)
    torch.testing.assert_close(logs["loss_c4"], (alone[0] + alone[3]).detach() / 2, atol=1e-5, rtol=1e-5)
    assert sorted(logs) == ["loss", "loss_c12", "loss_c16", "loss_c4", "loss_c8"]
    model.zero_grad()


def test_per_sample_prefixes_are_checked(model, batch):
    latents, labels = batch
    with pytest.raises(ValueError, match=r"int64 of shape \(3,\)"):
        flow_matching_loss(model, latents, labels, torch.tensor([4, 8]))
    with pytest.raises(ValueError, match=r"int64 of shape"):
        flow_matching_loss(model, latents, labels, torch.tensor([4.0, 8.0, 16.0]))
    with pytest.raises(ValueError, match=r"values \[0, 17\] outside 1..16"):
        flow_matching_loss(model, latents, labels, torch.tensor([0, 8, 17]))
