"""Tests of the VIFB metrics (streamfuse.metrics.vifb).

Expected values are derived by hand on tiny arrays (the derivation is in the comments), checked against
properties the VIFB formulas imply, or -- in ``OCTAVE_REFERENCE`` -- taken from GNU Octave 7.3 running the
MATLAB files of the VIFB repository (xingchenzhang/VIFB, ``metrics/metrics*.m``) on the synthetic images built
below. Octave lacks ``freqspace`` and ``blkproc`` and its ``rgb2gray`` differs from MATLAB's, so for that run
they were replaced by MATLAB-semantics stand-ins (``freqspace``: ``((0:n-1) - floor(n/2)) * 2/n``;
``blkproc``: zero padding to whole blocks; ``rgb2gray``: MATLAB's weights, rounded for uint8).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import shared_data
from streamfuse.metrics import vifb

# ----------------------------------------------------------------------------------------------------------------
# Synthetic images (integer formulas, so they are identical on every platform)
# ----------------------------------------------------------------------------------------------------------------

H, W = 37, 50  # odd height and partial 16 x 16 blocks on purpose (Qcv), > 31 px for Qcb's Gaussians


def synth_ir() -> np.ndarray:
    i, j = np.mgrid[0:H, 0:W]
    hot = ((i - 18) ** 2 + (j - 30) ** 2 < 80) * 150
    return (40 + hot + (i * 7 + j * 3) % 23).astype(np.uint8)


def synth_vis_gray() -> np.ndarray:
    i, j = np.mgrid[0:H, 0:W]
    return ((i * 5 + j * 11 + (i * j) % 17 * 4) % 200 + 20).astype(np.uint8)


def synth_vis_rgb() -> np.ndarray:
    i, j = np.mgrid[0:H, 0:W]
    r = (i * 5 + j * 11 + (i * j) % 17 * 4) % 200 + 20
    g = (i * 3 + j * 2 + (i + 2 * j) % 13 * 9) % 240
    b = 255 - ((i * 9 + j * 4) % 180)
    return np.stack([r, g, b], axis=2).astype(np.uint8)


def synth_case(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ir, vis, fused) of the four synthetic cases of OCTAVE_REFERENCE."""
    ir, vis_gray, vis_rgb = synth_ir(), synth_vis_gray(), synth_vis_rgb()
    ir3 = np.stack([ir, ir // 2 + 60, 255 - ir], axis=2)
    if name == "A":  # all grey
        return ir, vis_gray, ((3 * ir.astype(int) + vis_gray) // 4).astype(np.uint8)
    if name == "B":  # grey IR, RGB visible, RGB fused (VIFB's "b1 == 1" branch)
        return ir, vis_rgb, ((vis_rgb.astype(int) + ir[:, :, None]) // 2).astype(np.uint8)
    if name == "C":  # all RGB
        return ir3, vis_rgb, ((vis_rgb.astype(int) + ir3) // 2).astype(np.uint8)
    if name == "D":  # grey IR, RGB visible, grey fused (sources go through rgb2gray)
        gray = (vis_rgb[:, :, 0].astype(int) + 2 * vis_rgb[:, :, 1] + vis_rgb[:, :, 2]) // 4
        return ir, vis_rgb, ((gray + ir) // 2).astype(np.uint8)
    raise KeyError(name)


# Octave 7.3 + image 2.14 running VIFB's metrics*.m (called as metricsX(vis, ir, fused), images read back with
# imread from lossless PNGs of the arrays above). Case D has no Qcb / Qcv: VIFB's code raises an error for an
# RGB source with a grey fused image there. Case D's Qabf is left out: with a non-integer rgb2gray source,
# whether a Sobel response is exactly 0 (angle pi/2) or +-1e-11 (angle +-pi/2) depends on the summation order.
OCTAVE_REFERENCE: dict[str, dict[str, float]] = {
    "A": {"Cross_entropy": 0.77959923059189029, "Entropy": 6.415584677204734, "Mutinf": 3.547827592634107,
          "Psnr": 47.821799730440759, "Avg_gradient": 10.82255063170412, "Edge_intensity": 82.648096283176315,
          "Qabf": 0.23636345635149597, "Variance": 40.322239218607756, "Spatial_frequency": 33.049586005502931,
          "Rmse": 1.0737431044582344, "Ssim": 1.0160878096801951, "Qcb": 0.60424970553107626,
          "Qcv": 859.12170043944116},
    "B": {"Cross_entropy": 1.0793317607607622, "Entropy": 6.6133088193769156, "Mutinf": 3.9196227908057715,
          "Psnr": 47.320452094255096, "Avg_gradient": 13.554827396362361, "Edge_intensity": 110.35501358019337,
          "Qabf": 0.46078115695907229, "Variance": 37.998334356280424, "Spatial_frequency": 40.502338938133676,
          "Rmse": 1.2135674321417791, "Ssim": 1.0511881689138782, "Qcb": 0.59609008263017149,
          "Qcv": 639.53002349005749},
    "C": {"Cross_entropy": 1.3108908582308929, "Entropy": 7.0399365203688049, "Mutinf": 4.4734688165560534,
          "Psnr": 48.498040377817119, "Avg_gradient": 13.711780585275804, "Edge_intensity": 109.8210625048542,
          "Qabf": 0.51851664128914676, "Variance": 36.29757271759474, "Spatial_frequency": 40.877097709073198,
          "Rmse": 0.92471559617306243, "Ssim": 1.1327675902262431, "Qcb": 0.56736042929061126,
          "Qcv": 611.08612433992005},
    "D": {"Cross_entropy": 1.7397258598623737, "Entropy": 6.2978514851803808, "Mutinf": 3.1139671231818822,
          "Psnr": 47.553106686767386, "Avg_gradient": 9.7081106599849232, "Edge_intensity": 75.879516344835224,
          "Variance": 27.901958297660968, "Spatial_frequency": 25.072457161357523, "Rmse": 1.142272423278655,
          "Ssim": 0.71254747692226839},
}


def two_level(shape: tuple[int, int], low: int, high: int) -> np.ndarray:
    """Left half ``low``, right half ``high`` (equal pixel counts when the width is even)."""
    img = np.full(shape, low, np.uint8)
    img[:, shape[1] // 2:] = high
    return img


def checkerboard(shape: tuple[int, int], low: int, high: int) -> np.ndarray:
    i, j = np.indices(shape)
    return np.where((i + j) % 2 == 0, low, high).astype(np.uint8)


def textured(seed: int, shape: tuple[int, int] = (40, 48), low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, shape).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# API
# ----------------------------------------------------------------------------------------------------------------

def test_names_better_and_metrics_table() -> None:
    assert vifb.NAMES == ("Cross_entropy", "Entropy", "Mutinf", "Psnr", "Avg_gradient", "Edge_intensity", "Qabf",
                          "Variance", "Spatial_frequency", "Rmse", "Ssim", "Qcb", "Qcv")
    assert set(vifb.BETTER) == set(vifb.NAMES) == set(vifb.METRICS)
    assert {n for n, b in vifb.BETTER.items() if b == "lower"} == {"Cross_entropy", "Rmse", "Qcv"}
    assert set(vifb.BETTER.values()) == {"higher", "lower"}
    for name, func in vifb.METRICS.items():
        assert func.__name__ == name.lower()


def test_compute_all_and_subset() -> None:
    ir, vis, fused = synth_case("A")
    result = vifb.compute(ir, vis, fused)
    assert list(result) == list(vifb.NAMES)
    assert all(isinstance(v, float) for v in result.values())
    subset = vifb.compute(ir, vis, fused, ["Qabf", "rmse"])  # names match case-insensitively
    assert list(subset) == ["Qabf", "Rmse"]
    assert subset["Qabf"] == result["Qabf"]


def test_compute_unknown_metric_names_it_and_lists_valid_names() -> None:
    ir, vis, fused = synth_case("A")
    with pytest.raises(ValueError, match="Bogus") as info:
        vifb.compute(ir, vis, fused, ["Entropy", "Bogus"])
    assert "Qcv" in str(info.value) and "Cross_entropy" in str(info.value)


def test_size_mismatch_names_the_sizes() -> None:
    ir, vis, fused = synth_case("A")
    with pytest.raises(ValueError, match="36x50"):
        vifb.compute(ir[:36], vis, fused)
    with pytest.raises(ValueError, match="37x49"):
        vifb.ssim(ir, vis, fused[:, :49])


def test_load_path_gives_rgb_like_imread(tmp_path: Path) -> None:
    rgb = synth_vis_rgb()
    path = tmp_path / "colour.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(vifb.load(path), rgb)
    np.testing.assert_array_equal(vifb.load(str(path)), rgb)
    gray_path = tmp_path / "gray.png"
    cv2.imwrite(str(gray_path), synth_ir())
    loaded = vifb.load(gray_path)
    assert loaded.shape == (H, W) and loaded.dtype == np.uint8
    with pytest.raises(FileNotFoundError):
        vifb.load(tmp_path / "missing.png")


def test_compute_with_paths_equals_compute_with_arrays(tmp_path: Path) -> None:
    ir, vis, fused = synth_case("B")
    paths = []
    for name, img in (("ir", ir), ("vis", vis), ("fused", fused)):
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        paths.append(path)
    assert vifb.compute(*paths) == vifb.compute(ir, vis, fused)


def test_load_arrays() -> None:
    img = synth_vis_rgb()
    assert vifb.load(img) is img  # uint8 passes through
    # Floats are quantised as imwrite + imread would: [0, 1] scaled by 255, rounding half away from zero.
    np.testing.assert_array_equal(vifb.load(np.array([[0.0, 0.5, 1.0]])), [[0, 128, 255]])
    np.testing.assert_array_equal(vifb.load(np.array([[0.0, 2.5, 254.4, 300.0]])), [[0, 3, 254, 255]])
    assert vifb.load(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5)
    np.testing.assert_array_equal(vifb.load(np.array([[3, 200]], np.int32)), [[3, 200]])
    with pytest.raises(ValueError):
        vifb.load(np.array([[3, 300]], np.int32))
    with pytest.raises(ValueError):
        vifb.load(np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(ValueError):
        vifb.load(np.array([[np.nan, 1.0]]))


def test_float_inputs_equal_their_uint8_quantisation() -> None:
    ir, vis, fused = synth_case("A")
    as_float = vifb.compute(ir / 255.0, vis.astype(np.float32), fused.astype(np.float64))
    assert as_float == vifb.compute(ir, vis, fused)


# ----------------------------------------------------------------------------------------------------------------
# Agreement with VIFB's MATLAB code (run in Octave)
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(OCTAVE_REFERENCE))
def test_matches_vifb_code_run_in_octave(case: str) -> None:
    ir, vis, fused = synth_case(case)
    expected = OCTAVE_REFERENCE[case]
    got = vifb.compute(ir, vis, fused, expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9), name


# ----------------------------------------------------------------------------------------------------------------
# Hand-derived values
# ----------------------------------------------------------------------------------------------------------------

def test_entropy_by_hand() -> None:
    two = two_level((4, 8), 10, 200)
    # Two equally frequent grey levels: -2 * 0.5 log2 0.5 = 1 bit.
    assert vifb.entropy(two, two, two) == pytest.approx(1.0, abs=1e-12)
    # Four equally frequent levels: 2 bits. A constant image: 0 bits.
    four = np.repeat(np.array([[0, 1, 2, 3]], np.uint8), 4, axis=0)
    assert vifb.entropy(four, four, four) == pytest.approx(2.0, abs=1e-12)
    const = np.full((4, 4), 77, np.uint8)
    assert vifb.entropy(const, const, const) == 0.0
    # RGB fused: mean of the per-channel entropies (0, 1 and 2 bits) = 1 bit.
    rgb = np.stack([np.full((4, 4), 9, np.uint8), two_level((4, 4), 0, 5), four], axis=2)
    assert vifb.entropy(const, const, rgb) == pytest.approx(1.0, abs=1e-12)


def test_cross_entropy_by_hand() -> None:
    src = two_level((4, 8), 0, 1)  # p_src = (1/2, 1/2)
    fused = np.zeros((4, 8), np.uint8)
    fused[:, 2:] = 1  # p_F = (1/4, 3/4)
    # 1/2 log2((1/2)/(1/4)) + 1/2 log2((1/2)/(3/4)) = 1/2 + 1/2 (1 - log2 3) = 1 - log2(3)/2; both sources equal.
    assert vifb.cross_entropy(src, src, fused) == pytest.approx(1 - math.log2(3) / 2, abs=1e-12)
    # Same histogram: 0. Grey levels present in only one histogram are skipped, so disjoint histograms give 0.
    assert vifb.cross_entropy(src, src, src[:, ::-1].copy()) == 0.0
    assert vifb.cross_entropy(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8),
                              np.full((4, 4), 255, np.uint8)) == 0.0
    # The two sources are averaged: ir with CE 0 and vis with CE 1 - log2(3)/2.
    assert vifb.cross_entropy(fused, src, fused) == pytest.approx((1 - math.log2(3) / 2) / 2, abs=1e-12)


def test_mutual_information_by_hand() -> None:
    two = two_level((6, 8), 30, 90)
    # MI(a, a) = H(a) = ln 2 nats for two equally frequent levels; VIFB sums MI(vis, F) + MI(ir, F).
    assert vifb.mutinf(two, two, two) == pytest.approx(2 * math.log(2), abs=1e-12)
    # Each image is min-max normalised first: any two distinct levels in the same layout give the same MI.
    assert vifb.mutinf(two, two, two_level((6, 8), 0, 255)) == pytest.approx(2 * math.log(2), abs=1e-12)
    # A constant fused image carries no information about the sources: MI = 0.
    assert vifb.mutinf(two, two, np.full((6, 8), 128, np.uint8)) == pytest.approx(0.0, abs=1e-12)
    # Independent layouts (halves vs. alternating columns): the joint histogram is uniform over 4 cells, MI = 0.
    cols = np.tile(np.array([[0, 255]], np.uint8), (6, 4))
    assert vifb.mutinf(two, two, cols) == pytest.approx(0.0, abs=1e-12)


def test_psnr_and_rmse_by_hand() -> None:
    zeros = np.zeros((10, 10), np.uint8)
    fused = np.full((10, 10), 10, np.uint8)
    # VIFB's e(a, b) = sqrt(sum((a-b)^2)) / (M N) = sqrt(100 * 10^2) / 100 = 1 for both sources.
    assert vifb.rmse(zeros, zeros, fused) == pytest.approx(1.0, abs=1e-12)
    # Psnr = 20 log10(255 / sqrt((1 + 1) / 2)) = 20 log10 255.
    assert vifb.psnr(zeros, zeros, fused) == pytest.approx(20 * math.log10(255), abs=1e-12)
    # fused == vis (e = 0), ir off by 20 everywhere (e = sqrt(100 * 400) / 100 = 2): Rmse = 1, Psnr = 20 log10 255.
    vis = np.full((10, 10), 50, np.uint8)
    ir = np.full((10, 10), 70, np.uint8)
    assert vifb.rmse(ir, vis, vis) == pytest.approx(1.0, abs=1e-12)
    assert vifb.psnr(ir, vis, vis) == pytest.approx(20 * math.log10(255), abs=1e-12)
    # Identical images: Rmse 0 and, as in MATLAB (255 / 0), Psnr = inf.
    assert vifb.rmse(vis, vis, vis) == 0.0
    assert vifb.psnr(vis, vis, vis) == math.inf


def test_psnr_and_rmse_follow_vifbs_relation() -> None:
    # For grey images Psnr = 20 log10(255 / sqrt(Rmse)). VIFB's published carLight_CBF values (output/
    # evaluation_metrics_single: Psnr 58.91, Rmse 0.083579) satisfy it: 20 log10(255 / sqrt(0.083579)) = 58.91.
    assert 20 * math.log10(255 / math.sqrt(0.083579)) == pytest.approx(58.91, abs=5e-3)
    ir, vis, fused = synth_case("A")
    assert vifb.psnr(ir, vis, fused) == pytest.approx(20 * math.log10(255 / math.sqrt(vifb.rmse(ir, vis, fused))))


def test_avg_gradient_of_a_ramp() -> None:
    ramp = np.tile((3 * np.arange(9)).astype(np.uint8), (5, 1))  # 5 x 9, +3 per column
    # gradient: 3 along x everywhere (central and one-sided alike), 0 along y -> sqrt((9 + 0) / 2) per pixel;
    # summed over 45 pixels and divided by (5 - 1)(9 - 1): 45 * 3 / sqrt(2) / 32.
    expected = 45 * 3 / math.sqrt(2) / 32
    assert vifb.avg_gradient(ramp, ramp, ramp) == pytest.approx(expected, abs=1e-12)
    # RGB: mean over channels (ramp, flat, ramp) = 2/3 of it.
    rgb = np.stack([ramp, np.full_like(ramp, 7), ramp], axis=2)
    assert vifb.avg_gradient(ramp, ramp, rgb) == pytest.approx(expected * 2 / 3, abs=1e-12)


def test_edge_intensity_of_a_ramp() -> None:
    ramp = np.tile((3 * np.arange(9)).astype(np.uint8), (5, 1))
    # The horizontal Sobel [1 2 1; 0 0 0; -1 -2 -1] gives 0 on a horizontal ramp; its transpose gives
    # (1 + 2 + 1) * (f(j-1) - f(j+1)) = -24 inside and, with the replicated border, 4 * 3 = 12 in absolute value
    # in the first and last columns: mean = (7 * 24 + 2 * 12) / 9.
    assert vifb.edge_intensity(ramp, ramp, ramp) == pytest.approx((7 * 24 + 2 * 12) / 9, abs=1e-12)
    flat = np.full((5, 9), 100, np.uint8)
    assert vifb.edge_intensity(ramp, ramp, flat) == 0.0
    # Mean over all pixels of all channels.
    rgb = np.stack([ramp, flat, flat], axis=2)
    assert vifb.edge_intensity(ramp, ramp, rgb) == pytest.approx((7 * 24 + 2 * 12) / 27, abs=1e-12)


def test_variance_is_a_standard_deviation() -> None:
    two = two_level((4, 8), 0, 100)  # mean 50, every pixel 50 away: sqrt(mean(50^2)) = 50
    assert vifb.variance(two, two, two) == pytest.approx(50.0, abs=1e-12)
    # Channels with 50, 0 and 25: mean 25.
    rgb = np.stack([two, np.full_like(two, 3), two_level((4, 8), 10, 60)], axis=2)
    assert vifb.variance(two, two, rgb) == pytest.approx(25.0, abs=1e-12)


def test_spatial_frequency_of_a_checkerboard() -> None:
    board = checkerboard((4, 4), 0, 10)
    # Every neighbour differs by 10: RF = 4 * 3 * 100 / 16, CF = 3 * 4 * 100 / 16, SF = sqrt(150).
    assert vifb.spatial_frequency(board, board, board) == pytest.approx(math.sqrt(150), abs=1e-12)
    # RGB is the 4 x 12 matrix [R G B]; with this board it is again a checkerboard (the seams differ by 10 too):
    # RF = 4 * 11 * 100 / 48, CF = 3 * 12 * 100 / 48.
    rgb = np.stack([board] * 3, axis=2)
    assert vifb.spatial_frequency(board, board, rgb) == pytest.approx(math.sqrt((4 * 11 + 3 * 12) * 100 / 48))


def test_ssim_by_hand_and_constant_images() -> None:
    img = textured(1)
    # Sum of two SSIMs: 2 when the fused image equals both sources.
    assert vifb.ssim(img, img, img) == pytest.approx(2.0, abs=1e-12)
    # Constant images: sigma = 0, SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1), C1 = (0.01 * 255)^2.
    c1 = (0.01 * 255) ** 2
    zeros = np.zeros((16, 16), np.uint8)
    hundred = np.full((16, 16), 100, np.uint8)
    assert vifb.ssim(hundred, zeros, hundred) == pytest.approx(1 + c1 / (100 ** 2 + c1), abs=1e-12)
    assert vifb.ssim(zeros, zeros, zeros) == pytest.approx(2.0, abs=1e-12)


def test_qabf_by_hand() -> None:
    img = textured(2, low=0, high=128)
    # F = A = B: where gradients are equal and non-zero VIFB uses G = g_F (>= 255 after the x255 scaling), so
    # Q_g = 0.9994 exactly; the angles agree (A = 1): Q_a = 0.9879 / (1 + e^(-22 * 0.2)).
    best = 0.9994 * 0.9879 / (1 + math.exp(-4.4))
    assert vifb.qabf(img, img, img) == pytest.approx(best, abs=1e-12)
    # F = 2 A = 2 B: gradients double, angles unchanged: G = 1/2 gives Q_g = 0.9994 / (1 + e^0) = 0.9994 / 2.
    assert vifb.qabf(img, img, 2 * img) == pytest.approx(best / 2, abs=1e-12)


def test_qcb_and_qcv_of_a_perfect_fusion() -> None:
    img = textured(3)
    # Qcb: contrast preservation min/max = 1 everywhere, saliency weights sum to 1 -> 1.
    assert vifb.qcb(img, img, img) == pytest.approx(1.0, abs=1e-12)
    # Qcv: the source-minus-fused differences are 0 -> 0.
    assert vifb.qcv(img, img, img) == 0.0


# ----------------------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------------------

SYMMETRIC = ("Cross_entropy", "Entropy", "Mutinf", "Psnr", "Avg_gradient", "Edge_intensity", "Qabf", "Variance",
             "Spatial_frequency", "Rmse", "Ssim", "Qcb", "Qcv")


def test_metrics_are_symmetric_in_the_two_sources() -> None:
    ir, vis, fused = synth_case("A")
    forward = vifb.compute(ir, vis, fused)
    backward = vifb.compute(vis, ir, fused)
    for name in SYMMETRIC:
        assert backward[name] == pytest.approx(forward[name], rel=1e-12), name


def test_fusing_an_image_with_itself() -> None:
    img = synth_vis_gray()
    result = vifb.compute(img, img, img)
    assert result["Rmse"] == 0.0
    assert result["Psnr"] == math.inf
    assert result["Cross_entropy"] == 0.0
    assert result["Ssim"] == pytest.approx(2.0)
    assert result["Qabf"] > 0.97
    assert result["Qcb"] == pytest.approx(1.0)
    assert result["Qcv"] == 0.0
    # MI(a, a) = H(a): twice the entropy of the image, in nats.
    assert result["Mutinf"] == pytest.approx(2 * result["Entropy"] * math.log(2))


def test_better_fusion_scores_better_on_reference_based_metrics() -> None:
    ir, vis, _ = synth_case("A")
    good = ((ir.astype(int) + vis) // 2).astype(np.uint8)
    noise = np.random.default_rng(5).integers(-60, 61, good.shape)
    bad = np.clip(good + noise, 0, 255).astype(np.uint8)
    g, b = vifb.compute(ir, vis, good), vifb.compute(ir, vis, bad)
    # (Not Mutinf: on 1850 pixels with 256 x 256 joint bins its estimate grows with noise.)
    for name in ("Psnr", "Ssim", "Qabf", "Qcv", "Rmse"):
        if vifb.BETTER[name] == "higher":
            assert g[name] > b[name], name
        else:
            assert g[name] < b[name], name


def test_intensity_scaling() -> None:
    ir, vis, fused = synth_case("A")
    ir, vis, fused = ir // 2, vis // 2, fused // 2  # <= 127, so 2x + 1 still fits in uint8
    base = vifb.compute(ir, vis, fused)
    scaled = vifb.compute(2 * ir + 1, 2 * vis + 1, 2 * fused + 1)
    # Min-max normalised before use (exactly the same normalised images): Mutinf, Qcb, Qcv are invariant;
    # histogram counts do not change under a 1-to-1 map of levels: Entropy, Cross_entropy are invariant.
    for name in ("Mutinf", "Qcb", "Qcv", "Entropy", "Cross_entropy"):
        assert scaled[name] == pytest.approx(base[name], rel=1e-12), name
    # Gradient and deviation measures double (the +1 cancels in differences), and so does VIFB's Rmse; Ssim is
    # not scale-invariant (its constants C1, C2 are fixed).
    for name in ("Avg_gradient", "Edge_intensity", "Variance", "Spatial_frequency", "Rmse"):
        assert scaled[name] == pytest.approx(2 * base[name], rel=1e-12), name
    assert scaled["Psnr"] == pytest.approx(base["Psnr"] - 10 * math.log10(2), rel=1e-12)  # 20 log10(1/sqrt 2)
    assert scaled["Ssim"] != pytest.approx(base["Ssim"], rel=1e-6)


def test_constant_images_match_vifb() -> None:
    const = np.full((24, 32), 90, np.uint8)
    other = np.full((24, 32), 140, np.uint8)
    result = vifb.compute(const, other, const)
    assert result["Entropy"] == 0.0
    assert result["Mutinf"] == 0.0  # constant images normalise to all-zero
    assert result["Cross_entropy"] == 0.0  # ir: same single level, log2(1) = 0; vis: no common level
    assert result["Avg_gradient"] == result["Edge_intensity"] == result["Spatial_frequency"] == 0.0
    assert result["Variance"] == 0.0
    # e(ir, F) = 0, e(vis, F) = sqrt(768 * 50^2) / 768 = 50 / sqrt(768).
    assert result["Rmse"] == pytest.approx(50 / math.sqrt(768) / 2)
    assert result["Psnr"] == pytest.approx(20 * math.log10(255 / math.sqrt(50 / math.sqrt(768) / 2)))
    # Ssim of constants: (2 * 90 * 140 + C1) / (90^2 + 140^2 + C1) + 1.
    c1 = (0.01 * 255) ** 2
    assert result["Ssim"] == pytest.approx(1 + (2 * 90 * 140 + c1) / (90 ** 2 + 140 ** 2 + c1))
    # conv2(..., 'same') zero-pads, so constant non-zero sources still have border gradients: Qabf is finite
    # (value from Octave running metricsQabf.m on these arrays).
    assert result["Qabf"] == pytest.approx(0.91299593515972566, rel=1e-9)
    # VIFB's own 0/0: Qcb/Qcv's normalize1 divides by max - min = 0 for a constant non-zero image.
    assert math.isnan(result["Qcb"]) and math.isnan(result["Qcv"])
    # All-zero (black) sources: Qabf's weights sum(gA + gB) are 0 -> 0/0 = NaN in VIFB too.
    zeros = np.zeros((24, 32), np.uint8)
    assert math.isnan(vifb.qabf(zeros, zeros, other))


def test_black_fused_image_with_textured_sources() -> None:
    result = vifb.compute(textured(6), textured(7), np.zeros((40, 48), np.uint8))
    # Every metric is finite except Qcb: its local contrast of a black image is 0/0 (NaN) in VIFB as well.
    assert math.isnan(result.pop("Qcb"))
    assert all(math.isfinite(v) for v in result.values()), result
    assert result["Entropy"] == 0.0 and result["Mutinf"] == 0.0 and result["Ssim"] > 0


def test_rgb_fused_is_the_mean_over_channels() -> None:
    ir, vis_rgb = synth_ir(), synth_vis_rgb()
    fused = ((vis_rgb.astype(int) + ir[:, :, None]) // 2).astype(np.uint8)
    per_channel = ("Cross_entropy", "Entropy", "Mutinf", "Psnr", "Avg_gradient", "Qabf", "Variance", "Rmse", "Ssim",
                   "Qcb", "Qcv")
    whole = vifb.compute(ir, vis_rgb, fused, per_channel)
    channels = [vifb.compute(ir, vis_rgb[:, :, k], fused[:, :, k], per_channel) for k in range(3)]
    for name in per_channel:
        assert whole[name] == pytest.approx(np.mean([c[name] for c in channels]), rel=1e-12), name


def test_grey_fused_with_rgb_source_uses_rgb2gray() -> None:
    vis_rgb = synth_vis_rgb()
    ir = synth_ir()
    fused = ((synth_vis_gray().astype(int) + ir) // 2).astype(np.uint8)
    weights = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    gray = vis_rgb.astype(np.float64) @ weights
    rounded = np.floor(gray + 0.5).astype(np.uint8)  # no exact .5 here: the weights are not simple fractions
    # Ssim, Mutinf, Cross_entropy get the source as uint8: rgb2gray rounds.
    for func in (vifb.ssim, vifb.mutinf, vifb.cross_entropy):
        assert func(ir, vis_rgb, fused) == pytest.approx(func(ir, rounded, fused), rel=1e-12), func.__name__
    # Psnr and Rmse get doubles: rgb2gray is not rounded. e(vis, F) = sqrt(sum((gray - F)^2)) / (M N).
    e_vis = math.sqrt(np.sum((gray - fused) ** 2)) / fused.size
    e_ir = math.sqrt(np.sum((ir.astype(float) - fused) ** 2)) / fused.size
    assert vifb.rmse(ir, vis_rgb, fused) == pytest.approx((e_vis + e_ir) / 2, rel=1e-12)


def test_grey_visible_with_rgb_fused_pairs_each_channel_with_it() -> None:
    # VIFB's code raises an error here (it indexes vis(:,:,k)); this module pairs every fused channel with the grey
    # visible image. With three equal channels everywhere the result equals the all-grey one.
    ir, vis = synth_ir(), synth_vis_gray()
    fused = ((ir.astype(int) + vis) // 2).astype(np.uint8)
    rgb = vifb.compute(np.stack([ir] * 3, axis=2), vis, np.stack([fused] * 3, axis=2))
    gray = vifb.compute(ir, vis, fused)
    for name in vifb.NAMES:
        if name != "Spatial_frequency":  # [R G B] side by side adds seams, see the checkerboard test
            assert rgb[name] == pytest.approx(gray[name], rel=1e-12), name


# ----------------------------------------------------------------------------------------------------------------
# Real data
# ----------------------------------------------------------------------------------------------------------------

# Broad ranges around the values published in the VIFB paper and its evaluation files for IR/visible fusion
# methods (e.g. carLight_CBF: Psnr 58.91, Rmse 0.0836, Mutinf 2.64, Ssim 1.34, Qcb 0.47, Qcv 1907).
PLAUSIBLE = {"Cross_entropy": (0.0, 3.0), "Entropy": (4.0, 8.0), "Mutinf": (0.3, 6.0), "Psnr": (50.0, 70.0),
             "Avg_gradient": (0.5, 15.0), "Edge_intensity": (5.0, 150.0), "Qabf": (0.1, 0.8),
             "Variance": (5.0, 80.0), "Spatial_frequency": (2.0, 40.0), "Rmse": (0.01, 0.5), "Ssim": (1.0, 2.0),
             "Qcb": (0.2, 0.9), "Qcv": (10.0, 5000.0)}

# Octave 7.3 running VIFB's metrics*.m (as above) on TNO pair 05 of the CDDFuse test set (RGB PNGs of grey
# content, 475 x 575) with the fused image round(0.5 ir + 0.5 vis).
TNO05_AVERAGE_OCTAVE: dict[str, float] = {
    "Cross_entropy": 0.61583741717987728, "Entropy": 6.0966985852276183, "Mutinf": 0.77946656492632194,
    "Psnr": 61.080699105815619, "Avg_gradient": 3.2527402347545915, "Edge_intensity": 32.795339107111651,
    "Qabf": 0.28483457914943361, "Variance": 18.578894774500302, "Spatial_frequency": 7.0870864826894664,
    "Rmse": 0.050700290797339648, "Ssim": 1.4671532325788126, "Qcb": 0.51077902038026346,
    "Qcv": 467.40888855044676,
}


def test_tno_average_fusion_is_plausible_and_matches_octave() -> None:
    root = shared_data("tno_cddfuse")
    ir = vifb.load(root / "ir" / "05.png")
    vis = vifb.load(root / "vi" / "05.png")
    assert ir.shape == vis.shape and ir.ndim == 3  # stored as 8-bit RGB, as imread returns it
    fused = vifb.load(0.5 * ir.astype(np.float64) + 0.5 * vis.astype(np.float64))
    result = vifb.compute(ir, vis, fused)
    for name, value in result.items():
        low, high = PLAUSIBLE[name]
        assert math.isfinite(value) and low <= value <= high, (name, value)
    for name, value in TNO05_AVERAGE_OCTAVE.items():
        assert result[name] == pytest.approx(value, rel=1e-9), name
