"""The real-time text-guided fusion network (luminance in, luminance out).

The network decides where, and how strongly, infrared goes into each band of the visible image;
the band composition itself (:mod:`streamfuse.models.bands`) is cheap, mostly half-resolution
arithmetic::

    IR, VIS (full) ─► bands (fine, D1, D2, base; guided-filter chain at 1/2)
                      │ 1/4: mean + D1 magnitude per source, fixed-rule logits
                      ▼ pooled to 1/8 (the trunk's scale, trunk_scale 8)
       DAFE per modality ─► merge (+ rule) ─► 1/16 ─► ITI(text tokens) ─► DAFE
                                └──────────────── skip ───────────────────────┘
                      decoder at 1/8 ─► 5 maps, upsampled to 1/4: injection logits of D1, D2, base
                                        (added to the rule's), infrared detail gain, finest-band gain
       fused = compose(bands, maps)   (visible base kept, infrared injected per band, stronger
                                       finest detail per pixel)

The trunk (stems, merge, text interaction, decoder) runs at ``1/trunk_scale`` of the frame (1/8 for the
shipped network: a quarter of the cost of 1/4, and its residual is a smooth correction of the rule's
full 1/4-scale logits anyway), and a frame much larger than the training images is looked at at about
the training scale (:func:`trunk_factor`): the 1/4-scale features are pooled before the trunk and its
residual upsampled after.

The head starts at zero, so an untrained network is the fixed rule; training moves it where the
rule fails (glare, faint warm targets in dark regions), and weight decay on the head keeps it near
the rule elsewhere. Text tokens are learned per intent and mixed by the router's weights. Intents
about a damaged visible image act only where the damage is (:data:`LOCAL_INTENTS`): their maps are
blended with the balanced maps through a gate computed from the visible image
(:func:`~streamfuse.models.rule.damage_gates`: saturated, dark, or
without local contrast where the thermal image has it), so a prompt never changes a region where the
visible camera is fine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from streamfuse.models import bands
from streamfuse.models.layers import DAFE, ITI, conv3x3, paired_conv, paired_dafe
from streamfuse.models.rule import LOCAL_INTENTS, MEDICAL_INTENTS, damage_gates

ARCHITECTURE = "streamfuse-fusionnet-v5"

#: Range of the infrared detail gain: exp(+-log(3)) = 1/3 .. 3 (stretches a flat thermal image).
_LOG_MAX_IR_GAIN = math.log(3.0)
#: Range of the finest-band gain: 1/2 .. 2 (smooths noise, sharpens).
_LOG_MAX_FINE_GAIN = math.log(2.0)

#: Sum of the mean absolute 1/4-scale changes of both sources (intensities in [0, 1]) above which
#: temporal smoothing treats a frame as a new scene and does not carry decisions over.
SCENE_CUT = 0.08

#: Maps predicted at 1/4 scale: three injection logits, the infrared detail gain, the finest-band gain.
MAPS = bands.COARSE_BANDS + 2

#: Maps whose learned residual applies only in proportion to the prompt's non-balanced share: the base's
#: injection logit and the finest-band gain. Balanced fusion keeps the rule's base and the whole finest
#: band (:meth:`FusionNet._balanced_keeps_the_rule`).
RULE_UNDER_BALANCED = (bands.COARSE_BANDS - 1, MAPS - 1)
#: The first maps, the detail bands' injection logits (D1, D2), whose learned residual the balanced share of
#: a prompt may move within a frame but not on average over it (:meth:`FusionNet._balanced_keeps_the_rule`).
DETAIL_MAPS = bands.COARSE_BANDS - 1

#: The learned residual moves each injection logit by at most this much (a smooth bound,
#: ``B tanh(r / B)``). Unbounded, the shipped network answered a fogged night frame with residuals of
#: +47 logits on average and up to +177, so that even a 1% damage gate let them through as black blobs.
#: Chosen among 8 and 4 on training pairs (docs/model.md, "v5.1").
RESIDUAL_BOUND = 4.0

#: Channels of the temporal memory: the maps and the two 1/4-scale sources.
MEMORY_CHANNELS = MAPS + 2

#: Inputs are padded (replicate) to a multiple of this: the 1/8-scale stage.
PAD_MULTIPLE = 8

#: Longest side (pixels) of the images the network was trained on. The trunk looks at a larger frame
#: pooled back to about this scale (:func:`trunk_factor`): its learned residual depends on the size of
#: things in pixels (on MSRS training pairs upscaled 2x its Qabf gap to the rule was 0.018 unpooled,
#: 0.006 pooled, against 0.001 at their own size).
TRAINING_SCALE = 640


def trunk_factor(height: int, width: int, trunk_scale: int) -> int:
    """How much the 1/4-scale features of a ``height`` x ``width`` frame are pooled before the trunk:
    ``trunk_scale / 4`` times the integer nearest to ``longest side / TRAINING_SCALE`` (at least 1), so
    1280x1024 -> 2 for a trunk at 1/4 scale, 4 for one at 1/8."""
    return trunk_scale // 4 * max(1, round(max(height, width) / TRAINING_SCALE))

class BandFeatures(NamedTuple):
    """What the network looks at, all at 1/4 scale with channels ``[IR, VIS]`` (``(B, ., H/4, W/4)``)."""

    quarter: torch.Tensor
    """``(B, 2, h, w)`` the sources."""
    detail: torch.Tensor
    """``(B, 2, h, w)`` mean magnitude of the first coarse band (D1)."""
    rule: torch.Tensor
    """``(B, COARSE_BANDS, h, w)`` the fixed rule's injection logits."""


