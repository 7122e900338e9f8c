"""The band composition shared by the network and the classical fuser: decomposition, rule, gates, locality."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
import torch

from streamfuse.config import FusionConfig
from streamfuse.fusers import build_fuser
from streamfuse.fusers.classical import ClassicalFuser, fuse_luminance
from streamfuse.models import bands, bands_cv
from streamfuse.models.network import FusionNet
from streamfuse.models.rule import base_step_correction, damage_gates
from streamfuse.text import HashingTextEncoder, Router, load_bank


def naive_box(image: np.ndarray, radius: int) -> np.ndarray:
    height, width = image.shape
    out = np.empty_like(image)
    for y in range(height):
        for x in range(width):
            out[y, x] = image[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1].mean()
    return out


@pytest.mark.parametrize("radius", [1, 3, 12])
def test_box_filters_are_border_shrunk_means(radius):
    image = np.random.default_rng(radius).random((9, 14)).astype(np.float32)
    expected = naive_box(image, radius)
    as_tensor = torch.from_numpy(image)[None, None]
    assert np.allclose(bands.box_filter(as_tensor, radius)[0, 0].numpy(), expected, atol=1e-5)
    pooled = bands.box_filter(as_tensor.clone().requires_grad_(), radius)  # the GPU's and the gradient's path
    assert pooled.requires_grad and np.allclose(pooled[0, 0].detach().numpy(), expected, atol=1e-5)
    assert np.allclose(bands_cv.box_filter(image, radius), expected, atol=1e-5)


def test_bands_add_up_to_the_sources():
    sources = torch.rand(2, 2, 32, 48)
    split = bands.decompose(sources)
    assert torch.allclose(split.fine + bands.upsample(split.half), sources, atol=1e-6)
    assert torch.allclose(sum(split.coarse), split.half, atol=1e-6)
    assert split.coarse[0].shape == (2, 2, 16, 24)


def test_no_injection_keeps_the_visible_image_but_the_stronger_finest_detail():
    vis = torch.rand(1, 1, 32, 32)
    same = bands.decompose(torch.cat([vis, vis], dim=1))
    assert torch.allclose(bands.compose(same, torch.zeros(1, 3, 8, 8)), vis, atol=1e-6)
    flat_ir = bands.decompose(torch.cat([torch.full_like(vis, 0.5), vis], dim=1))
    assert torch.allclose(bands.compose(flat_ir, torch.zeros(1, 3, 8, 8)), vis, atol=1e-6)


def scene(size=(128, 96)):
    """A textured visible image with a person hidden in shadow; the thermal image shows them hot."""
    width, height = size
    rng = np.random.default_rng(0)
    vis = (rng.random((height, width)) * 120 + 60).astype(np.uint8)
    vis[30:70, 50:70] = 35
    ir = np.full((height, width), 70, np.uint8)
    ir[30:70, 50:70] = 240
    return ir, vis


def test_black_stays_black():
    ir, vis = scene()
    ir[:, :40] = 0
    vis[:, :40] = 0
    assert fuse_luminance(ir, vis)[:, :30].max() == 0
    model = FusionNet(load_bank().ids).eval()
    with torch.no_grad():
        fused = model(torch.from_numpy(ir).float()[None, None] / 255, torch.from_numpy(vis).float()[None, None] / 255,
                      model.intent_weights({"balanced": 1}))
    assert float(fused[..., :, :30].max()) < 0.5 / 255


@pytest.mark.parametrize("size", [(20, 30), (21, 33)])
def test_screened_poisson_solves_its_equation_alike_in_opencv_and_torch(size):
    """``(s - Laplacian) C = div(flux)`` with no flux across the borders: the DCT solve (CPU) and the FFT
    of the mirrored divergence (GPU, training) give the same C, which satisfies the equation."""
    height, width = size
    rng = np.random.default_rng(0)
    flux_rows = rng.standard_normal((height - 1, width)).astype(np.float32)
    flux_cols = rng.standard_normal((height, width - 1)).astype(np.float32)
    solved = bands_cv.screened_poisson(flux_rows, flux_cols, 1 / 256)
    divergence = np.zeros(size, np.float32)
    divergence[:-1] += flux_rows
    divergence[1:] -= flux_rows
    divergence[:, :-1] += flux_cols
    divergence[:, 1:] -= flux_cols
    padded = np.pad(solved, 1, mode="edge")  # replicated border: no flux across it
    laplacian = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * solved
    assert np.abs(solved / 256 - laplacian - divergence).max() < 1e-4
    with_gradients = bands.screened_poisson(torch.from_numpy(flux_rows)[None, None].requires_grad_(),
                                            torch.from_numpy(flux_cols)[None, None], 1 / 256)
    assert np.abs(with_gradients.detach().numpy()[0, 0] - solved).max() < 1e-4


def test_damage_gates_find_each_kind_of_damage():
    rng = np.random.default_rng(1)
    ir = (0.3 + 0.4 * rng.random((24, 60))).astype(np.float32)  # textured thermal everywhere
    vis = (0.3 + 0.4 * rng.random((24, 60))).astype(np.float32)  # textured visible, then damaged:
    vis[:, :10] = 0.998                     # saturated
    vis[:, 22:34] = 0.7                     # flat bright grey: contrast gone
    vis[:, 48:] = 0.03                      # dark
    gates = damage_gates(ir, vis, bands_cv.box_filter)
    fine = np.s_[:, 14:18]                  # a textured, well-exposed stretch
    assert gates["saturated"][:, :6].min() > 0.9 and gates["saturated"][:, 14:].max() == 0
    assert gates["dark"][:, 52:].min() > 0.9 and gates["dark"][:, :44].max() == 0
    assert gates["low_contrast"][:, 26:30].min() > 0.9
    for kind, gate in gates.items():
        assert gate[fine].max() == 0, kind
    as_tensor = damage_gates(torch.from_numpy(ir), torch.from_numpy(vis), bands.box_filter)
    for kind, gate in gates.items():
        assert np.allclose(as_tensor[kind].numpy(), gate, atol=0.01), kind  # sqrt of ~0 variances differ a little


def test_the_fog_gate_covers_flat_thermal_walls_between_edges_not_only_the_edges():
    """A fog bank over a street of flat, differently warm house fronts (quarter resolution, 10 px wide):
    the thermal image has structure only at the fronts' edges, yet it has something to show all over."""
    ir = np.repeat(np.tile(np.repeat(np.float32([0.3, 0.5]), 10), 4)[None, :], 40, axis=0)
    vis = np.full_like(ir, 0.7)  # bright, flat: fog
    fog = damage_gates(ir, vis, bands_cv.box_filter)["low_contrast"]
    interior = fog[10:30, 10:70]
    assert interior.min() > 0.5 and interior.mean() > 0.7  # edges only (the thermal structure alone): 0 and 0.4


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(HashingTextEncoder(), load_bank())


