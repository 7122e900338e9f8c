"""The real-time text-guided fusion network (luminance in, luminance out).

Heavy work runs at low resolution; the full-resolution part is cheap arithmetic::

    IR, VIS (full) ─► 1/4 pools ─► DAFE per modality ─► merge ─► 1/8 ─► ITI(text tokens) ─► DAFE
                                                          └──────────── skip ──────────────┘
                                                     decoder at 1/4 ─► per-pixel maps at 1/4
    fused = gain * (w * base_IR + (1 - w) * base_VIS) + bias + g_IR * detail_IR + g_VIS * detail_VIS

``base`` is each source smoothed (its 1/4-scale average), ``detail = source - base``. The formula
is affine in the full-resolution sources, so it is evaluated as ``a_IR * IR + a_VIS * VIS + offset``
with the three coefficients computed at 1/4 scale and upsampled (see :meth:`FusionNet.affine_coefficients`):
the full-resolution work is one 3-channel interpolation and two multiply-adds.
The per-pixel affine (gain, bias) lets the network brighten a dark visible image or stretch a flat
thermal one, which convex weights alone cannot; to know how much, the merged features are modulated
by each image's global statistics (mean and standard deviation of both sources), which a stack of
3x3 convolutions at low resolution cannot see. Text tokens are learned per intent and mixed by
the router's weights, so any prompt the router understands conditions the network, and the text
encoder never runs per frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from streamfuse.models.layers import DAFE, ITI, conv3x3

ARCHITECTURE = "streamfuse-fusionnet-v3"

#: Range of the per-pixel gain: exp(+-log(4)) = 0.25 .. 4.
_LOG_MAX_GAIN = math.log(4.0)

#: Sum of the mean absolute 1/4-scale changes of both sources (intensities in [0, 1]) above which
#: temporal smoothing treats a frame as a new scene and does not carry decisions over.
SCENE_CUT = 0.08

#: Channels of the temporal memory: the head's 5 maps and the two 1/4-scale sources.
MEMORY_CHANNELS = 7


def _padding(height: int, width: int) -> tuple[int, int]:
    """Rows and columns added so that both sides are multiples of 8 (the 1/8-scale stage)."""
    return (-height) % 8, (-width) % 8


class FusionNet(nn.Module):
    """Text-conditioned luminance fusion.

    Args:
        intents: Intent ids, in the order of the weight vectors given to :meth:`forward`.
        channels: Feature channels per modality at 1/4 scale (twice that after merging).
        token_dim: Size of the text tokens.
        tokens_per_intent: Learned tokens per intent.
    """

    def __init__(self, intents: Sequence[str], *, channels: int = 16, token_dim: int = 32,
                 tokens_per_intent: int = 4) -> None:
        super().__init__()
        self.intents = list(intents)
        self.config = {"channels": channels, "token_dim": token_dim, "tokens_per_intent": tokens_per_intent}
        wide = 2 * channels
        self.stem_ir = nn.Sequential(conv3x3(2, channels), nn.LeakyReLU(0.1), DAFE(channels))
        self.stem_vis = nn.Sequential(conv3x3(2, channels), nn.LeakyReLU(0.1), DAFE(channels))
        self.merge = nn.Sequential(nn.Conv2d(2 * channels, wide, 1), nn.LeakyReLU(0.1))
        self.global_film = nn.Linear(4, 2 * wide)
        nn.init.zeros_(self.global_film.weight)
        nn.init.zeros_(self.global_film.bias)
        self.down = nn.Sequential(conv3x3(wide, wide, stride=2), nn.LeakyReLU(0.1))
        self.iti = ITI(wide, token_dim)
        self.low = DAFE(wide)
        self.decode = nn.Sequential(nn.Conv2d(2 * wide, channels, 1), nn.LeakyReLU(0.1),
                                    conv3x3(channels, channels), nn.LeakyReLU(0.1))
        self.head = nn.Conv2d(channels, 5, 3, padding=1)
        self.tokens = nn.Parameter(torch.randn(len(self.intents), tokens_per_intent, token_dim) * 0.1)
        nn.init.zeros_(self.head.weight)  # start as an even blend with unit gains: a sane fusion before training
        nn.init.zeros_(self.head.bias)

    def intent_weights(self, weights: dict[str, float]) -> torch.Tensor:
        """A ``(1, K)`` weight tensor from ``{intent_id: weight}`` (unknown ids are ignored)."""
        vector = torch.tensor([[float(weights.get(i, 0.0)) for i in self.intents]])
        total = vector.sum()
        if total <= 0:
            vector[0, self.intents.index("balanced")] = 1.0
            total = vector.sum()
        return vector / total

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, weights: torch.Tensor,
                memory: torch.Tensor | None = None, momentum: float = 0.0):
        """Fuse luminance images.

        Args:
            ir: ``(B, 1, H, W)`` infrared in [0, 1].
            vis: ``(B, 1, H, W)`` visible luminance in [0, 1].
            weights: ``(B, K)`` or ``(1, K)`` intent weights (rows sum to 1).
            memory: For video: the memory returned with the previous frame of each item's stream,
                ``(B, 7, H/4, W/4)`` after padding; a row of NaN means "no previous frame". With it,
                the fusion decisions (the head's maps) are blended with the previous frame's:
                ``momentum * previous + (1 - momentum) * current``, which removes frame-to-frame
                flicker of the weights on a steady scene. The sources' detail always comes from
                the current frame, and an item whose 1/4-scale sources changed by more than
                :data:`SCENE_CUT` (mean absolute difference) starts afresh.
            momentum: Weight of the previous frame's decisions (0 disables).

        Returns:
            ``(B, 1, H, W)`` fused luminance in [0, 1] (any size works: padded internally); with
            ``memory`` given, also the new memory for the next frame.
        """
        height, width = ir.shape[-2:]
        pad_h, pad_w = _padding(height, width)
        if pad_h or pad_w:
            ir = F.pad(ir, (0, pad_w, 0, pad_h), mode="replicate")
            vis = F.pad(vis, (0, pad_w, 0, pad_h), mode="replicate")
        full = ir.shape[-2:]
        ir4, vis4 = F.avg_pool2d(ir, 4), F.avg_pool2d(vis, 4)
        channels_last = torch.channels_last  # several times faster for these small convolutions on CPU
        f_ir = self.stem_ir(torch.cat([ir4, F.max_pool2d(ir, 4)], dim=1).contiguous(memory_format=channels_last))
        f_vis = self.stem_vis(torch.cat([vis4, F.max_pool2d(vis, 4)], dim=1).contiguous(memory_format=channels_last))
        skip = self.merge(torch.cat([f_ir, f_vis], dim=1))
        statistics = torch.cat([ir4.mean(dim=(2, 3)), ir4.std(dim=(2, 3)), vis4.mean(dim=(2, 3)), vis4.std(dim=(2, 3))],
                               dim=1)
        gamma, beta = self.global_film(statistics).chunk(2, dim=1)
        skip = skip * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        tokens = torch.einsum("bk,ktd->btd", weights.to(ir.dtype), self.tokens).expand(ir.shape[0], -1, -1)
        low = self.low(self.iti(self.down(skip), tokens))
        up = F.interpolate(low, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        maps = self.head(self.decode(torch.cat([skip, up], dim=1)))
        if memory is not None:
            maps = self._blend_with_memory(maps, ir4, vis4, memory, momentum)
        coefficients = self.affine_coefficients(maps, ir4, vis4)
        coefficients = F.interpolate(coefficients.contiguous(), size=full, mode="bilinear", align_corners=False)
        fused = coefficients[:, 0:1] * ir + coefficients[:, 1:2] * vis + coefficients[:, 2:3]
        fused = fused[..., :height, :width].clamp(0.0, 1.0)
        if memory is None:
            return fused
        return fused, torch.cat([maps, ir4, vis4], dim=1)

    @staticmethod
    def memory_shape(height: int, width: int) -> tuple[int, int, int]:
        """Shape of one item's temporal memory for ``height`` x ``width`` frames (the padded 1/4 grid)."""
        pad_h, pad_w = _padding(height, width)
        return MEMORY_CHANNELS, (height + pad_h) // 4, (width + pad_w) // 4

    @staticmethod
    def _blend_with_memory(maps: torch.Tensor, ir4: torch.Tensor, vis4: torch.Tensor, memory: torch.Tensor,
                           momentum: float) -> torch.Tensor:
        """The head's maps blended with the previous frame's, per item, unless it has none or the scene cut."""
        if memory.shape[0] != maps.shape[0] or memory.shape[2:] != maps.shape[2:]:
            raise ValueError(f"memory of shape {tuple(memory.shape)} does not fit this batch "
                             f"({maps.shape[0]} x {MEMORY_CHANNELS} x {maps.shape[2]} x {maps.shape[3]})")
        previous_maps, previous_ir4, previous_vis4 = memory[:, :5], memory[:, 5:6], memory[:, 6:7]
        change = (ir4 - previous_ir4).abs().mean(dim=(1, 2, 3)) + (vis4 - previous_vis4).abs().mean(dim=(1, 2, 3))
        keep = (change <= SCENE_CUT).to(maps.dtype) * momentum  # NaN (no memory) compares False: fresh start
        keep = keep[:, None, None, None]
        return (1 - keep) * maps + keep * torch.nan_to_num(previous_maps)

    @staticmethod
    def affine_coefficients(maps: torch.Tensor, ir4: torch.Tensor, vis4: torch.Tensor) -> torch.Tensor:
        """Turn the head's five 1/4-scale maps into the local affine model ``(a_IR, a_VIS, offset)``.

        The maps are a fusion weight ``w``, a gain, a bias and one detail gain per source; with
        ``base = w * IR4 + (1 - w) * VIS4`` the fused image is
        ``gain * base + bias + g_IR * (IR - IR4) + g_VIS * (VIS - VIS4)``, which is affine in the
        full-resolution sources: ``g_IR * IR + g_VIS * VIS + (gain * base + bias - g_IR * IR4 - g_VIS * VIS4)``.
        Computing the three coefficients at 1/4 scale and upsampling only them keeps the
        full-resolution work to one interpolation and two multiply-adds.
        """
        weight_ir = torch.sigmoid(maps[:, 0:1])
        gain = torch.exp(torch.tanh(maps[:, 1:2]) * _LOG_MAX_GAIN)
        bias = 0.5 * torch.tanh(maps[:, 2:3])
        gain_ir_detail, gain_vis_detail = 2 * torch.sigmoid(maps[:, 3:4]), 2 * torch.sigmoid(maps[:, 4:5])
        base = vis4 + weight_ir * (ir4 - vis4)
        offset = gain * base + bias - gain_ir_detail * ir4 - gain_vis_detail * vis4
        return torch.cat([gain_ir_detail, gain_vis_detail, offset], dim=1)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
