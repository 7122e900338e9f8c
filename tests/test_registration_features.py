"""Learned registration structure images: the loss, training, loading, and the shipped networks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import shared_data
from streamfuse.colour import as_gray
from streamfuse.errors import ConfigError
from streamfuse.imageio import list_images, read_image
from streamfuse.registration.estimate import displacement_px, estimate_homography
from streamfuse.registration.features import (
    ARCHITECTURE,
    StructureWeights,
    learned_structure,
    load_structure_weights,
    save_structure_weights,
)
from streamfuse.train.registration import CrossModalStructure, shift_contrast_loss, train_structure


def direct_correlations(ir: torch.Tensor, vis: torch.Tensor, radius: int) -> dict[tuple[int, int], torch.Tensor]:
    """Normalised correlation of the visible centre with the infrared window at each shift, one by one."""
    height, width = vis.shape[-2:]
    inner_h, inner_w = height - 2 * radius, width - 2 * radius

    def normalised(x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
        return x / x.norm(dim=1, keepdim=True)

    centre = normalised(vis[..., radius:radius + inner_h, radius:radius + inner_w])
    return {(dy, dx): (normalised(ir[..., radius + dy:radius + dy + inner_h, radius + dx:radius + dx + inner_w])
                       * centre).sum(1)
            for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)}


def test_the_loss_is_a_softmax_over_the_correlations_at_every_shift():
    torch.manual_seed(0)
    ir = torch.rand(2, 1, 30, 34)
    vis = torch.roll(ir, (2, -1), (2, 3)) + 0.2 * torch.rand(2, 1, 30, 34)
    correlations = direct_correlations(ir, vis, 4)
    assert max(correlations, key=lambda shift: float(correlations[shift][0])) == (-2, 1)
    from streamfuse.train import registration

    logits = torch.stack(list(correlations.values()), 1) / registration.TEMPERATURE
    distances = torch.tensor([float(dy * dy + dx * dx) for dy, dx in correlations])
    target = torch.softmax(-distances / (2 * registration.TARGET_SIGMA ** 2), 0)
    expected = -(target * torch.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(shift_contrast_loss(ir, vis, 4), expected, rtol=1e-4)


def test_the_loss_prefers_aligned_structure_images():
    smooth = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 52, 52), 5, stride=1)  # 48x48, smooth like images
    aligned = shift_contrast_loss(smooth, smooth + 0.05 * torch.rand_like(smooth))
    misaligned = shift_contrast_loss(smooth, torch.roll(smooth, 3, 3))
    assert float(aligned) < float(misaligned) - 1.0


def synthetic_pair(seed: int, size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A visible scene of rectangles and its "thermal" view: inverted, blurred, different contrast."""
    rng = np.random.default_rng(seed)
    vis = np.full((size, size), 90, np.uint8)
    for _ in range(12):
        x, y = rng.integers(0, size - 20, 2)
        cv2.rectangle(vis, (int(x), int(y)), (int(x + rng.integers(8, 40)), int(y + rng.integers(8, 40))),
                      int(rng.integers(0, 255)), -1)
    ir = cv2.GaussianBlur(255 - vis, (0, 0), 1.5) // 2 + 40
    return ir, vis


def test_training_writes_a_loadable_checkpoint_and_never_uses_the_registration_test_sets(tmp_path):
    root = tmp_path / "data"
    pairs = [synthetic_pair(seed) for seed in range(3)]
    for folder, index in (("roadscene", 0), ("roadscene", 1), ("roadscene", 2), ("superfusion_reg_roadscene", 2),
                          ("superfusion_reg_msrs", 0)):
        for modality, image in zip(("ir", "vi"), pairs[index], strict=True):
            (root / folder / modality).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / folder / modality / f"{index}.png"), image)
    output = tmp_path / "features.npz"
    train_structure(root, output, steps=3, batch_size=2, crop=48, checkpoint_every=2, log_every=1)
    weights = load_structure_weights(output)
    # roadscene/0 and roadscene/2 are copies of registration test scenes: only roadscene/1 is trained on
    assert weights.metadata["pairs"] == 1 and weights.metadata["steps_done"] == 3
    structure = learned_structure(pairs[0][0], "ir", weights)
    assert structure.shape == pairs[0][0].shape and structure.dtype == np.float32 and np.isfinite(structure).all()


def untrained_weights(seed: int = 0) -> tuple[CrossModalStructure, StructureWeights]:
    torch.manual_seed(seed)
    model = CrossModalStructure().eval()
    return model, StructureWeights({"ir": tuple(model.ir.layers()), "vis": tuple(model.vis.layers())}, {})


def test_the_numpy_networks_compute_what_the_torch_ones_trained():
    model, weights = untrained_weights()
    gray = cv2.GaussianBlur(np.random.default_rng(1).random((37, 53)).astype(np.float32), (0, 0), 1.5)
    for modality, network in (("ir", model.ir), ("vis", model.vis)):
        with torch.no_grad():
            expected = network(torch.from_numpy(gray)[None, None])[0, 0].numpy()
        assert np.abs(learned_structure(gray, modality, weights) - (expected - expected.mean())).max() < 1e-4


