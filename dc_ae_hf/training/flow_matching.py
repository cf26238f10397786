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

The same identity lets every sample of a batch have its own prefix c'_i in ONE pass (`per_sample_flow_matching_loss`,
``flow_matching_loss`` with a tensor of prefixes): zero each sample's channels >= c'_i and take its loss over its
first c'_i channels only. That is not the official schedule (one pass per prefix on the whole batch) but the same
family of objectives at the cost of plain training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dc_ae_hf.checks import check_channel_prefixes

__all__ = [
    "draw_time_and_noise",
    "flow_matching_loss",
    "flow_matching_pass",
    "linear_interpolant",
    "per_sample_flow_matching_loss",
]


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
    channels: Sequence[int] | torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Augmented SiT flow-matching loss (paper Eq. 2), one pass per prefix or one pass for per-sample prefixes.

    Args:
        model: a velocity model called as ``model(x_t, t, class_labels)`` returning a tensor or an output with
            ``.sample`` (e.g. ``USiTTransformer2DModel``, possibly DDP-wrapped). In training mode it drops labels
            to the null class itself (``class_dropout_prob``), once per pass.
        latents: data latents in diffusion space (already multiplied by the scaling factor), (B, C, H, W).
        class_labels: int64 labels (B,).
        channels: either a list of prefixes c' (``LatentChannelSampler(step)``; repeats allowed): one pass per
            prefix on ``latents[:, :c']``, the official ``C2ICoreTrainer.model_forward``; or a 1-D int64 tensor of
            length B (``LatentChannelSampler.per_sample``): sample i uses prefix ``channels[i]``, all in ONE pass
            (paper Eq. 2 in mask form, see `per_sample_flow_matching_loss`).
        generator: source of t and noise; list form: passes draw in order (t then noise for the first prefix, then
            for the second, ...; see ``draw_time_and_noise``); tensor form: one draw for the whole batch. None uses
            the global RNG.

    Returns:
        ``(loss, logs)``: the loss (a scalar with gradient: the equal-weight mean of the per-prefix losses, or of
        the per-sample losses) and detached scalars ``{"loss": ..., "loss_c<c'>": ...}`` (a prefix drawn twice logs
        the mean of its passes; per sample, the mean over the samples with that prefix).
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"latents must be a (B, C, H, W) tensor, got {shape}")
    if not isinstance(class_labels, torch.Tensor) or class_labels.shape != (latents.shape[0],):
        shape = tuple(class_labels.shape) if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
        raise ValueError(f"class_labels must be a ({latents.shape[0]},) tensor (one label per latent), got {shape}")
    if isinstance(channels, torch.Tensor):
        return per_sample_flow_matching_loss(model, latents, class_labels, channels, generator)
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


def per_sample_flow_matching_loss(
    model: torch.nn.Module,
    latents: torch.Tensor,
    class_labels: torch.Tensor,
    channels: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Paper Eq. 2 with a prefix per sample, in one forward pass (the cost of plain training).

    With m_i = (1 x c'_i, 0 x (C - c'_i)) the mask of sample i, t and noise drawn once for the batch exactly as
    ``draw_time_and_noise(latents, generator)`` draws them (t of shape (B,), then noise of shape (B, C, H, W)):

        x_t,i = (t_i x1_i + (1 - t_i) x0_i) * m_i,      loss_i = || (v_theta(x_t, t, y)_i - (x1_i - x0_i)) * m_i ||^2
                                                                 / (c'_i * H * W),      loss = mean_i loss_i

    Because the model's patch embedding is linear in its input channels (zeroed channels contribute nothing) and its
    output projection is sliced per channel, sample i's masked loss equals the loss of running it alone on
    ``latents[i:i+1, :c'_i]`` with the same t and noise (tested to 1e-5 in loss and gradients). The official
    recipe instead runs one pass per drawn prefix on the whole batch (`flow_matching_loss` with a list).

    Args:
        channels: int64 (B,), sample i's prefix c'_i in 1..C; on the CPU (as `LatentChannelSampler.per_sample`
            makes it) the range is checked without a device synchronisation.
    """
    b, c, h, w = latents.shape
    if channels.dtype != torch.int64 or channels.shape != (b,):
        raise ValueError(
            f"channels as a tensor must be int64 of shape ({b},) (one prefix per sample), got {channels.dtype} of "
            f"shape {tuple(channels.shape)}"
        )
    if channels.device.type == "cpu" and not bool(((channels >= 1) & (channels <= c)).all()):
        bad = sorted({int(v) for v in channels.tolist() if not 1 <= v <= c})
        raise ValueError(f"channels has values {bad} outside 1..{c} (channels of latents)")
    t, x0 = draw_time_and_noise(latents, generator)  # (B,), (B, C, H, W): one draw for the batch
    prefix = channels.to(latents.device)
    mask = (torch.arange(c, device=latents.device) < prefix[:, None]).to(latents.dtype)[:, :, None, None]  # (B,C,1,1)
    x_t, target = linear_interpolant(latents * mask, x0 * mask, t)  # (B, C, H, W), zero beyond each c'_i
    out = model(x_t, t, class_labels)
    prediction = out.sample if hasattr(out, "sample") else out  # (B, C, H, W)
    if prediction.shape != target.shape:
        raise ValueError(
            f"the model returned shape {tuple(prediction.shape)} for an input of shape {tuple(x_t.shape)}; a velocity "
            "model must predict exactly the channels it is given"
        )
    squared = (prediction.float() - target.float()).square() * mask.float()  # (B, C, H, W), active channels only
    per_sample = squared.sum(dim=(1, 2, 3)) / (prefix.float() * h * w)  # (B,): mean over each sample's c'_i
    loss = per_sample.mean()
    logs = {"loss": loss.detach()}
    detached = per_sample.detach()
    for value in sorted(set(channels.tolist())):  # masked means: no boolean indexing (a device sync)
        selected = (prefix == value).float()
        logs[f"loss_c{value}"] = (detached * selected).sum() / selected.sum()
    return loss, logs
