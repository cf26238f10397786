"""SiT flow-matching loss with augmented diffusion training over latent channel prefixes (paper Eq. 2).

SiT objective (official ``dc_gen/c2icore/diffusioncore/models/sit_sampler/{transport,path}.py``,
``create_transport("Linear", "velocity")``): for data x1 and noise x0 ~ N(0, I), t ~ U[0, 1] per sample,

    x_t = t * x1 + (1 - t) * x0,      u_t = x1 - x0,      loss = mean (v_theta(x_t, t, y) - u_t)^2

(t = 0 is noise, t = 1 is data; no loss weighting). Augmented diffusion training (official
``dc_gen/c2icore/trainer.py``: ``prepare_batch`` draws the prefixes, ``model_forward`` runs one pass per prefix): for
each drawn prefix c' the whole batch is passed as ``latents[:, :c']`` with the same labels; each pass draws its own
t, noise and (inside the model, in training mode) label dropout; the model sees and predicts only the first c'
channels, so the pass's loss is a mean over B x c' x H x W (normalised by the *active* channels); the per-prefix losses
are averaged with equal weight. This is paper Eq. 2 written with truncation instead of a mask:

    || u_t * m - v_theta(x_t * m, t, y) * m ||^2 / (B * c' * H * W),     m = (1 x c', 0 x (C - c'))

which is the same number because the model's patch embedding is linear in its input channels (zero channels
contribute nothing, ``USiTTransformer2DModel``'s adaptive input conv) and the masked output channels are exactly the
ones the truncated model does not compute.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dc_ae_hf.checks import check_channel_prefixes

__all__ = ["draw_time_and_noise", "flow_matching_loss", "flow_matching_pass", "linear_interpolant"]


def linear_interpolant(x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SiT linear path (official ``ICPlan.plan``): ``x_t = t * x1 + (1 - t) * x0`` and the velocity ``x1 - x0``.

    Args:
        x1: data latents (B, c', H, W).
        x0: noise of the same shape.
        t: flow time (B,) in [0, 1].
    """
    t_ = t.view(-1, *([1] * (x1.ndim - 1))).to(x1.dtype)  # (B, 1, 1, 1)
    return t_ * x1 + (1 - t_) * x0, x1 - x0


def draw_time_and_noise(
    x1: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw t ~ U[0, 1) of shape (B,) and x0 ~ N(0, I) shaped like ``x1``, in that order.

    With ``generator`` both come from it (on the generator's device, then moved to ``x1``'s device and dtype);
    without, from the global RNG on ``x1``'s device. Official: ``torch.rand`` (CPU) and ``torch.randn_like``.
    """
    if generator is None:
        t = torch.rand(x1.shape[0], device=x1.device)
        x0 = torch.randn_like(x1)
    else:
        t = torch.rand(x1.shape[0], generator=generator, device=generator.device)
        x0 = torch.randn(x1.shape, generator=generator, device=generator.device, dtype=x1.dtype)
    return t.to(x1.device), x0.to(device=x1.device, dtype=x1.dtype)


def flow_matching_pass(
    model: torch.nn.Module, x1: torch.Tensor, class_labels: torch.Tensor, t: torch.Tensor, x0: torch.Tensor
) -> torch.Tensor:
    """One SiT pass on given draws: mean over every element of ``(model(x_t, t, y) - (x1 - x0))^2``.

    ``x1`` may carry only the first c' channels; the model then predicts c' channels and the mean is over
    B x c' x H x W. The prediction is compared in float32 (it may come out of autocast in bf16/fp16).
    """
    x_t, target = linear_interpolant(x1, x0, t)  # each (B, c', H, W)
    out = model(x_t, t, class_labels)
    prediction = out.sample if hasattr(out, "sample") else out  # (B, c', H, W)
    if prediction.shape != target.shape:
        raise ValueError(
            f"the model returned shape {tuple(prediction.shape)} for an input of shape {tuple(x_t.shape)}; a velocity "
            "model must predict exactly the channels it is given"
        )
    # official: mean_flat((model_output - ut) ** 2) per sample, then the batch mean: the same as one overall mean
    return (prediction.float() - target.float()).square().mean()


def flow_matching_loss(
    model: torch.nn.Module,
    latents: torch.Tensor,
    class_labels: torch.Tensor,
    channels: Sequence[int],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Augmented SiT flow-matching loss (paper Eq. 2, official ``C2ICoreTrainer.model_forward``).

    Args:
        model: a velocity model called as ``model(x_t, t, class_labels)`` returning a tensor or an output with
            ``.sample`` (e.g. ``USiTTransformer2DModel``, possibly DDP-wrapped). In training mode it drops labels
            to the null class itself (``class_dropout_prob``), once per pass.
        latents: data latents in diffusion space (already multiplied by the scaling factor), (B, C, H, W).
        class_labels: int64 labels (B,).
        channels: the prefixes c' of this step (``LatentChannelSampler()``); repeats allowed, each is one pass.
        generator: source of t and noise; passes draw in order (t then noise for the first prefix, then for the
            second, ...; see ``draw_time_and_noise``). None uses the global RNG.

    Returns:
        ``(loss, logs)``: the equal-weight mean of the per-prefix losses (a scalar with gradient) and detached
        scalars ``{"loss": ..., "loss_c<c'>": ...}`` (a prefix drawn twice logs the mean of its passes).
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"latents must be a (B, C, H, W) tensor, got {shape}")
    if not isinstance(class_labels, torch.Tensor) or class_labels.shape != (latents.shape[0],):
        shape = tuple(class_labels.shape) if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
        raise ValueError(f"class_labels must be a ({latents.shape[0]},) tensor (one label per latent), got {shape}")
    channels = check_channel_prefixes("channels", channels, latents.shape[1])

    losses, per_prefix = [], {}
    for c in channels:
        x1 = latents[:, :c]  # (B, c', H, W): the first c' channels only
        t, x0 = draw_time_and_noise(x1, generator)  # (B,), (B, c', H, W): a fresh draw per pass
        loss_c = flow_matching_pass(model, x1, class_labels, t, x0)
        losses.append(loss_c)
        per_prefix.setdefault(c, []).append(loss_c.detach())
    loss = torch.stack(losses).mean()  # equal weight per pass
    logs = {"loss": loss.detach()}
    logs.update({f"loss_c{c}": torch.stack(values).mean() for c, values in sorted(per_prefix.items())})
    return loss, logs