def test_a_missing_or_foreign_weights_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no weights at .*absent.npz; train them"):
        load_structure_weights(tmp_path / "absent.npz")
    np.savez(tmp_path / "other.npz", architecture=np.array("something-else"))
    with pytest.raises(ConfigError, match=f"holds 'something-else', not {ARCHITECTURE} weights"):
        load_structure_weights(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a weights file")
    with pytest.raises(ConfigError, match="junk.npz is not a readable weights file"):
        load_structure_weights(tmp_path / "junk.npz")
    _, weights = untrained_weights()
    layers = {m: list(weights.layers[m]) for m in ("ir", "vis")}
    layers["vis"][2] = (layers["vis"][2][0][:, :8], layers["vis"][2][1])
    save_structure_weights(layers, tmp_path / "bad.npz")
    with pytest.raises(ConfigError, match=r"bad.npz: layer 2 has shape \(16, 8, 3, 3\)"):
        load_structure_weights(tmp_path / "bad.npz")


def correlation_peak(ir: np.ndarray, vis: np.ndarray, radius: int = 8) -> tuple[tuple[int, int], float]:
    """Shift (dy, dx) of the highest normalised correlation within ``radius``, and its margin over the
    best correlation more than 3 px away."""
    correlations = direct_correlations(torch.from_numpy(ir)[None, None], torch.from_numpy(vis)[None, None], radius)
    best = max(correlations, key=lambda shift: float(correlations[shift]))
    far = max(float(c) for (dy, dx), c in correlations.items() if max(abs(dy), abs(dx)) > 3)
    return best, float(correlations[best]) - far


def test_the_shipped_structure_images_correlate_sharply_where_real_pairs_are_aligned():
    """The aligned RoadScene pairs of the SuperFusion set (never trained on), at the estimator's working
    width: one clear correlation peak at zero shift. Untrained networks of the same shape have none."""
    folder = shared_data("superfusion_reg_roadscene")
    _, untrained = untrained_weights()
    for vis_file in list_images(folder / "vi")[:4]:
        ir, vis = (as_gray(read_image(f)) for f in (folder / "ir" / vis_file.name, vis_file))
        size = (320, round(320 * vis.shape[0] / vis.shape[1]))
        ir, vis = (cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in (ir, vis))
        shift, margin = correlation_peak(learned_structure(ir, "ir"), learned_structure(vis, "vis"))
        assert max(abs(shift[0]), abs(shift[1])) <= 1 and margin > 0.06, (vis_file.name, shift, margin)
        _, untrained_margin = correlation_peak(learned_structure(ir, "ir", untrained),
                                               learned_structure(vis, "vis", untrained))
        assert untrained_margin < 0.03, (vis_file.name, untrained_margin)


def test_the_estimator_compares_either_kind_of_structure_image():
    ir, vis = synthetic_pair(7, 240)
    shift = np.array([[1.0, 0, 6.0], [0, 1.0, -4.0], [0, 0, 1]])
    moved = cv2.warpPerspective(ir, np.linalg.inv(shift), (240, 240), borderMode=cv2.BORDER_REPLICATE)
    for structure in ("learned", "edges"):
        result = estimate_homography([(moved, vis)], structure)
        assert result.accepted, (structure, result.reason)
        assert displacement_px(result.matrix, shift, moved.shape) < 1.0, structure
    with pytest.raises(ValueError, match="structure must be one of learned, edges"):
        estimate_homography([(ir, vis)], "sift")


def test_the_shipped_weights_are_declared_package_data():
    """A non-editable install (``pip install .``) carries only the files pyproject.toml declares."""
    import fnmatch
    import tomllib

    from conftest import REPO
    from streamfuse.registration.features import default_weights_path

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["streamfuse"]
    shipped = default_weights_path().relative_to(REPO / "streamfuse").as_posix()
    assert any(fnmatch.fnmatch(shipped, pattern) for pattern in declared), (shipped, declared)


def test_night_crops_darken_the_visible_image_only():
    pairs = [(ir.astype(np.float32) / 255, vis.astype(np.float32) / 255, "synthetic")
             for ir, vis in (synthetic_pair(seed) for seed in range(2))]
    from streamfuse.train.registration import AlignedCropSampler

    day_ir, day_vis = AlignedCropSampler(pairs, 48, seed=3, night=0.0).batch(32)
    night_ir, night_vis = AlignedCropSampler(pairs, 48, seed=3, night=1.0).batch(32)
    assert torch.equal(day_ir[0], night_ir[0])  # the same first crop (later ones differ: noise draws), IR untouched
    assert float(night_vis[0].mean()) < 0.5 * float(day_vis[0].mean())
    assert float(night_vis.mean()) < 0.5 * float(day_vis.mean())


def test_calibrating_a_rig_does_not_load_torch(tmp_path):
    """The networks run in NumPy: an automatic calibration never pays torch's 2 s import."""
    import subprocess
    import sys

    ir, vis = synthetic_pair(5, 200)
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    code = ("import sys; from streamfuse.cli import main; "
            f"main(['calibrate', '--ir', {str(tmp_path / 'ir.png')!r}, '--vis', {str(tmp_path / 'vis.png')!r}, "
            f"'-o', {str(tmp_path / 'rig.yaml')!r}, '--json']); print('torch loaded:', 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert '"structure": "learned"' in result.stdout, result.stdout + result.stderr
    assert "torch loaded: False" in result.stdout, result.stdout + result.stderr
