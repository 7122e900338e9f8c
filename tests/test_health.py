"""The HTTP health endpoint on a running pipeline: /health JSON, /metrics (Prometheus), 404 elsewhere."""

from __future__ import annotations

import http.client
import json
import re
import threading

import pytest

from conftest import REPO, http_get, wait_until
from streamfuse.config import config_from_dict
from streamfuse.pipeline import Pipeline


def exported_metric_names(text: str) -> set[str]:
    """The names of the samples in a Prometheus text exposition."""
    return {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def documented_metric_names() -> set[str]:
    """The metric names the table in docs/live.md lists (first column)."""
    text = (REPO / "docs" / "live.md").read_text()
    return set(re.findall(r"^\| `(streamfuse_[a-z_]+)` \|", text, flags=re.MULTILINE))


def test_health_and_metrics_endpoints_report_a_live_pipeline(tmp_path):
    camera = {"type": "synthetic", "fps": 30, "realtime": True}
    pipeline = Pipeline(config_from_dict({
        "synthetic": {"width": 64, "height": 48},
        "sources": {"ir": dict(camera), "vis": dict(camera)},
        "fusion": {"fuser": "classical"},
        "sinks": [{"type": "video", "path": str(tmp_path / "rec.mp4")}],
        "health": {"enabled": True, "port": 0, "metrics": True},
        "stats": {"log_every_s": 0},
    }))
    runner = threading.Thread(target=pipeline.run, kwargs={"install_signal_handlers": False})
    runner.start()
    try:
        wait_until(lambda: pipeline.frames_fused >= 20, 10, "20 fused frames")
        url = pipeline.health_server.url
        code, body = http_get(f"{url}/health")
        health = json.loads(body)
        assert code == 200 and health["status"] == "ok" and health["pair_state"] == "paired"
        assert health["frames"] >= 20 and health["latency_ms"]["p95"] > 0
        assert set(health["queues"]) == {"source.ir", "source.vis", "pairs", "sink.0"}
        assert health["recording"]["sinks.0"]["state"] == "recording"
        for name in ("ir", "vis"):
            source = health["sources"][name]
            assert source["state"] == "running" and 20 < source["fps"] < 40
            assert (source["disconnects"], source["reconnects"], source["stalls"]) == (0, 0, 0)
        code, text = http_get(f"{url}/metrics")
        assert code == 200
        assert 'streamfuse_source_state{source="ir",state="running"} 1.0' in text
        assert "streamfuse_output_frames_total" in text and 'streamfuse_latency_ms{quantile="p95"}' in text
        assert 'streamfuse_recording_suspended{sink="sinks.0"} 0.0' in text
        assert exported_metric_names(text) == documented_metric_names()
        assert http_get(f"{url}/secrets")[0] == 404
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=5)  # a DNS-rebinding page's own name
        connection.request("GET", "/health", headers={"Host": f"127.0.0.1.attacker.example:{port}"})
        assert connection.getresponse().status == 403
        connection.close()
        for method, status in (("HEAD", 200), ("PUT", 405), ("DELETE", 405)):  # HEAD was 501 (uptime monitors)
            connection = http.client.HTTPConnection(host, int(port), timeout=5)
            connection.request(method, "/health")
            response = connection.getresponse()
            assert response.status == status and (response.read() == b"") == (method == "HEAD"), method
            assert status == 200 or response.getheader("Allow") == "GET, HEAD"
            connection.close()
    finally:
        pipeline.stop()
        runner.join(10)
    with pytest.raises(OSError):
        http_get(f"{url}/health")  # the port is released with the pipeline


def test_rates_fall_to_zero_when_frames_stop_coming():
    """A lost camera kept reporting its last frame rate (15.8 fps while reconnecting for 25 s), and so did the
    output while paused: an alert on fps 0 never fired. Rates are over the last LIVE_RATE_WINDOW_S now."""
    from streamfuse.stats import LIVE_RATE_WINDOW_S, recent_rate

    times = [i / 15 for i in range(300)]  # 15 fps for 20 s
    assert recent_rate(times, times[-1] + 0.01) == pytest.approx(15.0, rel=0.02)
    assert recent_rate(times[-32:], times[-1] + 0.01) == pytest.approx(15.0, rel=0.05)  # a short history
    assert recent_rate(times[:10], times[9] + 0.01) == pytest.approx(15.0, rel=0.05)  # a young stream
    assert recent_rate(times, times[-1] + LIVE_RATE_WINDOW_S / 2) == pytest.approx(7.5, rel=0.05)
    assert recent_rate(times, times[-1] + LIVE_RATE_WINDOW_S + 0.01) == 0.0
    assert recent_rate([], 1.0) == 0.0


def test_a_pipeline_that_stopped_delivering_reports_zero_fps(tmp_path):
    """The same through the health report: output and source rates of a run whose frames stopped."""
    import time

    from streamfuse.stats import LIVE_RATE_WINDOW_S

    config = config_from_dict({"sources": {"ir": {"type": "synthetic", "frames": 20, "fps": 30},
                                           "vis": {"type": "synthetic", "frames": 20, "fps": 30}},
                               "synthetic": {"width": 64, "height": 48}, "fusion": {"fuser": "classical"},
                               "sinks": [{"type": "images", "path": str(tmp_path / "out")}]})
    with Pipeline(config) as pipeline:
        pipeline.run()
        live = pipeline.health()
        time.sleep(LIVE_RATE_WINDOW_S + 0.2)
        stopped = pipeline.health()
    assert live["fps"] > 0 and stopped["fps"] == 0.0
    assert all(source["fps"] == 0.0 for source in stopped["sources"].values())


def test_no_latency_is_reported_before_the_first_frame():
    """It said 0 ms (p50, p95, p99) while nothing had come out: a dashboard read that as perfectly fast."""
    pipeline = Pipeline(config_from_dict({"synthetic": {"width": 64, "height": 48}, "fusion": {"fuser": "classical"},
                                          "sinks": []}))
    assert pipeline.health()["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    pytest.importorskip("prometheus_client")
    from streamfuse.health import _prometheus_renderer

    assert "streamfuse_latency_ms{" not in _prometheus_renderer()(pipeline.health()).decode()


def test_a_client_gone_mid_answer_is_a_debug_line_not_a_traceback_on_stderr(capfd, caplog):
    """socketserver printed 'Exception occurred during processing of request ... BrokenPipeError' and a
    traceback on standard error for every client that closed early (a closed tab, curl --max-filesize)."""
    import logging
    import socket
    import time

    from streamfuse.webserver import WebServer, respond

    answered = threading.Event()

    def answer(request):
        time.sleep(0.2)  # the client is gone by now
        try:
            respond(request, 200, b"x" * 4_000_000, "application/octet-stream")
        finally:
            answered.set()

    server = WebServer("127.0.0.1", 0, answer, section="health", loopback_only=True)
    try:
        with caplog.at_level(logging.DEBUG, logger="streamfuse"):
            client = socket.create_connection(("127.0.0.1", server.port))
            client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.close()  # a reset, as a browser tab closed
            assert answered.wait(5)
            time.sleep(0.2)
        assert "Traceback" not in capfd.readouterr().err
        assert "went away" in caplog.text
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.putrequest("GET", "/health", skip_host=True)
        connection.endheaders()
        reply = connection.getresponse()
        assert reply.status == 403 and "no Host header" in reply.read().decode()
    finally:
        server.close()
