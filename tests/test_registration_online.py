"""Online registration refinement: a background re-estimate that moves the transform only when it is sure."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from conftest import shared_data, static_rig
from streamfuse.config import config_from_dict
from streamfuse.errors import ConfigError
from streamfuse.imageio import list_images, read_image
from streamfuse.pipeline import Pipeline
from streamfuse.registration import HomographyRegistrar
from streamfuse.registration.estimate import displacement_px
from streamfuse.registration.online import OnlineRefiner
from streamfuse.sinks import Subscriber
from streamfuse.stats import PipelineStats

#: The rig's misalignment added to the registered TNO sequence.
SHIFT = np.array([[1.0, 0, 8.0], [0, 1.0, -5.0], [0, 0, 1]])


def static_scene(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return static_rig(count, SHIFT)


def unrelated_pairs(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Infrared of one scene, visible of another."""
    folder = shared_data("tno_cddfuse")
    ir, vis = read_image(list_images(folder / "ir")[0]), read_image(list_images(folder / "vi")[3])
    return [(ir, cv2.resize(vis, ir.shape[1::-1]))] * count


def refiner_for(matrix, **keys) -> tuple[OnlineRefiner, HomographyRegistrar, PipelineStats]:
    config = config_from_dict({"registration": {"matrix": np.asarray(matrix).tolist(), "refine_every_s": 1.0,
                                                "refine_pairs": 3, **keys}}).registration
    registrar, stats = HomographyRegistrar(config.matrix), PipelineStats()
    return OnlineRefiner(registrar, config, stats), registrar, stats


def offer_all(refiner: OnlineRefiner, pairs) -> None:
    refiner._sample_every_s = 0  # take every offered pair (the pipeline spreads them over the interval)
    for ir, vis in pairs:
        refiner.offer(cv2.cvtColor(ir, cv2.COLOR_BGR2GRAY) if ir.ndim == 3 else ir, vis)


def test_an_accepted_nearby_estimate_is_applied_smoothed():
    pairs = static_scene(3)
    start = np.eye(3)
    refiner, registrar, stats = refiner_for(start, refine_smoothing=0.5)
    offer_all(refiner, pairs)
    estimate = refiner.check()
    assert estimate.accepted
    shape = pairs[0][1].shape[:2]
    before = displacement_px(start, estimate.matrix, shape)
    after = displacement_px(registrar.matrix, estimate.matrix, shape)
    assert after == pytest.approx(before / 2, rel=0.1)  # halfway: refine_smoothing 0.5
    report = refiner.report()
    assert report["checks"] == 1 and report["applied"] == 1 and report["last"].startswith("applied")
    assert report["quality"] == registrar.quality == stats.gauges()["registration_quality"]
    refiner.check()  # the next check moves on toward the estimate
    assert displacement_px(registrar.matrix, estimate.matrix, shape) < after


def test_a_refused_or_distant_estimate_leaves_the_transform_alone():
    flat = [(np.full((216, 288), 90, np.uint8), np.full((216, 288, 3), 120, np.uint8))] * 3
    for pairs in (unrelated_pairs(3), flat):
        refiner, registrar, _ = refiner_for(np.eye(3))
        offer_all(refiner, pairs)
        assert not refiner.check().accepted
        assert np.array_equal(registrar.matrix, np.eye(3)) and refiner.report()["refused"] == 1
    refiner, registrar, _ = refiner_for(np.eye(3), refine_max_change_px=1.0)
    offer_all(refiner, static_scene(3))
    assert refiner.check().accepted
    assert np.array_equal(registrar.matrix, np.eye(3))
    assert refiner.report()["too_far"] == 1 and "recalibrate" in refiner.report()["last"]


def test_refinement_keys_are_checked():
    for key, value, message in (("refine_every_s", 0, "must be positive"), ("refine_smoothing", 1.5, "(0, 1]"),
                                ("refine_pairs", 0, "at least 1")):
        registration = {"mode": "identity", "refine_every_s": 1.0, key: value}
        with pytest.raises(ConfigError, match=re.escape(f"registration.{key}: ") + ".*" + re.escape(message)):
            config_from_dict({"registration": registration})


def test_a_running_pipeline_refines_and_reports_quality_in_health_and_headers(tmp_path, free_port):
    """The pairing stage feeds the refiner; a check while running changes the transform of later pairs,
    and its quality reaches /health, the statistics and the ZeroMQ headers. (The check is called here,
    on small frames, rather than waited for, so the 6 s of paced frames leave room for a slow machine.)"""
    pairs = static_scene(36)
    for name, index in (("ir", 0), ("vis", 1)):
        (tmp_path / name).mkdir()
        for number, pair in enumerate(pairs):
            small = cv2.resize(pair[index], (320, 240), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(tmp_path / name / f"{number:03d}.png"), small)
    endpoint = f"tcp://127.0.0.1:{free_port}"
    config = config_from_dict({
        "sources": {name: {"type": "images", "path": str(tmp_path / name), "fps": 6, "realtime": True}
                    for name in ("ir", "vis")},
        "registration": {"matrix": np.eye(3).tolist(), "refine_every_s": 3600, "refine_pairs": 2},
        "fusion": {"fuser": "classical"},
        "sinks": [{"type": "zmq", "endpoint": endpoint, "encoding": "raw", "lossless": True,
                   "wait_for_subscribers": 1}],
        "stats": {"log_every_s": 0},
    })
    headers = []
    with Subscriber(endpoint, keep="all") as subscriber, Pipeline(config) as pipeline:
        pipeline.start()
        while len(headers) < len(pairs):
            frame = subscriber.receive(30)
            assert frame is not None, f"only {len(headers)} frames arrived"
            headers.append(frame.header)
            if len(headers) == 2:
                assert pipeline.refiner.check().accepted
        pipeline.join(30)
        health = pipeline.health()
    assert not pipeline.errors()
    registration = health["registration"]
    assert registration["mode"] == "homography" and registration["checks"] == registration["applied"] == 1
    assert headers[0]["registration_quality"] is None  # paired before the check
    assert headers[-1]["registration_quality"] == registration["quality"] > 0
    assert pipeline.stats.as_dict()["gauges"]["registration_quality"] == registration["quality"]
    assert not np.array_equal(pipeline.registrar.matrix, np.eye(3))
