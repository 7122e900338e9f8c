"""The HTTP health endpoint of a running pipeline.

``GET /health`` answers JSON (see :meth:`streamfuse.pipeline.Pipeline.health`): ``status`` is
``ok`` (both cameras running), ``degraded`` (a camera is starting or reconnecting, or a recording
is suspended for lack of disk space; HTTP 200) or ``failed`` (a stage failed; HTTP 503), with
per-source state, fps, drops, reconnects, stalls per hour and last error, the state of each
recording and the end-to-end latency. ``GET /metrics`` serves the same numbers in the Prometheus
text format when ``health.metrics`` is on (needs ``pip install "streamfuse[metrics]"``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from streamfuse.config import is_loopback
from streamfuse.errors import ConfigError
from streamfuse.sources.base import SourceState
from streamfuse.webserver import WebServer, refuse_method, respond

Report = Callable[[], dict[str, Any]]

#: Per-source numbers exported as Prometheus metrics: (health key, metric name, type, help).
_SOURCE_METRICS = (
    ("fps", "streamfuse_source_fps", "gauge", "Frames per second delivered by the source"),
    ("frames", "streamfuse_source_frames", "counter", "Frames read from the source"),
    ("drops", "streamfuse_source_drops", "counter", "Frames dropped because the pipeline was busy"),
    ("disconnects", "streamfuse_source_disconnects", "counter", "Times the source was lost"),
    ("reconnects", "streamfuse_source_reconnects", "counter", "Times a lost source came back"),
    ("stalls", "streamfuse_source_stalls", "counter", "Times the watchdog found the source silent"),
)
_STATES = tuple(state.value for state in SourceState)


class HealthServer:
    """Serves ``/health`` (and optionally ``/metrics``) from ``report()`` on its own thread.

    Args:
        host: Address to bind (``127.0.0.1`` keeps it local).
        port: TCP port (0 picks a free one; see :attr:`port`).
        report: Returns the health dictionary; called once per request.
        metrics: Also serve ``/metrics`` (Prometheus).
    """

    def __init__(self, host: str, port: int, report: Report, *, metrics: bool = False) -> None:
        self.report = report
        self._metrics = _prometheus_renderer() if metrics else None
        self._web = WebServer(host, port, self._answer, section="health", loopback_only=is_loopback(host))
        self.port = self._web.port
        self.url = self._web.url

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if request.command not in ("GET", "HEAD"):  # HEAD: uptime monitors that only check the status
            refuse_method(request, "GET, HEAD")
        elif path == "/health":
            report = self.report()
            respond(request, 503 if report.get("status") == "failed" else 200, json.dumps(report).encode(),
                    "application/json")
        elif path == "/metrics" and self._metrics is not None:
            respond(request, 200, self._metrics(self.report()), "text/plain; version=0.0.4; charset=utf-8")
        else:
            respond(request, 404, b'{"error": "not found; try /health"}', "application/json")

    def close(self) -> None:
        """Stop serving and release the port."""
        self._web.close()


def _prometheus_renderer() -> Callable[[dict[str, Any]], bytes]:
    """A function turning a health report into Prometheus text (needs ``prometheus_client``)."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    except ImportError:
        raise ConfigError('health.metrics: needs the prometheus_client package; pip install "streamfuse[metrics]" '
                          "or set health.metrics: false") from None

    def render(report: dict[str, Any]) -> bytes:
        families = []
        for key, name, kind, text in _SOURCE_METRICS:
            family = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(name, text, labels=["source"])
            for source, health in report["sources"].items():
                family.add_metric([source], float(health[key]))
            families.append(family)
        state = GaugeMetricFamily("streamfuse_source_state", "1 for the source's current state",
                                  labels=["source", "state"])
        for source, health in report["sources"].items():
            for name in _STATES:
                state.add_metric([source, name], 1.0 if health["state"] == name else 0.0)
        families.append(state)
        frames = CounterMetricFamily("streamfuse_output_frames", "Fused frames delivered to the sinks")
        frames.add_metric([], float(report["frames"]))
        fps = GaugeMetricFamily("streamfuse_output_fps", "Output frames per second")
        fps.add_metric([], float(report["fps"]))
        latency = GaugeMetricFamily("streamfuse_latency_ms", "End-to-end latency percentiles (ms)", labels=["quantile"])
        for quantile in ("p50", "p95", "p99"):
            if report["latency_ms"][quantile] is not None:  # absent before the first frame (0 would read as fast)
                latency.add_metric([quantile], float(report["latency_ms"][quantile]))
        families += [frames, fps, latency]
        suspended = GaugeMetricFamily("streamfuse_recording_suspended", "1 while the recording is suspended "
                                      "(disk full), else 0", labels=["sink"])
        suspensions = CounterMetricFamily("streamfuse_recording_suspensions", "Times the disk filled up under "
                                          "the recording", labels=["sink"])
        lost = CounterMetricFamily("streamfuse_recording_frames_lost", "Frames not recorded for lack of disk space",
                                   labels=["sink"])
        deleted = CounterMetricFamily("streamfuse_recording_segments_deleted", "Oldest segments deleted by the "
                                      "ring (max_segments, max_mb, or to make room on a full disk)", labels=["sink"])
        for sink, health in report["recording"].items():
            suspended.add_metric([sink], 1.0 if health["state"] == "suspended" else 0.0)
            suspensions.add_metric([sink], float(health["suspensions"]))
            lost.add_metric([sink], float(health["frames_lost"]))
            deleted.add_metric([sink], float(health["segments_deleted"]))
        families += [suspended, suspensions, lost, deleted]
        registration = report.get("registration", {})
        if registration.get("quality") is not None:
            quality = GaugeMetricFamily("streamfuse_registration_quality", "Alignment score of the current "
                                        "registration on recent frames (online refinement)")
            quality.add_metric([], float(registration["quality"]))
            families.append(quality)

        class Snapshot:
            def collect(self):
                return families

        registry = CollectorRegistry()
        registry.register(Snapshot())
        return generate_latest(registry)

    return render
