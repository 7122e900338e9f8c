"""Building blocks of the fusion network: dual-attention feature extraction (DAFE) and image-text
interaction (ITI), after CMI-Fusion (Li, Song, Gao et al., Signal Processing 237, 2025), sized for
real time: they run at 1/4 and 1/8 of the input resolution.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution with 'same' padding (for stride 1)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: re-weight channels from their global average and maximum responses."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Adaptive pooling rather than mean / amax over (2, 3): on channels-last CPU tensors amax over the
        # spatial dimensions is about 5x slower. Both statistics go through the MLP as one batch.
        batch = x.shape[0]
        pooled = self.mlp(torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)]))
        return x * torch.sigmoid(pooled[:batch] + pooled[batch:])


class SpatialAttention(nn.Module):
    """Re-weight positions from the channel-wise mean and maximum maps (a 5x5 convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(maps))


class DAFE(nn.Module):
    """Dual Attention Feature Extraction block: conv, channel attention, spatial attention, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        self.channel = ChannelAttention(channels)
        self.spatial = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.leaky_relu(self.conv1(x), 0.1))
        return F.leaky_relu(x + self.spatial(self.channel(y)), 0.1)


class ITI(nn.Module):
    """Image-Text Interaction: image features attend to text tokens, then are modulated by the text.

    Every position's feature vector is a query; the text tokens give keys and values
    (single-head cross-attention, residual). The pooled text then scales and shifts the features
    (FiLM), which lets a prompt change brightness-level behaviour everywhere at once.

    Args:
        channels: Image feature channels.
        token_dim: Text token size.
    """

    def __init__(self, channels: int, token_dim: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, token_dim, 1)
        self.key = nn.Linear(token_dim, token_dim)
        self.value = nn.Linear(token_dim, channels)
        self.film = nn.Linear(token_dim, 2 * channels)
        self.scale = token_dim ** -0.5

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, C, H, W)`` features; tokens ``(B, T, D)`` text tokens."""
        b, c, h, w = x.shape
        queries = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, D)
        attention = torch.softmax(queries @ self.key(tokens).transpose(1, 2) * self.scale, dim=-1)  # (B, HW, T)
        attended = (attention @ self.value(tokens)).transpose(1, 2).reshape(b, c, h, w)
        gamma, beta = self.film(tokens.mean(dim=1)).chunk(2, dim=-1)
        return (x + attended) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


def _paired(first: nn.Module, second: nn.Module, name: str) -> torch.Tensor:
    """The parameter ``name`` of two modules stacked along the output channels (a grouped layer's)."""
    return torch.cat([getattr(first, name), getattr(second, name)])


def paired_conv(x: torch.Tensor, first: nn.Conv2d, second: nn.Conv2d) -> torch.Tensor:
    """``first`` on the first half of ``x``'s channels and ``second`` on the other half, as one grouped
    convolution (the outputs stacked the same way)."""
    return F.conv2d(x, _paired(first, second, "weight"), _paired(first, second, "bias"),
                    stride=first.stride, padding=first.padding, groups=2)


def paired_dafe(x: torch.Tensor, first: DAFE, second: DAFE) -> torch.Tensor:
    """Two :class:`DAFE` blocks, ``first`` on the first half of ``x``'s channels and ``second`` on the
    other, in one pass of grouped operations: the same result as each block on its half, with half as many
    operations (small feature maps on a CPU are bound by their number, not their size)."""
    batch, channels, height, width = x.shape
    y = paired_conv(F.leaky_relu(paired_conv(x, first.conv1, second.conv1), 0.1), first.conv2, second.conv2)
    mlp_a, mlp_b = first.channel.mlp, second.channel.mlp
    pooled = torch.cat([F.adaptive_avg_pool2d(y, 1), F.adaptive_max_pool2d(y, 1)])
    pooled = paired_conv(F.relu(paired_conv(pooled, mlp_a[0], mlp_b[0])), mlp_a[2], mlp_b[2])
    y = y * torch.sigmoid(pooled[:batch] + pooled[batch:])
    groups = y.view(batch, 2, channels // 2, height, width)
    maps = torch.stack([groups.mean(dim=2), groups.amax(dim=2)], dim=2).view(batch, 4, height, width)
    spatial = torch.sigmoid(paired_conv(maps, first.spatial.conv, second.spatial.conv))
    y = (groups * spatial.view(batch, 2, 1, height, width)).view(batch, channels, height, width)
    return F.leaky_relu(x + y, 0.1)
