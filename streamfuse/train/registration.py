"""Training the learned registration structure images (:mod:`streamfuse.registration.features`).

Data: registered infrared/visible pairs (:func:`streamfuse.train.data.load_pairs`), never the SuperFusion
registration sets nor copies of their scenes (those measure the estimator, see docs/registration.md).

Objective: for an aligned crop pair, the visible structure image's centre is correlated (normalised
cross-correlation) with the infrared structure image at every shift within :data:`RADIUS` pixels; a
softmax over the shifts must put its mass on zero shift (a contrastive loss whose negatives are the
same scene misaligned). That is what the estimator needs: a correlation with one clear, sharp peak
where the frames align. Crops are drawn at random scales (the estimator works at 320 and 640 pixels
wide), flipped, and given random gamma per modality.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from streamfuse.registration.features import DILATIONS, MODALITIES, NORM_EPS, NORM_WINDOW, save_structure_weights
from streamfuse.train.data import find_pair_folders, load_pairs

logger = logging.getLogger(__name__)

#: Largest shift (crop pixels) the contrastive loss compares against.
RADIUS = 8
#: Softmax temperature of the normalised correlations.
TEMPERATURE = 0.05
#: Standard deviation (pixels) of the soft target around zero shift: the frames' own registration is
#: not exact to the pixel, and neighbouring shifts of a smooth image are not real negatives.
TARGET_SIGMA = 0.75
#: Data sets that measure registration: never trained on.
REGISTRATION_HELDOUT = ("superfusion_reg_roadscene", "superfusion_reg_msrs")


def local_contrast_normalise(image: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`streamfuse.registration.features.local_contrast_normalise` (for training)."""
    pad = NORM_WINDOW // 2
    mean = F.avg_pool2d(F.pad(image, (pad,) * 4, mode="replicate"), NORM_WINDOW, stride=1)
    centred = image - mean
    variance = F.avg_pool2d(F.pad(centred * centred, (pad,) * 4, mode="replicate"), NORM_WINDOW, stride=1)
    return centred / torch.sqrt(variance + NORM_EPS * NORM_EPS)


