from __future__ import annotations

import numpy as np

from streamfuse.frames import Frame
from streamfuse.sync import PairMatcher

IMAGE = np.zeros((2, 2), np.uint8)


def frames(name: str, fps: float, count: int, start: float = 0.0) -> list[Frame]:
    return [Frame(IMAGE, start + i / fps, i, name) for i in range(count)]


def run(matcher: PairMatcher, primary: list[Frame], secondary: list[Frame]) -> list[tuple[int, int | None]]:
    """Feed frames the way the pipeline does: secondary frames until ready (or exhausted)."""
    pending = list(secondary)
    pairs = []
    for frame in primary:
        while pending and not matcher.ready(frame):
            matcher.add_secondary(pending.pop(0))
        match = matcher.match(frame)
        pairs.append((frame.seq, None if match.partner is None else match.partner.seq))
    return pairs


def test_equal_counts_pair_by_index():
    pairs = run(PairMatcher(0.02), frames("vis", 25, 40), frames("ir", 25, 40))
    assert pairs == [(i, i) for i in range(40)]


def test_slow_thermal_frames_are_reused_by_nearest_time():
    pairs = run(PairMatcher(0.06), frames("vis", 30, 27), frames("ir", 9, 9))
    for vis_seq, ir_seq in pairs:
        vis_t, ir_t = vis_seq / 30, ir_seq / 9
        assert abs(ir_t - vis_t) <= min(abs(k / 9 - vis_t) for k in range(9)) + 1e-9
    assert len({ir for _, ir in pairs}) == 9  # every thermal frame used, several of them more than once


def test_unmatched_primary_frames_are_reported():
    # thermal frames only every 0.2 s, tolerance 30 ms: most visible frames have no partner
    pairs = run(PairMatcher(0.03), frames("vis", 30, 30), frames("ir", 5, 5))
    matched = [p for p in pairs if p[1] is not None]
    assert 0 < len(matched) < len(pairs)
    for vis_seq, ir_seq in matched:
        assert abs(ir_seq / 5 - vis_seq / 30) <= 0.03


def test_time_offset_shifts_the_pairing():
    # thermal clock runs 80 ms behind: without the offset everything is shifted by 2 frames at 25 fps
    ir = frames("ir", 25, 20, start=-0.08)
    assert run(PairMatcher(0.01), frames("vis", 25, 20), ir)[5] == (5, 7)
    assert run(PairMatcher(0.01, 0.0, 0.08), frames("vis", 25, 20), frames("ir", 25, 20, start=-0.08))[5] == (5, 5)


def test_skew_is_signed_difference():
    matcher = PairMatcher(0.05)
    matcher.add_secondary(Frame(IMAGE, 1.01, 0, "ir"))
    match = matcher.match(Frame(IMAGE, 1.0, 0, "vis"))
    assert match.partner is not None and abs(match.skew - 0.01) < 1e-9
