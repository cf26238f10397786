"""USiT: the U-ViT backbone trained and sampled as a SiT velocity model (DC-AE 1.0 / 1.5 class-to-image models).

Official code: ``dc_gen/c2icore/diffusioncore/models/uvit.py`` (UViT, Block, Attention, AdaptiveLinear),
``dc_gen/c2icore/models/ops/{input_embed,label_embed,timestep_embed}.py`` (AdaptivePatchEmbed, LabelEmbedder,
timestep_embedding). The network is plain U-ViT (Bao et al., 2022): a ViT over [label token, time token, patch tokens]
with long skip connections from the first half of the blocks to the second half. "USiT" only means that it is trained
with the SiT linear flow-matching objective and sampled with an ODE solver (``dc_ae_hf/pipelines/sampling.py``).

DC-AE 1.5 adds *adaptive channels*: a model trained on a structured latent space accepts the first c' <= in_channels
latent channels and predicts a velocity for exactly those c' channels (official ``AdaptivePatchEmbed`` /
``AdaptiveLinear``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from dc_ae_hf.loading import PretrainedChecksMixin
from dc_ae_hf.presets import USIT_PRESETS
from dc_ae_hf.self_contained import SelfContainedModelMixin


class AdaptiveInputConv2d(nn.Conv2d):
    """Conv2d that also accepts only the first c' <= in_channels input channels (official ``AdaptivePatchEmbed``).

    Using weight[:, :c'] equals zero-padding the input to all channels (the conv is linear; bias unchanged).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight[:, : x.shape[1]], self.bias)


class AdaptiveOutputLinear(nn.Linear):
    """Linear that can compute only its first ``num_rows`` outputs (official ``AdaptiveLinear``).

    The head's rows are laid out (p1 p2 C) (official ``unpatchify``). With c' input channels the official model keeps
    the first c' * p * p rows and unpatchifies them as (p1 p2 c'). For patch_size 1 (every official model) these are
    exactly the rows of the first c' channels; for patch_size > 1 they are not, and this port follows the official
    arithmetic anyway (parity first): such a model is self-consistent in training and sampling, but its c'-channel
    output is not the first c' channels of its full output.
    """

    def forward(self, x: torch.Tensor, num_rows: int | None = None) -> torch.Tensor:
        if num_rows is None or num_rows == self.out_features:
            return super().forward(x)
        return F.linear(x, self.weight[:num_rows], self.bias[:num_rows])


class USiTPatchEmbed(nn.Module):
    """Conv patch embedding (kernel = stride = patch_size) followed by flattening to tokens."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int):
        super().__init__()
        self.proj = AdaptiveInputConv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, D), tokens in row-major (h, w) order


class USiTAttention(nn.Module):
    """Multi-head self-attention: qkv Linear without bias, output Linear with bias, no qk-norm (official Attention)."""

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.to_qkv = nn.Linear(hidden_size, 3 * num_heads * head_dim, bias=False)
        self.to_out = nn.Linear(num_heads * head_dim, hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        # qkv channel layout (3, heads, head_dim): official rearrange "B L (K H D) -> K B H L D"
        qkv = self.to_qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, Dh)
        # official "flash" mode: SDPA on fp32 q, k, v (scale head_dim**-0.5); the result goes back to the input dtype
        q, k, v = qkv.float().unbind(0)  # each (B, H, N, Dh)
        out = F.scaled_dot_product_attention(q, k, v).to(x.dtype)  # (B, H, N, Dh)
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)  # (B, N, H*Dh)
        return self.to_out(out)  # (B, N, D)


class USiTMLP(nn.Module):
    """fc1 -> exact GELU -> fc2 (timm ``Mlp`` as used by the official Block)."""

    def __init__(self, hidden_size: int, mlp_hidden_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class USiTBlock(nn.Module):
    """Pre-LN transformer block; out-blocks first merge the long skip: x = Linear(cat[x, skip]) (official Block)."""

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int, mlp_ratio: float, skip: bool = False):
        super().__init__()
        self.skip_linear = nn.Linear(2 * hidden_size, hidden_size) if skip else None
        self.norm1 = nn.LayerNorm(hidden_size)  # eps 1e-5, affine
        self.attn = USiTAttention(hidden_size, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.mlp = USiTMLP(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (B, L, 2D) -> (B, L, D)
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class USiTTransformer2DModel(PretrainedChecksMixin, SelfContainedModelMixin, ModelMixin, ConfigMixin):
    r"""USiT (U-ViT + SiT) class-conditional velocity model with DC-AE 1.5 adaptive channels.

    Time convention (SiT, *not* diffusers' flow-match sigma): ``timestep`` is the flow time t in [0, 1] with
    ``x_t = t * data + (1 - t) * noise``, so t = 0 is pure noise and t = 1 is data; the model predicts the velocity
    ``data - noise``. A diffusers flow-match scheduler's sigma maps to ``t = 1 - sigma`` and its model output to
    ``-velocity`` (``DCAE15Pipeline`` does this).

    Args:
        sample_size (`int`, defaults to 8): latent height = width the learned position embedding covers.
        patch_size (`int`, defaults to 1): patch size of the conv patch embedding (1 in all official models).
        in_channels (`int`, defaults to 128): latent channels C; inputs may carry only the first c' <= C channels.
        num_layers (`int`, defaults to 28): the paper's depth, even: ``num_layers // 2`` in-blocks, one mid-block,
            ``num_layers // 2`` out-blocks (28 -> 29 blocks).
        num_attention_heads (`int`, defaults to 32): attention heads.
        attention_head_dim (`int`, defaults to 64): channels per head; hidden size = heads x head_dim.
        mlp_ratio (`float`, defaults to 4.0): MLP hidden size / hidden size.
        num_classes (`int`, defaults to 1000): number of classes; the null (CFG) class id is ``num_classes``.
        class_dropout_prob (`float`, defaults to 0.1): training-time probability of replacing a label by the null
            class; > 0 adds the null row to the label table (official ``LabelEmbedder``).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["USiTBlock"]
    _skip_layerwise_casting_patterns = ["patch_embed", "pos_embed", "label_embed", "norm"]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 8,
        patch_size: int = 1,
        in_channels: int = 128,
        num_layers: int = 28,
        num_attention_heads: int = 32,
        attention_head_dim: int = 64,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
    ):
        super().__init__()
        for name, value in [("sample_size", sample_size), ("patch_size", patch_size), ("in_channels", in_channels)]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        for name, value in [("num_attention_heads", num_attention_heads), ("attention_head_dim", attention_head_dim)]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if sample_size % patch_size != 0:
            raise ValueError(f"`sample_size` ({sample_size}) must be divisible by `patch_size` ({patch_size}).")
        if not isinstance(num_layers, int) or num_layers < 0 or num_layers % 2 != 0:
            raise ValueError(f"`num_layers` must be an even int >= 0 (the paper's depth), got {num_layers!r}.")
        if not mlp_ratio > 0:
            raise ValueError(f"`mlp_ratio` must be > 0, got {mlp_ratio!r}.")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be an int >= 1, got {num_classes!r}.")
        if not 0.0 <= class_dropout_prob < 1.0:
            raise ValueError(f"`class_dropout_prob` must be in [0, 1), got {class_dropout_prob!r}.")

        hidden_size = num_attention_heads * attention_head_dim
        self.hidden_size = hidden_size
        self.num_extra_tokens = 2  # label token, time token
        grid = sample_size // patch_size

        self.patch_embed = USiTPatchEmbed(in_channels, hidden_size, patch_size)
        # official LabelEmbedder: one extra (null) row iff class_dropout_prob > 0
        self.label_embed = nn.Embedding(num_classes + int(class_dropout_prob > 0), hidden_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_extra_tokens + grid * grid, hidden_size))
        block_kwargs = dict(
            hidden_size=hidden_size, num_heads=num_attention_heads, head_dim=attention_head_dim, mlp_ratio=mlp_ratio
        )
        self.in_blocks = nn.ModuleList([USiTBlock(**block_kwargs) for _ in range(num_layers // 2)])
        self.mid_block = USiTBlock(**block_kwargs)
        self.out_blocks = nn.ModuleList([USiTBlock(**block_kwargs, skip=True) for _ in range(num_layers // 2)])
        self.norm_out = nn.LayerNorm(hidden_size)
        self.proj_out = AdaptiveOutputLinear(hidden_size, patch_size * patch_size * in_channels)  # rows (p1 p2 C)

        self.gradient_checkpointing = False
        self.initialize_weights()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> USiTTransformer2DModel:
        """Randomly initialised model of an official size (``USIT_PRESETS``); ``overrides`` replace config values."""
        if name not in USIT_PRESETS:
            raise ValueError(f"Unknown USiT preset {name!r}; valid presets: {sorted(USIT_PRESETS)}.")
        return cls(**{**USIT_PRESETS[name], **overrides})

    def initialize_weights(self) -> None:
        """Official init (``UViT.initialize_weights`` / ``_init_weights``)."""
        # learned absolute position embedding over all tokens (label, time, patches): trunc-normal std 0.02
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                # every Linear (qkv, attention out, MLP, skip merge, head): trunc-normal std 0.02, bias 0
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # the patch-embedding Conv2d and the label Embedding keep PyTorch's default init (as in the official code)

    def _check_inputs(self, hidden_states: torch.Tensor, timestep, class_labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape and dtype checks only (static under torch.compile: no tensor values are read)."""
        cfg = self.config
        if not isinstance(hidden_states, torch.Tensor) or hidden_states.ndim != 4:
            shape = tuple(hidden_states.shape) if isinstance(hidden_states, torch.Tensor) else type(hidden_states)
            raise ValueError(f"`hidden_states` must be a 4-D tensor (B, C', H, W), got {shape}.")
        b, c, h, w = hidden_states.shape
        if not 1 <= c <= cfg.in_channels:
            raise ValueError(
                f"`hidden_states` has {c} channels; the model accepts 1 to in_channels={cfg.in_channels}."
            )
        p = cfg.patch_size
        if h % p != 0 or w % p != 0:
            raise ValueError(f"`hidden_states` spatial size {h}x{w} is not divisible by patch_size={p}.")
        if h != cfg.sample_size or w != cfg.sample_size:
            raise ValueError(
                f"`hidden_states` spatial size {h}x{w} does not match the position-embedding grid "
                f"({cfg.sample_size}x{cfg.sample_size}, sample_size={cfg.sample_size})."
            )
        timestep = torch.as_tensor(timestep, device=hidden_states.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        if timestep.shape != (b,):
            raise ValueError(f"`timestep` must be a scalar or have shape ({b},), got {tuple(timestep.shape)}.")
        if not isinstance(class_labels, torch.Tensor):
            class_labels = torch.as_tensor(class_labels, device=hidden_states.device)
        if class_labels.dtype.is_floating_point or class_labels.dtype == torch.bool or class_labels.shape != (b,):
            raise ValueError(
                f"`class_labels` must be an integer tensor of shape ({b},), got dtype {class_labels.dtype} "
                f"and shape {tuple(class_labels.shape)}."
            )
        # The label range is not checked here: that needs the label values on the host (a device sync and a graph
        # break under torch.compile). DCAE15Pipeline validates labels once per call; nn.Embedding rejects ids
        # outside [0, num_classes] (num_classes = the null class) itself.
        return timestep, class_labels.long()

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        class_labels: torch.Tensor,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predict the SiT velocity.

        Args:
            hidden_states: x_t, shape (B, c', H, W) with c' <= in_channels and H = W = sample_size.
            timestep: flow time t in [0, 1] (0 = noise, 1 = data), shape (B,) or a scalar; fed unscaled.
            class_labels: int64 labels, shape (B,), in [0, num_classes]; ``num_classes`` is the null class. In
                training mode labels are replaced by the null class with probability ``class_dropout_prob``.
            return_dict: return a ``Transformer2DModelOutput`` instead of a tuple.

        Returns:
            velocity ``data - noise`` of shape (B, c', H, W).
        """
        timestep, class_labels = self._check_inputs(hidden_states, timestep, class_labels)
        b, c, h, w = hidden_states.shape
        p = self.config.patch_size

        # official LabelEmbedder.token_drop: only in training mode
        if self.training and self.config.class_dropout_prob > 0:
            drop = torch.rand(b, device=class_labels.device) < self.config.class_dropout_prob
            class_labels = torch.where(drop, self.config.num_classes, class_labels)

        x = self.patch_embed(hidden_states)  # (B, N, D), N = (H/p) * (W/p)
        # time token: raw sinusoid of t, [cos, sin], freqs exp(-ln(1e4) * i / half), no MLP (official timestep_embedding)
        t_emb = get_timestep_embedding(timestep, self.hidden_size, flip_sin_to_cos=True, downscale_freq_shift=0)
        y_emb = self.label_embed(class_labels)  # (B, D)
        x = torch.cat([y_emb[:, None], t_emb[:, None].to(x.dtype), x], dim=1)  # (B, 2 + N, D): [label, time, patches]
        x = x + self.pos_embed  # (B, 2 + N, D)

        skips = []
        for block in self.in_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x)
            else:
                x = block(x)  # (B, 2 + N, D)
            skips.append(x)
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            x = self._gradient_checkpointing_func(self.mid_block, x)
        else:
            x = self.mid_block(x)  # (B, 2 + N, D)
        for block in self.out_blocks:
            skip = skips.pop()  # long skips: last in, first out
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, skip)
            else:
                x = block(x, skip)  # (B, 2 + N, D)

        x = self.norm_out(x)
        x = self.proj_out(x, num_rows=p * p * c)  # (B, 2 + N, p*p*c'), official AdaptiveLinear row slice
        x = x[:, self.num_extra_tokens :]  # (B, N, p*p*c')
        # unpatchify "B (h w) (p1 p2 C) -> B C (h p1) (w p2)"
        x = x.reshape(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4)  # (B, c', h, p1, w, p2)
        sample = x.reshape(b, c, h, w).contiguous()  # (B, c', H, W); its own memory, not a view (FSDP2 warns)

        if not return_dict:
            return (sample,)
        return Transformer2DModelOutput(sample=sample)
