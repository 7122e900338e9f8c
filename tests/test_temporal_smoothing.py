"""Temporal smoothing of the model's decisions in the CPU worker: steadier video, no carry-over
across scene cuts or between streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_data
from streamfuse.colour import as_gray
from streamfuse.config import FusionConfig, SyntheticConfig
from streamfuse.evaluation import to_rgb
from streamfuse.fusers import build_fuser
from streamfuse.imageio import list_images, read_image
from streamfuse.inference import InferenceWorker
from streamfuse.metrics.temporal import FlickerMeter
from streamfuse.models.checkpoint import load_model
from streamfuse.models.cpu import fuse_on_cpu
from streamfuse.models.network import MAPS
from streamfuse.sources.synthetic import build_scene


@pytest.fixture(scope="module")
def network():
    return load_model()[0]


@pytest.fixture(autouse=True)
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def noisy_still(count: int, seed: int, time_of_day: str = "night") -> list[tuple[np.ndarray, np.ndarray]]:
    """A still scene seen through noisy sensors: any change between frames is noise."""
    scene = build_scene(SyntheticConfig(width=160, height=128, seed=seed, time_of_day=time_of_day, people=3))
    ir, vis = scene.render_ir(1.0), scene.render_vis(1.0)
    rng = np.random.default_rng(seed)
    jitter = lambda image: np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)  # noqa: E731
    return [(jitter(ir), jitter(vis)) for _ in range(count)]


def fuse_stream(network, frames, smoothing: float, stream: int = 0) -> list[np.ndarray]:
    with InferenceWorker(network, device="cpu", temporal_smoothing=smoothing) as worker:
        return [future.result() for future in [worker.submit(stream, ir, vis) for ir, vis in frames]]


def interval_flicker(frames, fused) -> float:
    meter = FlickerMeter("interval")
    for (ir, vis), out in zip(frames, fused, strict=True):
        meter.update(ir, to_rgb(vis), to_rgb(out))
    return meter.value


def decision_changes(network, frames, smoothing: float) -> float:
    """Mean frame-to-frame change of the network's decisions (its maps) on one stream, as the worker carries them."""
    memory = torch.full((1, *network.memory_shape(*frames[0][0].shape)), float("nan"))
    weights = network.intent_weights({"balanced": 1.0})
    decisions = []
    for ir, vis in frames:
        _, memory = fuse_on_cpu(network, [ir], [as_gray(vis)], weights, memory, smoothing)
        decisions.append(memory[:, :MAPS])
    return float(np.mean([(b - a).abs().mean() for a, b in zip(decisions[:-1], decisions[1:], strict=True)]))


def test_smoothing_steadies_a_still_scene(network):
    frames = noisy_still(12, seed=3)
    plain = fuse_stream(network, frames, 0.0)
    smooth = fuse_stream(network, frames, 0.5)
    assert np.array_equal(plain[0], smooth[0])  # the first frame has nothing to carry over
    # Smoothing acts on the decisions, which then change far less; the finest band (most of what sensor
    # noise moves) is chosen per frame, so the video is steadier by less, but never less steady.
    assert decision_changes(network, frames, 0.5) < 0.7 * decision_changes(network, frames, 0.0)
    assert interval_flicker(frames, smooth) <= interval_flicker(frames, plain)


def test_model_video_flickers_less_than_the_classical_fuser_on_nato_camp(network):
    folder = shared_data("tno_video_sequences", "Nato_camp_sequence")
    frames = [(as_gray(read_image(ir)), read_image(vis)) for ir, vis in
              zip(list_images(folder / "thermal"), list_images(folder / "visual"), strict=True)]
    classical = build_fuser(FusionConfig(fuser="classical"))
    model = interval_flicker(frames, fuse_stream(network, frames, FusionConfig().temporal_smoothing))
    assert model < interval_flicker(frames, [classical.fuse(ir, vis) for ir, vis in frames])


def test_a_scene_cut_starts_afresh_and_streams_do_not_mix(network):
    first, second = noisy_still(3, seed=1, time_of_day="day"), noisy_still(3, seed=2)
    alone = fuse_stream(network, second, 0.5)
    after_cut = fuse_stream(network, first + second, 0.5)[3:]
    assert np.array_equal(after_cut[0], alone[0])  # nothing of the old scene in the new one
    with InferenceWorker(network, device="cpu", temporal_smoothing=0.5) as worker:
        futures = [(worker.submit(0, *a), worker.submit(1, *b)) for a, b in zip(first, second, strict=True)]
        interleaved = [(f0.result(), f1.result()) for f0, f1 in futures]
    assert all(np.array_equal(got, want) for (_, got), want in zip(interleaved, alone, strict=True))


def test_memory_of_another_shape_is_refused(network):
    ir = vis = torch.rand(1, 1, 64, 64)
    with pytest.raises(ValueError, match="memory of shape"):
        network(ir, vis, network.intent_weights({}), torch.zeros(2, 7, 16, 16), 0.5)


def test_smoothing_out_of_range_is_a_config_error():
    from streamfuse.config import config_from_dict
    from streamfuse.errors import ConfigError

    with pytest.raises(ConfigError, match="fusion.temporal_smoothing: must be in"):
        config_from_dict({"fusion": {"temporal_smoothing": 1.0}})
    assert FusionConfig().temporal_smoothing == 0.5