class StructureNet(nn.Module):
    """One modality's network for training: gray ``(N, 1, H, W)`` in ``[0, 1]`` -> structure ``(N, 1, H, W)``.

    The layers of :mod:`streamfuse.registration.features` (which runs them without torch). Padding
    reflects the image: zero padding would draw strong lines along the frame's edges, which a warped
    frame carries into the middle of the other, where they dominate the correlation.
    """

    def __init__(self, channels: int = 16, dilations: Sequence[int] = DILATIONS) -> None:
        super().__init__()
        self.convolutions = nn.ModuleList()
        inputs = 1
        for dilation in dilations:
            self.convolutions.append(nn.Conv2d(inputs, channels, 3, padding=dilation, dilation=dilation,
                                               padding_mode="reflect"))
            inputs = channels
        self.output = nn.Conv2d(channels, 1, 1)

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        planes = local_contrast_normalise(gray)
        for convolution in self.convolutions:
            planes = F.relu(convolution(planes))
        return self.output(planes)

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(weight, bias)`` arrays of every layer, as :func:`save_structure_weights` takes them."""
        return [(layer.weight.detach().cpu().numpy(), layer.bias.detach().cpu().numpy())
                for layer in (*self.convolutions, self.output)]


class CrossModalStructure(nn.Module):
    """The infrared and the visible :class:`StructureNet`."""

    def __init__(self, channels: int = 16, dilations: Sequence[int] = DILATIONS) -> None:
        super().__init__()
        self.dilations = tuple(dilations)
        self.ir = StructureNet(channels, dilations)
        self.vis = StructureNet(channels, dilations)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ir(ir), self.vis(vis)

    def save(self, path: Path, metadata: dict) -> Path:
        """Write the weights for :mod:`streamfuse.registration.features`."""
        networks = {"ir": self.ir, "vis": self.vis}
        return save_structure_weights({m: networks[m].layers() for m in MODALITIES}, path, metadata, self.dilations)


def shift_contrast_loss(ir: torch.Tensor, vis: torch.Tensor, radius: int = RADIUS) -> torch.Tensor:
    """Contrastive loss over shifts for aligned structure images ``(N, 1, H, W)`` (see module docs)."""
    count, height, width = vis.shape[0], vis.shape[-2], vis.shape[-1]
    inner_h, inner_w = height - 2 * radius, width - 2 * radius
    centre = vis[..., radius:radius + inner_h, radius:radius + inner_w]
    centre = centre - centre.mean((2, 3), keepdim=True)
    centre = centre / (centre.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-6)
    # Zero-mean centre: its dot product with a window equals that with the window minus its mean.
    dots = F.conv2d(ir.transpose(0, 1), centre, groups=count).transpose(0, 1)  # (N, 1, 2R+1, 2R+1)
    area = inner_h * inner_w
    window_mean = F.avg_pool2d(ir, (inner_h, inner_w), stride=1)
    window_var = (F.avg_pool2d(ir * ir, (inner_h, inner_w), stride=1) - window_mean ** 2).clamp_min(0)
    correlations = (dots / (torch.sqrt(window_var * area) + 1e-6)).flatten(1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    distances = (offsets[:, None] ** 2 + offsets[None, :] ** 2).flatten()
    logits = correlations / TEMPERATURE
    target = torch.softmax(-distances / (2 * TARGET_SIGMA ** 2), 0).expand_as(logits)
    return -(target * F.log_softmax(logits, 1)).sum(1).mean()


class AlignedCropSampler:
    """Random aligned crop pairs ``(ir, vis)`` of shape ``(N, 1, crop, crop)`` from loaded pairs."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray, str]], crop: int, *, seed: int = 0,
                 scales: tuple[float, float] = (0.45, 1.0), night: float = 0.0) -> None:
        usable = [(ir, vis) for ir, vis, _ in pairs if min(ir.shape) * scales[0] >= crop]
        if not usable:
            raise ValueError(f"no training pair is large enough for {crop} px crops at scale {scales[0]}")
        self.pairs, self.crop, self.scales, self.night = usable, crop, scales, night
        self.rng = np.random.default_rng(seed)

    def _one(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        for _ in range(20):
            ir, vis = self.pairs[rng.integers(len(self.pairs))]
            scale = rng.uniform(*self.scales)
            size = (max(self.crop, round(vis.shape[1] * scale)), max(self.crop, round(vis.shape[0] * scale)))
            ir_s, vis_s = (cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (ir, vis))
            y = rng.integers(size[1] - self.crop + 1)
            x = rng.integers(size[0] - self.crop + 1)
            ir_c, vis_c = ir_s[y:y + self.crop, x:x + self.crop], vis_s[y:y + self.crop, x:x + self.crop]
            if ir_c.std() > 0.02 and vis_c.std() > 0.02:
                break
        if rng.random() < 0.5:
            ir_c, vis_c = ir_c[:, ::-1], vis_c[:, ::-1]
        ir_c = np.clip(ir_c, 0, 1) ** rng.uniform(0.6, 1.6)
        vis_c = np.clip(vis_c, 0, 1) ** rng.uniform(0.6, 1.6)
        if rng.random() < self.night:  # a visible camera at night: dark, and noisy once amplified
            vis_c = vis_c * rng.uniform(0.1, 0.5) + rng.normal(0.0, rng.uniform(0.0, 0.02), vis_c.shape)
        return ir_c.astype(np.float32), vis_c.astype(np.float32)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` crop pairs as two tensors."""
        crops = [self._one() for _ in range(size)]
        ir = torch.from_numpy(np.stack([c[0] for c in crops]))[:, None]
        vis = torch.from_numpy(np.stack([c[1] for c in crops]))[:, None]
        return ir, vis


def training_pairs(root: Path, max_side: int = 640) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The registered pairs under ``root`` without the registration test sets or copies of their scenes."""
    root = Path(root)
    sources = [s for s in find_pair_folders(root) if s.name not in REGISTRATION_HELDOUT]
    holdout = [root / name / "ir" for name in REGISTRATION_HELDOUT if (root / name / "ir").is_dir()]
    return load_pairs(sources, max_side=max_side, holdout_dirs=holdout)


def train_structure(root: Path, output: Path, *, steps: int = 1500, batch_size: int = 12, crop: int = 112,
                    learning_rate: float = 2e-3, channels: int = 16, dilations: Sequence[int] = DILATIONS,
                    night: float = 0.3, seed: int = 0, log_every: int = 50,
                    checkpoint_every: int = 250) -> CrossModalStructure:
    """Train :class:`CrossModalStructure` on the pairs under ``root`` and write it to ``output``.

    The weights are written every ``checkpoint_every`` steps (and at the end), so an interrupted run
    leaves the last checkpoint; Ctrl-C writes one before stopping.
    """
    torch.manual_seed(seed)
    pairs = training_pairs(root)
    logger.info("%d training pairs", len(pairs))
    sampler = AlignedCropSampler(pairs, crop, seed=seed, night=night)
    model = CrossModalStructure(channels, dilations)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, learning_rate, total_steps=steps, pct_start=0.05)
    started, running = time.monotonic(), []
    metadata = {"pairs": len(pairs), "steps": steps, "batch_size": batch_size, "crop": crop, "night": night,
                "seed": seed}
    try:
        for step in range(1, steps + 1):
            ir, vis = sampler.batch(batch_size)
            loss = shift_contrast_loss(*model(ir, vis))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            running.append(loss.item())
            if step % log_every == 0:
                logger.info("step %d/%d  loss %.3f  %.0f s", step, steps, np.mean(running), time.monotonic() - started)
                running = []
            if step % checkpoint_every == 0:
                model.save(output, {**metadata, "steps_done": step})
    except KeyboardInterrupt:
        logger.warning("interrupted at step %d; the weights so far go to %s", step, output)
        model.save(output, {**metadata, "steps_done": step - 1})
        raise
    model.save(output, {**metadata, "steps_done": steps})
    return model.eval()