def band_features(split: bands.Bands, rule: torch.Tensor) -> BandFeatures:
    """What the network looks at, from both sources' bands and the rule logits for the prompt."""
    return BandFeatures(quarter=F.avg_pool2d(split.half, 2), detail=F.avg_pool2d(split.coarse[0].abs(), 2), rule=rule)


def activations(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The maps' values: injection weights in [0, 1], infrared detail gain, finest-band gain."""
    injection = torch.sigmoid(maps[:, :bands.COARSE_BANDS])
    ir_gain = torch.exp(torch.tanh(maps[:, -2:-1]) * _LOG_MAX_IR_GAIN)
    fine_gain = torch.exp(torch.tanh(maps[:, -1:]) * _LOG_MAX_FINE_GAIN)
    return injection, ir_gain, fine_gain


def _padding(height: int, width: int) -> tuple[int, int]:
    """Rows and columns added so that both sides are multiples of :data:`PAD_MULTIPLE`."""
    return (-height) % PAD_MULTIPLE, (-width) % PAD_MULTIPLE


class FusionNet(nn.Module):
    """Text-conditioned luminance fusion by band injection.

    Args:
        intents: Intent ids, in the order of the weight vectors given to :meth:`forward`.
        channels: Feature channels per modality at 1/4 scale (twice that after merging).
        token_dim: Size of the text tokens.
        tokens_per_intent: Learned tokens per intent.
        trunk_scale: Resolution of the trunk, as a divisor of the frame's: 8 (the shipped network) or 4
            (four times the trunk's cost).
    """

    def __init__(self, intents: Sequence[str], *, channels: int = 16, token_dim: int = 32,
                 tokens_per_intent: int = 4, trunk_scale: int = 8) -> None:
        super().__init__()
        self.intents = list(intents)
        if "balanced" not in self.intents:
            raise ValueError(f"the intents must include 'balanced', got {self.intents}")
        if trunk_scale not in (4, 8):
            raise ValueError(f"trunk_scale must be 4 or 8, got {trunk_scale}")
        self.config = {"channels": channels, "token_dim": token_dim, "tokens_per_intent": tokens_per_intent,
                       "trunk_scale": trunk_scale}
        wide = 2 * channels
        self.stem_ir = nn.Sequential(conv3x3(2, channels), nn.LeakyReLU(0.1), DAFE(channels))
        self.stem_vis = nn.Sequential(conv3x3(2, channels), nn.LeakyReLU(0.1), DAFE(channels))
        self.merge = nn.Sequential(nn.Conv2d(2 * channels + bands.COARSE_BANDS, wide, 1), nn.LeakyReLU(0.1))
        self.down = nn.Sequential(conv3x3(wide, wide, stride=2), nn.LeakyReLU(0.1))
        self.iti = ITI(wide, token_dim)
        self.low = DAFE(wide)
        self.decode = nn.Sequential(nn.Conv2d(2 * wide, channels, 1), nn.LeakyReLU(0.1),
                                    conv3x3(channels, channels), nn.LeakyReLU(0.1))
        self.head = nn.Conv2d(channels, MAPS, 3, padding=1)
        self.tokens = nn.Parameter(torch.randn(len(self.intents), tokens_per_intent, token_dim) * 0.1)
        nn.init.zeros_(self.head.weight)  # start as the fixed rule: a sane fusion before training
        nn.init.zeros_(self.head.bias)
        self._balanced = self.intents.index("balanced")
        self._local = [(self.intents.index(i), kind) for i, kind in LOCAL_INTENTS.items() if i in self.intents]
        # Index masks as buffers, so that they travel with the model: indexing by a Python list would copy
        # an index tensor from the host on every call, which a CUDA graph cannot capture.
        medical = torch.tensor([float(i in MEDICAL_INTENTS) for i in self.intents])
        self.register_buffer("_medical", medical, persistent=False)
        under_balanced = torch.tensor([m in RULE_UNDER_BALANCED for m in range(MAPS)])
        self.register_buffer("_rule_under_balanced", under_balanced, persistent=False)

    def intent_weights(self, weights: dict[str, float]) -> torch.Tensor:
        """A ``(1, K)`` weight tensor from ``{intent_id: weight}``; ids the network does not know (a bank of the
        user's own may add intents) count as balanced, as in the classical fuser."""
        vector = torch.tensor([[float(weights.get(i, 0.0)) for i in self.intents]])
        vector[0, self._balanced] += sum(float(w) for i, w in weights.items() if i not in self.intents)
        total = vector.sum()
        if total <= 0:
            vector[0, self._balanced] = 1.0
            total = vector.sum()
        return vector / total

    def medical_share(self, weights: torch.Tensor) -> torch.Tensor:
        """``(B,)``: how much of each row's prompt is medical (fused by the medical rule, no learned residual)."""
        return (weights * self._medical.to(weights.dtype)).sum(dim=1)

    def rule_for_prompt(self, rule: torch.Tensor, weights: torch.Tensor,
                        medical: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The rule logits the prompt asks for: ``rule`` blended towards ``medical()`` by :meth:`medical_share`.

        ``medical()`` is computed only when needed (always on a GPU, where checking needs a host sync).
        """
        share = self.medical_share(weights)
        if rule.device.type == "cpu" and not bool((share > 0).any()):
            return rule
        return rule + share[:, None, None, None] * (medical() - rule)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, weights: torch.Tensor,
                memory: torch.Tensor | None = None, momentum: float = 0.0):
        """Fuse luminance images.

        Args:
            ir: ``(B, 1, H, W)`` infrared in [0, 1].
            vis: ``(B, 1, H, W)`` visible luminance in [0, 1].
            weights: ``(B, K)`` or ``(1, K)`` intent weights (rows sum to 1).
            memory: For video: the memory returned with the previous frame of each item's stream,
                ``(B, MEMORY_CHANNELS, H/4, W/4)`` after padding; a row of NaN means "no previous
                frame". With it, the fusion decisions (the maps, rule included) are blended with the
                previous frame's: ``momentum * previous + (1 - momentum) * current``, which removes
                frame-to-frame flicker of the weights on a steady scene. The bands always come from
                the current frame, and an item whose 1/4-scale sources changed by more than
                :data:`SCENE_CUT` (mean absolute difference) starts afresh.
            momentum: Weight of the previous frame's decisions (0 disables).

        Returns:
            ``(B, 1, H, W)`` fused luminance in [0, 1] (any size works: padded internally); with
            ``memory`` given, also the new memory for the next frame.
        """
        height, width = ir.shape[-2:]
        pad_h, pad_w = _padding(height, width)
        sources = torch.cat([ir, vis], dim=1).float()  # bands in fp32: box filters are differences of running sums
        if pad_h or pad_w:
            sources = F.pad(sources, (0, pad_w, 0, pad_h), mode="replicate")
        split = bands.decompose(sources)
        rule = self.rule_for_prompt(bands.rule_logits(split), weights.float(), lambda: bands.medical_logits(split))
        features = band_features(split, rule)
        maps, repair = self.decide_with_repair(features, weights.float(), None if memory is None else memory.float(),
                                               momentum)
        fused = bands.compose(split, *activations(maps), repair=repair)
        fused = fused[..., :height, :width].clamp(0.0, 1.0).to(ir.dtype)
        if memory is None:
            return fused
        return fused, torch.cat([maps, features.quarter], dim=1).to(memory.dtype)

    def decide(self, features: BandFeatures, weights: torch.Tensor, memory: torch.Tensor | None = None,
               momentum: float = 0.0) -> torch.Tensor:
        """The ``(B, MAPS, H/4, W/4)`` decisions (fp32, before :func:`activations`): rule plus learned residual.

        The part of :meth:`forward` between the bands and the composition. ``memory`` and ``momentum`` as
        for :meth:`forward`. ``features.rule`` holds the rule logits for the prompt
        (:meth:`rule_for_prompt`). The convolutional trunk runs in the network's own precision (fp16 on a
        GPU, for instance). Callers that compose the bands themselves (the OpenCV CPU path of the ``model``
        fuser) need the repair map as well: :meth:`decide_with_repair`.
        """
        return self.decide_with_repair(features, weights, memory, momentum)[0]

    def decide_with_repair(self, features: BandFeatures, weights: torch.Tensor, memory: torch.Tensor | None = None,
                           momentum: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`decide`, and where the prompt's damage intents repair the visible image: ``(B, 1, H/4, W/4)`` in
        [0, 1], each :data:`LOCAL_INTENTS` intent's weight times its damage gate (None when the prompt has none),
        for the composition, which keeps the base steps drawn there (``repair`` of :func:`bands.compose`).
        """
        quarter, rule = features.quarter, features.rule
        factor = trunk_factor(4 * quarter.shape[-2], 4 * quarter.shape[-1], self.config["trunk_scale"])
        skip = self._merged_features(features if factor == 1 else _pooled(features, factor))
        gate, repair = self._damage_gate(quarter, weights)
        acts = gate is not None and self._prompt_acts(gate)
        if gate is None:
            residual = self._text_residual(skip, weights.to(skip.dtype)).float()
        else:  # the prompt's and the balanced residual in one pass, blended per pixel by the gate
            balanced = torch.zeros_like(weights)
            balanced[:, self._balanced] = 1.0
            rows = [weights.expand(skip.shape[0], -1)] if acts else []  # else: gate 0, the prompt's part unused
            rows.append(balanced.expand(skip.shape[0], -1))
            residual = self._text_residual(torch.cat([skip] * len(rows)), torch.cat(rows).to(skip.dtype)).float()
        if factor > 1:
            residual = F.interpolate(residual, scale_factor=factor, mode="bilinear", align_corners=False)
            residual = residual[..., :quarter.shape[-2], :quarter.shape[-1]]
        bounded = RESIDUAL_BOUND * torch.tanh(residual[:, :bands.COARSE_BANDS] / RESIDUAL_BOUND)
        residual = torch.cat([bounded, residual[:, bands.COARSE_BANDS:]], dim=1)
        if gate is not None:  # outside the damage, balanced fusion: the rule's base, the whole finest band
            prompted, plain = residual.chunk(2) if acts else (None, residual)
            plain = self._balanced_keeps_the_rule(plain, torch.zeros_like(weights[:, :1]))
            residual = plain + gate * (prompted - plain) if acts else plain  # gate 0 everywhere: balanced alone
        residual = self._balanced_keeps_the_rule(residual, 1 - weights[:, self._balanced:self._balanced + 1])
        residual = residual * (1 - self.medical_share(weights))[:, None, None, None]  # not trained on medical pairs
        maps = torch.cat([rule, torch.zeros_like(rule[:, :2])], dim=1) + residual
        if memory is not None:
            maps = self._blend_with_memory(maps, quarter, memory, momentum)
        return maps, repair

    def _merged_features(self, features: BandFeatures) -> torch.Tensor:
        """Both modalities' stems merged with the rule's logits."""
        quarter, detail, rule = features
        dtype = self.head.weight.dtype
        channels_last = torch.channels_last  # several times faster for these small convolutions on CPU
        inputs = torch.cat([quarter[:, :1], detail[:, :1], quarter[:, 1:], detail[:, 1:]], dim=1)
        # Both stems (conv3x3, LeakyReLU, DAFE) in one pass of grouped operations: the first half of the
        # channels is the infrared stem's, the second the visible one's.
        stems = F.leaky_relu(paired_conv(inputs.to(dtype, memory_format=channels_last), self.stem_ir[0],
                                         self.stem_vis[0]), self.stem_ir[1].negative_slope)
        stems = paired_dafe(stems, self.stem_ir[2], self.stem_vis[2])
        rule = (rule / bands.RULE_STEEPNESS).to(dtype, memory_format=channels_last)
        return self.merge(torch.cat([stems, rule], dim=1))

    def _balanced_keeps_the_rule(self, residual: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
        """Scale the residual of the :data:`RULE_UNDER_BALANCED` maps by ``share`` (``(B, 1)``), the prompt's
        non-balanced share, and take the frame mean of the detail bands' residual out in proportion to
        the balanced share: balanced fusion keeps the rule's base, the whole finest band and the rule's
        overall balance of the detail bands; the network only moves infrared injection within a frame.

        Finest band: the gain is there to smooth noise when a prompt asks for it; left free, the
        network also halved the finest band of clean night images under the balanced prompt (its
        features cannot tell them from the darkened, noisy inputs of the low-light and noise intents),
        which cost a fifth of the sharpness on LLVIP. Base: the learned base residual painted dark
        blotches where the thermal base is dark (a car, a road, a sky: on the MSRS training pairs it
        moved the output from the rule's by up to 55 grey levels on average over a frame) and made
        most VIFB metrics on those pairs worse (Qcv 956 against 313 without it); on daylight RoadScene
        pairs it changed every metric by 1.1% or less. Detail bands: on frames unlike its training pairs the
        balanced residual shifted a whole frame's injection at once (+2.8 logits on average over dark
        LLVIP street scenes, where it washed visible texture towards the thermal image; a whole flattened
        thermal image), while within a frame it moves injection where it helps; centred, it scored better
        on the tuning pairs too (docs/model.md, "v5.2").
        """
        scale = torch.where(self._rule_under_balanced, share.to(residual.dtype), 1.0)
        residual = residual * scale[:, :, None, None]
        detail = residual[:, :DETAIL_MAPS]
        centred = detail - (1 - share.to(residual.dtype))[:, :, None, None] * detail.mean(dim=(2, 3), keepdim=True)
        return torch.cat([centred, residual[:, DETAIL_MAPS:]], dim=1)

    def _text_residual(self, skip: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        tokens = torch.einsum("bk,ktd->btd", weights, self.tokens.to(weights.dtype)).expand(skip.shape[0], -1, -1)
        low = self.low(self.iti(self.down(skip), tokens))
        up = F.interpolate(low, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        # Out of channels-last for the maps' arithmetic: on a CPU, slicing, concatenating and broadcasting
        # channels-last maps is several times slower (the trunk about 5% faster overall).
        return self.head(self.decode(torch.cat([skip, up], dim=1))).contiguous()

    @staticmethod
    def _prompt_acts(gate: torch.Tensor) -> bool:
        """Whether the prompt's own residual is needed: the gate is above 0 somewhere. On a CPU, frames with
        no damage of the prompt's kind (a glare prompt on a frame with nothing near clipping) then cost
        what balanced fusion costs; elsewhere always, as checking would need a host synchronisation."""
        return gate.device.type != "cpu" or bool(gate.any())

    def _damage_gate(self, quarter: torch.Tensor, weights: torch.Tensor
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per pixel, how much of the prompt's effect applies, and how much of it is repair of damage: two
        ``(B, 1, h, w)`` maps, or None, None when the prompt has no damage intent (its effect applies everywhere).

        The prompt's non-balanced intents are averaged (by their weights) with gate 1 for intents that
        act on the whole frame and :func:`damage_gates` for :data:`LOCAL_INTENTS`; the repair is the sum of the
        local intents' weights times their gates.
        """
        local = self._local
        if weights.device.type == "cpu":  # on a GPU, always blend: no host synchronisation, and CUDA graphs stay valid
            local = [(index, kind) for index, kind in local if bool((weights[:, index] > 0).any())]
        if not local:
            return None, None
        gates = damage_gates(quarter[:, :1], quarter[:, 1:], bands.box_filter, {kind for _, kind in local})
        repair = sum(weights[:, index, None, None, None] * gates[kind] for index, kind in local)
        others = weights.clone()
        others[:, self._balanced] = 0
        total = others.sum(dim=1)
        whole_frame = (total - sum(weights[:, index] for index, _ in local))[:, None, None, None]
        return (whole_frame + repair) / total.clamp(min=1e-6)[:, None, None, None], repair

    @staticmethod
    def memory_shape(height: int, width: int) -> tuple[int, int, int]:
        """Shape of one item's temporal memory for ``height`` x ``width`` frames (the padded 1/4 grid)."""
        pad_h, pad_w = _padding(height, width)
        return MEMORY_CHANNELS, (height + pad_h) // 4, (width + pad_w) // 4

    @staticmethod
    def _blend_with_memory(maps: torch.Tensor, quarter: torch.Tensor, memory: torch.Tensor,
                           momentum: float) -> torch.Tensor:
        """The maps blended with the previous frame's, per item, unless it has none or the scene cut."""
        if memory.shape[0] != maps.shape[0] or memory.shape[2:] != maps.shape[2:]:
            raise ValueError(f"memory of shape {tuple(memory.shape)} does not fit this batch "
                             f"({maps.shape[0]} x {MEMORY_CHANNELS} x {maps.shape[2]} x {maps.shape[3]})")
        previous_maps, previous_quarter = memory[:, :MAPS], memory[:, MAPS:]
        change = (quarter - previous_quarter).abs().mean(dim=(2, 3)).sum(dim=1)
        keep = (change <= SCENE_CUT).to(maps.dtype) * momentum  # NaN (no memory) compares False: fresh start
        keep = keep[:, None, None, None]
        return (1 - keep) * maps + keep * torch.nan_to_num(previous_maps)


def _pooled(features: BandFeatures, factor: int) -> BandFeatures:
    """Every feature map averaged over ``factor`` x ``factor`` cells (edges replicated up to a whole cell)."""
    height, width = features.quarter.shape[-2:]
    padding = (0, (-width) % factor, 0, (-height) % factor)
    return BandFeatures(*(F.avg_pool2d(F.pad(x, padding, mode="replicate"), factor) for x in features))


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
