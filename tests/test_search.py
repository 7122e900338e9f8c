"""The network's training target: the band rule corrected per region by a local-quality search."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from streamfuse.models import bands
from streamfuse.sources.synthetic_scene import SyntheticScene
from streamfuse.train.search import OFFSETS, SourceStatistics, local_quality, searched_fusion


def street_pair(width: int = 160, height: int = 128) -> torch.Tensor:
    """``(1, 2, H, W)`` stacked ``[IR, VIS]`` luminance of the synthetic street at dusk, in [0, 1]."""
    scene = SyntheticScene(width, height, people=3, vehicles=1, seed=4)
    ir = scene.render_ir(1.0).astype(np.float32) / 255
    vis = cv2.cvtColor(scene.render_vis(1.0), cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
    return torch.from_numpy(np.stack([ir, vis]))[None]


def test_local_quality_rewards_kept_edges_and_structure():
    noise = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    image = torch.from_numpy(cv2.GaussianBlur(noise, (5, 5), 1))[None, None]
    statistics = SourceStatistics(torch.cat([image, image], dim=1))
    kept = local_quality(image, statistics)
    flat = local_quality(torch.full_like(image, float(image.mean())), statistics)
    assert kept.shape == (1, 1, 16, 16)
    assert float(kept.min()) > 1.9  # every edge kept (Qabf's ceiling is about 0.98) and SSIM 1
    assert float(flat.max()) < 0.3  # no edge kept, no structure


def test_the_search_scores_at_least_the_rule_and_is_not_the_rule():
    sources = street_pair()
    split = bands.decompose(sources)
    rule = bands.compose(split, torch.sigmoid(bands.rule_logits(split))).clamp(0, 1)
    searched = searched_fusion(sources).clamp(0, 1)
    statistics = SourceStatistics(sources)
    gain = local_quality(searched, statistics) - local_quality(rule, statistics)
    assert 0 in OFFSETS  # the rule itself is always a candidate
    assert float(gain.mean()) > 0.01  # 0.017 here
    # The choice is smoothed across regions, so some may lose a little where a neighbour gains.
    assert float((gain < -0.02).float().mean()) < 0.02
    assert float((searched - rule).abs().mean()) > 0.005  # the search is not the rule (0.011 here)
