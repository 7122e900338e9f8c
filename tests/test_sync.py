"""Pairing by time: the rule (PairMatcher) and the pipeline's pairing stage that runs it on two sources."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from conftest import wait_until
from streamfuse.config import SyncConfig, config_from_dict
from streamfuse.frames import Frame
from streamfuse.pipeline import Pipeline
from streamfuse.queues import Closed, StageQueue
from streamfuse.registration import IdentityRegistrar
from streamfuse.sources import Capture, Source
from streamfuse.sources.base import SourceState
from streamfuse.stats import PipelineStats
from streamfuse.sync import PairingStage, PairMatcher

IMAGE = np.zeros((2, 2), np.uint8)


class ListSource(Source):
    """A finite source of blank frames at the given timestamps (the stage's input without a camera)."""

    def __init__(self, name: str, timestamps: list[float]) -> None:
        super().__init__(name)
        self.timestamps = timestamps

    def open(self) -> None:
        pass

    def read(self) -> Capture | None:
        if self.frames_read >= len(self.timestamps):
            return None
        return Capture(IMAGE, self.timestamps[self.frames_read])


def times(fps: float, count: int, start: float = 0.0) -> list[float]:
    return [start + i / fps for i in range(count)]


def run(tolerance_s: float, primary: list[float], secondary: list[float], *, primary_name: str = "vis",
        offsets_s: tuple[float, float] = (0.0, 0.0)) -> tuple[list[tuple[int, int | None]], PipelineStats]:
    """Run the real pairing stage on two finite sources; each primary seq with its partner's seq (or None)."""
    secondary_name = "ir" if primary_name == "vis" else "vis"
    sources = ListSource(primary_name, primary), ListSource(secondary_name, secondary)
    output: StageQueue = StageQueue(len(primary) + 1, "wait")
    stats = PipelineStats()
    offsets = dict(zip((primary_name, secondary_name), offsets_s, strict=True))
    stage = PairingStage(*sources, config=SyncConfig(primary=primary_name, tolerance_ms=tolerance_s * 1000),
                         offsets_s=offsets,
                         registrar=IdentityRegistrar(), defer_warp=lambda _transform: False, output=output,
                         stats=stats, stopping=threading.Event())
    for source in sources:
        source.start()
    stage.run()
    partners = {}
    while True:
        try:
            pair = output.get()
        except Closed:
            break
        own, other = (pair.vis, pair.ir) if primary_name == "vis" else (pair.ir, pair.vis)
        partners[own.seq] = other.seq
        expected_skew = pair.ir.timestamp + offsets["ir"] - pair.vis.timestamp - offsets["vis"]
        assert pair.skew == pytest.approx(expected_skew)
    for source in sources:
        source.join(5)
    return [(seq, partners.get(seq)) for seq in range(len(primary))], stats


def test_equal_counts_pair_by_index():
    pairs, stats = run(0.02, times(25, 40), times(25, 40))
    assert pairs == [(i, i) for i in range(40)]
    assert stats.counters().get("unpaired", 0) == 0


def test_slow_thermal_frames_are_reused_by_nearest_time():
    pairs, _ = run(0.06, times(30, 27), times(9, 9))
    for vis_seq, ir_seq in pairs:
        vis_t, ir_t = vis_seq / 30, ir_seq / 9
        assert abs(ir_t - vis_t) <= min(abs(k / 9 - vis_t) for k in range(9)) + 1e-9
    assert len({ir for _, ir in pairs}) == 9  # every thermal frame used, several of them more than once


def test_unmatched_primary_frames_are_dropped_and_counted():
    # thermal frames only every 0.2 s, tolerance 30 ms: most visible frames have no partner
    pairs, stats = run(0.03, times(30, 30), times(5, 5))
    matched = [p for p in pairs if p[1] is not None]
    assert 0 < len(matched) < len(pairs)
    # Pairing ends at the first visible frame beyond the last thermal one (0.8 s) by more than the tolerance:
    # frame 25 (0.833 s); the four after it are not offered.
    assert stats.counters()["unpaired"] == len([p for p in pairs[:26] if p[1] is None])
    for vis_seq, ir_seq in matched:
        assert abs(ir_seq / 5 - vis_seq / 30) <= 0.03


def test_time_offset_shifts_the_pairing():
    # thermal clock runs 80 ms behind: without the offset everything is shifted by 2 frames at 25 fps
    ir = times(25, 20, start=-0.08)
    assert run(0.01, times(25, 20), ir)[0][5] == (5, 7)
    assert run(0.01, times(25, 20), ir, offsets_s=(0.0, 0.08))[0][5] == (5, 5)


def test_an_offset_of_whole_frame_intervals_is_ready_when_the_partner_arrives():
    """0.1 s at 30 fps: the secondary frame of the same moment summed to a hair below the primary's time, so
    the matcher waited a frame interval more for a partner it had and paired two frames at once (a live
    pairs queue of one dropped every other one of them)."""
    matcher = PairMatcher(0.025, 0.0, -0.1)
    for k in range(300):
        matcher.add_secondary(Frame(IMAGE, (k + 3) / 30, k + 3, "ir"))
        primary = Frame(IMAGE, k / 30, k, "vis")
        assert matcher.ready(primary), k
        assert matcher.match(primary).partner.seq == k + 3


@pytest.mark.parametrize("offset_ms", [-100.0, 100.0])
def test_live_cameras_a_time_offset_apart_lose_no_frame_to_it(offset_ms):
    """The frames of one camera wait for the other's that come up to the offset later: in a live queue of 2
    they were dropped, 44 of 90 with -100 ms (and 56 with +100 ms)."""
    pipeline = Pipeline(config_from_dict({
        "synthetic": {"width": 64, "height": 48},
        "sources": {name: {"type": "synthetic", "fps": 30, "frames": 45, "realtime": True,
                           **({"time_offset_ms": offset_ms} if name == "ir" else {})} for name in ("ir", "vis")},
        "fusion": {"fuser": "classical"}, "sinks": [], "control": {"enabled": False}}))
    pipeline.run(install_signal_handlers=False)
    counters = pipeline.stats.counters()
    drops = sum(counters.get(f"drops.{name}", 0) for name in ("ir", "vis", "pairs"))
    # The first or last 0.1 s of one camera has no partner (3 frames); a busy test host may cost a frame or two.
    assert drops <= 2 and pipeline.frames_fused >= 45 - 3 - 2, (counters, pipeline.frames_fused)


def test_pairing_ends_when_the_other_input_has_ended_and_nothing_more_can_pair(caplog):
    """A finite thermal input of 5 frames beside 300 visible ones: the run went on for 10 s pairing nothing."""
    caplog.set_level(logging.INFO, logger="streamfuse")
    pipeline = Pipeline(config_from_dict({
        "synthetic": {"width": 64, "height": 48},
        "sources": {"ir": {"type": "synthetic", "frames": 5}, "vis": {"type": "synthetic", "frames": 300}},
        "fusion": {"fuser": "classical"}, "sinks": [], "control": {"enabled": False}}))
    pipeline.run(install_signal_handlers=False)
    assert pipeline.frames_fused == 5
    assert "input ir ended: pairing ends (no vis frame after it has a partner)" in caplog.text
    assert pipeline.input_counts()["vis"]["not_read"] > 250


def test_infrared_as_primary_keeps_the_skew_infrared_minus_visible():
    pairs, stats = run(0.05, times(25, 10, start=0.01), times(25, 10), primary_name="ir")
    assert pairs == [(i, i) for i in range(10)]
    assert stats.skew().p50_ms == pytest.approx(10.0)


def test_skew_is_signed_difference():
    matcher = PairMatcher(0.05)
    matcher.add_secondary(Frame(IMAGE, 1.01, 0, "ir"))
    match = matcher.match(Frame(IMAGE, 1.0, 0, "vis"))
    assert match.partner is not None and abs(match.skew - 0.01) < 1e-9


def test_the_stage_table_says_when_its_count_is_the_window_not_the_run():
    """A 2,919-frame run printed "count 2000" and percentiles of those, without saying so."""
    stats = PipelineStats(window=5)
    for ms in range(7):
        stats.record_latency("fuse", float(ms))
    lines = stats.table().splitlines()
    assert lines[1].split()[:2] == ["fuse", "5"]
    assert lines[-1] == "(count and percentiles: the last 5 samples of each stage)"
    short = PipelineStats(window=5)
    short.record_latency("fuse", 1.0)
    assert len(short.table().splitlines()) == 2


class SilentSource(ListSource):
    """A supervised camera that has not delivered yet (``lost``: starting or reconnecting) until it is stopped."""

    @property
    def lost(self) -> bool:
        return not self._stop.is_set()


def test_infrared_alone_before_a_first_pair_says_the_output_is_paused(caplog):
    """passthrough publishes infrared alone only once a pair gave the output size: before that the log said
    "publishing the other camera alone" and the health's pair_state "passthrough" while nothing went out."""
    ir, vis = ListSource("ir", times(30, 20)), SilentSource("vis", [])
    output: StageQueue = StageQueue(100, "wait")
    stopping = threading.Event()
    stage = PairingStage(vis, ir, config=SyncConfig(on_camera_loss="passthrough"), offsets_s={"ir": 0.0, "vis": 0.0},
                         registrar=IdentityRegistrar(), defer_warp=lambda _transform: False, output=output,
                         stats=PipelineStats(), stopping=stopping)
    ir.start()
    vis.start()
    with caplog.at_level(logging.INFO, logger="streamfuse"):
        worker = threading.Thread(target=stage.run, daemon=True)
        worker.start()
        time.sleep(0.5)
        state, published = stage.state, len(output)
        stopping.set()
        for source in (vis, ir):
            source.stop()
        worker.join(5)
    ir.join(5)
    assert not worker.is_alive()  # the stage ends when the pipeline stops its sources
    assert state == "pause" and published == 0
    assert "camera vis not delivering yet: output paused until the visible camera delivers" in caplog.text
    assert "publishing the other camera alone" not in caplog.text


class GivesUpSource(ListSource):
    """A supervised camera lost for a moment that then gives up: it is no longer ``lost`` but ended."""

    def __init__(self, name: str, lost_for_s: float) -> None:
        super().__init__(name, [])
        self.lost_until = time.monotonic() + lost_for_s

    @property
    def lost(self) -> bool:
        return time.monotonic() < self.lost_until


def test_a_camera_that_gives_up_is_not_taken_for_one_that_came_back(caplog):
    """A lost camera out of reconnect attempts is no longer 'lost': the stage logged "both cameras delivering
    again: pairing resumed" (and counted a resync) right before the run failed on that camera."""
    ir, vis = GivesUpSource("ir", 0.3), ListSource("vis", times(30, 1000))
    output: StageQueue = StageQueue(100, "wait")
    stopping = threading.Event()
    stage = PairingStage(vis, ir, config=SyncConfig(), offsets_s={"ir": 0.0, "vis": 0.0},
                         registrar=IdentityRegistrar(), defer_warp=lambda _transform: False, output=output,
                         stats=PipelineStats(), stopping=stopping)
    stage._paired_once = True  # the cameras had delivered before the loss
    ir.start()
    vis.start()
    with caplog.at_level(logging.INFO, logger="streamfuse"):
        worker = threading.Thread(target=stage.run, daemon=True)
        worker.start()
        wait_until(lambda: not ir.lost and ir.state is SourceState.STOPPED, 5, "the camera to give up")
        time.sleep(0.3)
        stopping.set()
        for source in (vis, ir):
            source.stop()
        worker.join(5)
    assert not worker.is_alive()
    assert "pairing resumed" not in caplog.text and stage.state == "pause"
    assert stage.stats.counters().get("resyncs", 0) == 0


def run_with_the_infrared_camera_lost(on_camera_loss: str, output: StageQueue) -> tuple[bool, PipelineStats]:
    """20 visible frames while the infrared camera never delivers; whether the stage ended by itself, and its stats."""
    vis, ir = ListSource("vis", times(30, 20)), SilentSource("ir", [])
    stats = PipelineStats()
    stage = PairingStage(vis, ir, config=SyncConfig(on_camera_loss=on_camera_loss), offsets_s={"ir": 0.0, "vis": 0.0},
                         registrar=IdentityRegistrar(), defer_warp=lambda _transform: False, output=output,
                         stats=stats, stopping=threading.Event())
    vis.start()
    ir.start()
    worker = threading.Thread(target=stage.run, daemon=True)
    worker.start()
    worker.join(10)
    ended = not worker.is_alive()
    ir.stop()
    worker.join(5)
    return ended, stats


@pytest.mark.parametrize("on_camera_loss", ["passthrough", "pause"])
def test_a_finite_input_that_ends_while_the_other_camera_is_lost_ends_the_run(on_camera_loss):
    """A synthetic camera's or a file's end is the end of the run; with the other camera down the stage kept
    waiting for it, so the run went on until it was killed. With ``pause`` nothing read the finite input's
    frames, so it waited on its full queue and never reached its end."""
    output: StageQueue = StageQueue(100, "wait")
    ended, stats = run_with_the_infrared_camera_lost(on_camera_loss, output)
    assert ended, "the stage still waited for the lost camera after the visible input ended"
    if on_camera_loss == "passthrough":
        assert len(output) == 20  # every visible frame published alone
    else:
        assert len(output) == 0 and stats.counters()["unpaired"] == 20


def test_pairs_dropped_while_one_camera_is_published_alone_are_counted():
    """drops.pairs was updated after fused pairs only: the run's summary under-reported."""
    output: StageQueue = StageQueue(1, "drop_oldest")  # a live pipeline's: fusion keeps the freshest pair
    ended, stats = run_with_the_infrared_camera_lost("passthrough", output)
    assert ended and stats.counters()["drops.pairs"] == 19 == output.dropped


def test_the_final_summary_gives_the_runs_frame_rate_not_that_of_its_last_seconds(monkeypatch):
    """A run whose output stopped before it ended said 'done: frames=4 fps=0.0'."""
    clock = iter([*(index / 10 for index in range(11)), 100.0, 100.0])
    monkeypatch.setattr("streamfuse.stats.time.perf_counter", lambda: next(clock))
    stats = PipelineStats()
    for _ in range(11):
        stats.record_output()
    assert "frames=11 fps=0.0 " in stats.summary_line()
    assert "frames=11 fps=10.0 " in stats.summary_line(final=True)
