"""The HTTP health endpoint on a running pipeline: /health JSON, /metrics (Prometheus), 404 elsewhere."""

from __future__ import annotations

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
    finally:
        pipeline.stop()
        runner.join(10)
    with pytest.raises(OSError):
        http_get(f"{url}/health")  # the port is released with the pipeline