def test_classical_glare_prompt_acts_only_where_the_visible_image_is_saturated(router):
    ir, vis = scene((160, 96))
    blobs = np.random.default_rng(2).integers(20, 235, (8, 12)).astype(np.uint8)
    ir = cv2.resize(blobs, (160, 96), interpolation=cv2.INTER_LINEAR)  # warm and cool shapes
    vis[:, :50] = 253  # a bloom over the left third hides the scene the thermal camera still shows
    fuser = ClassicalFuser()
    balanced = fuser.fuse(ir, vis).astype(int)
    fuser.condition(router.route("oncoming headlights are blinding"))
    assert "glare" in fuser.weights
    glare = fuser.fuse(ir, vis).astype(int)
    assert np.abs(glare[:, 90:] - balanced[:, 90:]).max() <= 1  # the visible camera is fine there
    assert np.abs(glare[:, :40] - ir[:, :40]).mean() < np.abs(balanced[:, :40] - ir[:, :40]).mean() - 20


def smoke_scene(width=320, height=256):
    """A dense smoke cloud with a soft edge (no visible outline) over a textured scene with a warm person in it;
    the thermal image sees through the smoke. Returns the pair and the cloud's opacity."""
    rng = np.random.default_rng(5)
    ir = cv2.resize(rng.integers(40, 160, (8, 10)).astype(np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    ir[150:200, 140:160] = 235
    vis = cv2.resize(rng.integers(30, 200, (32, 40)).astype(np.uint8), (width, height),
                     interpolation=cv2.INTER_NEAREST)
    cloud = np.zeros((height, width), np.float32)
    cv2.circle(cloud, (150, 150), 85, 1.0, -1)
    cloud = cv2.GaussianBlur(cloud, (0, 0), 18)
    return ir, (vis * (1 - cloud) + 252 * cloud).astype(np.uint8), cloud


def test_the_base_step_correction_keeps_the_steps_a_repair_draws():
    """Where the repair map is 1 the correction takes out nothing; the two compositions agree with a repair map."""
    ir, vis, cloud = smoke_scene()
    split = bands_cv.split(ir, vis)
    base_ir, base_vis = (bands_cv.half(coarse[-1]) for coarse in split.coarse)
    weight = cv2.resize(cloud, base_ir.shape[::-1], interpolation=cv2.INTER_AREA)  # the thermal base in the cloud
    correct = functools.partial(base_step_correction, base_ir, base_vis, weight, bands_cv.screened_poisson,
                                bands_cv.box_filter)
    assert np.abs(correct()).max() > 0.02  # the cloud's soft edge is a step inside regions smooth in both bases
    assert np.abs(correct(repair=np.ones_like(weight))).max() < 1e-6
    injection = [np.zeros_like(weight), np.zeros_like(weight), weight]
    opencv = bands_cv.compose(split, injection, repair=weight).astype(np.float32)
    in_torch = bands.compose(bands.decompose(torch.from_numpy(np.stack([ir, vis])[None] / np.float32(255))),
                             torch.from_numpy(np.stack(injection)[None]), repair=torch.from_numpy(weight)[None, None])
    assert np.abs(in_torch[0, 0].numpy().clip(0, 1) * 255 - opencv).mean() < 1


def test_the_fog_prompt_shows_the_thermal_scene_inside_dense_smoke(router):
    """Before the correction knew about repairs, it put most of the cloud's brightness back: 47 (classical)
    and 74 (model) grey levels from the thermal image in the cloud's core against 36 and 66 now."""
    ir, vis, cloud = smoke_scene()
    core = cloud > 0.98
    for fuser, bound in ((ClassicalFuser(), 40), (build_fuser(FusionConfig(fuser="model")), 70)):
        fuser.condition(router.route(""))
        balanced = fuser.fuse(ir, vis).astype(int)  # gray in, gray out
        fuser.condition(router.route("see through the smoke"))
        prompted = fuser.fuse(ir, vis).astype(int)
        assert np.abs(prompted - ir)[core].mean() < bound < np.abs(balanced - ir)[core].mean(), fuser.name
        assert np.abs(prompted - balanced)[cloud < 0.01].max() <= 10, fuser.name  # the clear parts unchanged
