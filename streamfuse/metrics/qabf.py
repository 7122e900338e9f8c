"""The Xydeas-Petrovic edge-preservation arithmetic shared by both conventions' ``Qabf``.

C. S. Xydeas and V. Petrovic, "Objective image fusion performance measure", Electronics Letters
36(4), 2000. The conventions differ in how they compute the Sobel responses (kernel orientation,
borders, scaling), not in what follows, which is here. Both reference codes share one quirk: where a
source and the fused image have exactly equal gradient magnitudes, the "strength" term is the fused
magnitude itself rather than 1.
"""

from __future__ import annotations

import math

import numpy as np

_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8


def edge_preservation(g_src: np.ndarray, a_src: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    """Per-pixel preservation ``Q^{SF}`` of a source's edges (magnitude ``g``, orientation ``a``) in the fused image."""
    safe_src = np.where(g_src == 0, 1.0, g_src)
    safe_f = np.where(g_f == 0, 1.0, g_f)
    strength = np.where(g_src > g_f, g_f / safe_src, np.where(g_src == g_f, g_f, g_src / safe_f))
    orientation = 1.0 - np.abs(a_src - a_f) / (math.pi / 2)
    q_g = _TG / (1.0 + np.exp(_KG * (strength - _DG)))
    q_a = _TA / (1.0 + np.exp(_KA * (orientation - _DA)))
    return q_g * q_a


def weighted_qabf(g_a: np.ndarray, a_a: np.ndarray, g_b: np.ndarray, a_b: np.ndarray, g_f: np.ndarray,
                  a_f: np.ndarray) -> float:
    """``Σ(Q^{AF} g_A + Q^{BF} g_B) / Σ(g_A + g_B)``; NaN when both sources have no edges (0/0)."""
    denominator = float(np.sum(g_a + g_b))
    if denominator == 0.0:
        return math.nan
    numerator = float(np.sum(edge_preservation(g_a, a_a, g_f, a_f) * g_a + edge_preservation(g_b, a_b, g_f, a_f) * g_b))
    return numerator / denominator


def artifact_share(g_a: np.ndarray, a_a: np.ndarray, g_b: np.ndarray, a_b: np.ndarray, g_f: np.ndarray,
                   a_f: np.ndarray) -> float:
    """``N_abf``: the share of edge information that is an artifact, where the fused edge is stronger than
    both sources' (lower is better): ``Σ AM ((1 - Q^{AF}) g_A + (1 - Q^{BF}) g_B) / Σ(g_A + g_B)`` with
    ``AM = [g_F > g_A and g_F > g_B]`` (B. K. Shreyamsha Kumar, SIViP 7(6), 2013, the modified form of
    Petrovic and Xydeas's measure); NaN when both sources have no edges."""
    denominator = float(np.sum(g_a + g_b))
    if denominator == 0.0:
        return math.nan
    artifact = (g_f > g_a) & (g_f > g_b)
    lost = (1 - edge_preservation(g_a, a_a, g_f, a_f)) * g_a + (1 - edge_preservation(g_b, a_b, g_f, a_f)) * g_b
    return float(np.sum(lost[artifact])) / denominator
