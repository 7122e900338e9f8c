"""Pipeline statistics: throughput, per-stage latency percentiles, drops and pair skew."""

from __future__ import annotations

import collections
import collections.abc
import threading
import time
from dataclasses import dataclass

import numpy as np

END_TO_END = "end_to_end"

#: Seconds over which the live rates (health, metrics, the periodic log line) are measured: a stream that
#: stopped reads 0 frames per second this long after its last frame.
LIVE_RATE_WINDOW_S = 5.0


def recent_rate(times: collections.abc.Sequence[float], now: float, window_s: float = LIVE_RATE_WINDOW_S) -> float:
    """Events per second over the ``window_s`` seconds before ``now``, from ascending instants (of the clock
    ``now`` reads); the instants kept may cover less than the window (a short history), and the time since
    the last one counts, so the rate falls to 0 once none came for ``window_s``."""
    inside = [t for t in times if t > now - window_s]
    if not inside:
        return 0.0
    if len(inside) < len(times):  # the instants reach back past the window: it is full
        return len(inside) / window_s
    return (len(inside) - 1) / (now - inside[0]) if now > inside[0] else 0.0


@dataclass(frozen=True)
class Percentiles:
    """Latency summary of one stage in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def of(cls, samples: list[float]) -> Percentiles:
        """Summarise a list of millisecond samples (all zeros when empty)."""
        if not samples:
            return cls(0, 0.0, 0.0, 0.0, 0.0)
        p50, p95, p99 = np.percentile(samples, [50, 95, 99])
        return cls(len(samples), float(p50), float(p95), float(p99), float(np.mean(samples)))


class PipelineStats:
    """Thread-safe collector shared by all stages.

    Latency samples are kept in a sliding window (the last ``window`` per stage) so a long run
    reports recent behaviour with bounded memory; counters are totals since start.
    """

    def __init__(self, window: int = 2000) -> None:
        self._lock = threading.Lock()
        self._window = window
        self._latency: dict[str, collections.deque[float]] = {}
        self._counters: collections.Counter[str] = collections.Counter()
        self._gauges: dict[str, float] = {}
        self._skew_ms: collections.deque[float] = collections.deque(maxlen=window)
        self._output_times: collections.deque[float] = collections.deque(maxlen=window)
        self._first_output_at: float | None = None
        self.frames_out = 0

    def record_latency(self, stage: str, ms: float) -> None:
        """Add one latency sample (milliseconds) for ``stage``."""
        with self._lock:
            samples = self._latency.get(stage)
            if samples is None:
                samples = self._latency[stage] = collections.deque(maxlen=self._window)
            samples.append(ms)

    def count(self, name: str, n: int = 1) -> None:
        """Increment a counter (``drops.ir``, ``unpaired``, ...)."""
        with self._lock:
            self._counters[name] += n

    def record_pair(self, skew_s: float) -> None:
        """Record the timestamp skew of one pair."""
        with self._lock:
            self._skew_ms.append(skew_s * 1000.0)

    def record_output(self) -> None:
        """Count one fused frame delivered to the sinks (drives the fps figures)."""
        with self._lock:
            self.frames_out += 1
            now = time.perf_counter()
            if self._first_output_at is None:
                self._first_output_at = now
            self._output_times.append(now)

    def set_counter(self, name: str, value: int) -> None:
        """Set a counter to an absolute value (for counts owned by another object, such as queue drops)."""
        with self._lock:
            self._counters[name] = value

    def set_gauge(self, name: str, value: float) -> None:
        """Set a current value (``registration_quality``); unlike counters it may go down."""
        with self._lock:
            self._gauges[name] = value

    def gauges(self) -> dict[str, float]:
        """A copy of all gauges."""
        with self._lock:
            return dict(self._gauges)

    def stages(self) -> dict[str, Percentiles]:
        """Latency percentiles per stage, in the order stages first reported."""
        with self._lock:
            snapshot = {name: list(samples) for name, samples in self._latency.items()}
        return {name: Percentiles.of(samples) for name, samples in snapshot.items()}

    def counters(self) -> dict[str, int]:
        """A copy of all counters."""
        with self._lock:
            return dict(self._counters)

    def fps(self) -> float:
        """Average output frames per second over the last ``window`` output frames."""
        with self._lock:
            if len(self._output_times) < 2:
                return 0.0
            first, last = self._output_times[0], self._output_times[-1]
            return (len(self._output_times) - 1) / (last - first) if last > first else 0.0

    def run_fps(self) -> float:
        """Output frames per second from the first output frame to the last (the whole run's rate)."""
        with self._lock:
            if self.frames_out < 2 or self._output_times[-1] <= self._first_output_at:
                return 0.0
            return (self.frames_out - 1) / (self._output_times[-1] - self._first_output_at)

    def live_fps(self) -> float:
        """Output frames per second over the last :data:`LIVE_RATE_WINDOW_S` (0 soon after output stops);
        :meth:`fps` is the throughput over the frames kept."""
        with self._lock:
            times = list(self._output_times)
        return recent_rate(times, time.perf_counter())

    def skew(self) -> Percentiles:
        """Distribution of ``|ir - vis|`` timestamp skew of the pairs, in milliseconds."""
        with self._lock:
            return Percentiles.of([abs(s) for s in self._skew_ms])

    def summary_line(self, *, final: bool = False) -> str:
        """One log line: fps (of the last seconds; ``final``: of the whole run), end-to-end latency, drops and skew."""
        e2e = self.stages().get(END_TO_END, Percentiles.of([]))
        counters = self.counters()
        drops = " ".join(f"{k.split('.', 1)[1]}={v}" for k, v in sorted(counters.items()) if k.startswith("drops."))
        fps = self.run_fps() if final else self.live_fps()
        return (f"frames={self.frames_out} fps={fps:.1f} latency p50={e2e.p50_ms:.1f}ms "
                f"p95={e2e.p95_ms:.1f}ms drops[{drops or 'none'}] unpaired={counters.get('unpaired', 0)} "
                f"skew p95={self.skew().p95_ms:.1f}ms")

    def as_dict(self) -> dict:
        """Everything as plain data (for ``--json`` and the bench report)."""
        return {
            "fps": self.fps(),
            "frames": self.frames_out,
            "stages": {name: vars(p) for name, p in self.stages().items()},
            "counters": self.counters(),
            "gauges": self.gauges(),
            "skew_ms": vars(self.skew()),
        }

    def table(self) -> str:
        """A human-readable table of stage latency percentiles."""
        rows = [f"{'stage':<16}{'count':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'mean ms':>10}"]
        stages = self.stages()
        for name, p in stages.items():
            rows.append(f"{name:<16}{p.count:>8}{p.p50_ms:>10.2f}{p.p95_ms:>10.2f}{p.p99_ms:>10.2f}{p.mean_ms:>10.2f}")
        if any(p.count >= self._window for p in stages.values()):  # a long run: the count is not the run's total
            rows.append(f"(count and percentiles: the last {self._window} samples of each stage)")
        return "\n".join(rows)
