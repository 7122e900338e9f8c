"""Training data: set discovery, pair loading and the crop sampler."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import shared_data
from streamfuse.train.data import (
    CropSampler,
    PairSource,
    find_pair_folders,
    load_pairs,
    load_training_pairs,
)
from streamfuse.train.degrade import INTENT_DEGRADATION


def write(path: Path, image: np.ndarray) -> None:
    """Write an 8-bit image, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def flat(value: int, shape: tuple[int, int] = (40, 60)) -> np.ndarray:
    """A uniform 8-bit gray image."""
    return np.full(shape, value, dtype=np.uint8)


def textured(seed: int, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    """An 8-bit gray image of random texture (distinct per seed)."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A miniature data root with training sets, excluded sets and distractors."""
    root = tmp_path / "data"
    for index in range(2):
        write(root / "roadscene" / "ir" / f"FLIR_{index}.png", textured(index))
        write(root / "roadscene" / "vi" / f"FLIR_{index}.png", textured(10 + index))
    for stem in ("00004N", "00012N"):
        write(root / "superfusion_reg_msrs" / "ir" / f"{stem}.png", flat(50))
        write(root / "superfusion_reg_msrs" / "ir_warp" / f"{stem}.png", flat(60))
        write(root / "superfusion_reg_msrs" / "vi" / f"{stem}.png", flat(70))
    for frame in (1800, 1801):
        write(root / "tno_video_sequences" / "Camp" / "thermal" / f"{frame}i.bmp", flat(frame - 1700))
        write(root / "tno_video_sequences" / "Camp" / "visual" / f"{frame}v.bmp", flat(frame - 1600))
    (root / "tno_video_sequences" / "README.txt").write_text("not a sequence")
    for excluded in ("tno_cddfuse", "llvip_samples", "medical_harvard", "murf_rgbir_misaligned"):
        write(root / excluded / "ir" / "01.png", textured(99))
        write(root / excluded / "vi" / "01.png", textured(98))
    (root / "m3fd_tardal_samples" / "ir").mkdir(parents=True)  # present but empty: skipped
    return root


def test_find_pair_folders_picks_training_sets_only(data_root):
    sources = find_pair_folders(data_root)
    assert [s.name for s in sources] == ["roadscene", "superfusion_reg_msrs", "tno_video_sequences/Camp"]
    by_name = {s.name: s for s in sources}
    assert by_name["superfusion_reg_msrs"].ir_dir == data_root / "superfusion_reg_msrs" / "ir"
    assert by_name["superfusion_reg_msrs"].vis_dir == data_root / "superfusion_reg_msrs" / "vi"
    assert by_name["tno_video_sequences/Camp"].ir_dir.name == "thermal"
    assert by_name["tno_video_sequences/Camp"].vis_dir.name == "visual"
    assert not any("tno_cddfuse" in str(s.ir_dir) or "medical" in s.name or "murf" in s.name for s in sources)


def test_a_folder_of_ones_own_pairs_is_a_training_set(tmp_path):
    """Only folders named like the shared data sets were found: ir/ + vi/ of one's own gave "no IR-VIS training
    sets found"."""
    write(tmp_path / "mine" / "ir" / "a.png", textured(1))
    write(tmp_path / "mine" / "vi" / "a.png", textured(2))
    sources = find_pair_folders(tmp_path / "mine")
    assert [(s.name, s.ir_dir, s.vis_dir) for s in sources] == [("mine", tmp_path / "mine" / "ir",
                                                                  tmp_path / "mine" / "vi")]
    write(tmp_path / "tno_cddfuse" / "ir" / "a.png", textured(3))  # a held-out set given as one's own
    write(tmp_path / "tno_cddfuse" / "vi" / "a.png", textured(4))
    with pytest.raises(ValueError, match=r"tno_cddfuse, held out for evaluation"):
        find_pair_folders(tmp_path / "tno_cddfuse")
    write(tmp_path / "mine" / "ir" / "b.png", textured(3))  # a copy of the held-out image beside it
    write(tmp_path / "mine" / "vi" / "b.png", textured(5))
    assert [name for _, _, name in load_training_pairs(tmp_path / "mine")] == ["mine:a"]


def test_find_pair_folders_without_sets_names_the_root(tmp_path):
    (tmp_path / "tno_cddfuse" / "ir").mkdir(parents=True)
    with pytest.raises(ValueError, match=str(tmp_path)):
        find_pair_folders(tmp_path)


def test_load_pairs_matches_by_stem(tmp_path):
    # Stems match but the natural sort orders of the two folders would not.
    for index, stem in enumerate(("a2", "a10", "b1")):
        write(tmp_path / "ir" / f"{stem}.png", flat(10 * (index + 1)))
        write(tmp_path / "vi" / f"{stem}.png", flat(10 * (index + 1) + 100))
    write(tmp_path / "vi" / "extra.png", flat(255))
    pairs = load_pairs([PairSource("set", tmp_path / "ir", tmp_path / "vi")])
    assert [name for _, _, name in pairs] == ["set:a2", "set:a10", "set:b1"]
    for ir, vis, _ in pairs:
        assert ir.dtype == np.float32 and vis.dtype == np.float32
        assert vis.mean() == pytest.approx(ir.mean() + 100 / 255, abs=1e-6)


def test_load_pairs_matches_sequences_by_position(tmp_path):
    for frame in (9, 10, 11):  # natural order: 9, 10, 11 (not "10" < "11" < "9")
        write(tmp_path / "thermal" / f"{frame}i.bmp", flat(frame))
        write(tmp_path / "visual" / f"{frame}v.bmp", flat(frame + 100))
    pairs = load_pairs([PairSource("seq", tmp_path / "thermal", tmp_path / "visual")])
    assert [name for _, _, name in pairs] == ["seq:9i", "seq:10i", "seq:11i"]
    for ir, vis, _ in pairs:
        assert vis.mean() * 255 == pytest.approx(ir.mean() * 255 + 100, abs=1e-3)


def test_load_pairs_luminance_sizes_and_aspect(tmp_path, caplog):
    blue = np.zeros((100, 200, 3), dtype=np.uint8)
    blue[:, :, 0] = 255  # BGR pure blue: Y = 0.114 * 255
    write(tmp_path / "vi" / "same.png", blue)
    write(tmp_path / "ir" / "same.png", flat(128, (50, 100)))  # half size, same aspect: resized up
    write(tmp_path / "vi" / "odd.png", blue)
    write(tmp_path / "ir" / "odd.png", flat(128, (100, 100)))  # different aspect: skipped
    source = PairSource("mixed", tmp_path / "ir", tmp_path / "vi")
    with caplog.at_level(logging.WARNING, logger="streamfuse.train.data"):
        pairs = load_pairs([source])
    assert [name for _, _, name in pairs] == ["mixed:same"]
    assert "mixed:odd" in caplog.text and "aspect" in caplog.text
    ir, vis, _ = pairs[0]
    assert ir.shape == vis.shape == (100, 200)
    assert ir.mean() == pytest.approx(128 / 255, abs=1e-3)
    assert vis.mean() == pytest.approx(0.114, abs=2 / 255)
    small = load_pairs([source], max_side=64)
    assert small[0][0].shape == small[0][1].shape == (32, 64)


def test_load_training_pairs_drops_copies_of_heldout_images(data_root, caplog):
    write(data_root / "roadscene" / "ir" / "leak.png", textured(99))  # = tno_cddfuse/ir/01.png
    write(data_root / "roadscene" / "vi" / "leak.png", textured(98))
    names = [name for _, _, name in load_pairs(find_pair_folders(data_root))]
    assert "roadscene:leak" in names
    with caplog.at_level(logging.WARNING, logger="streamfuse.train.data"):
        names = [name for _, _, name in load_training_pairs(data_root)]
    assert "roadscene:leak" not in names and "roadscene:FLIR_0" in names
    assert "roadscene:leak" in caplog.text
    names = [name for _, _, name in load_training_pairs(data_root, drop_sources_with_copies=True)]
    assert not any(name.startswith("roadscene:") for name in names)
    assert "superfusion_reg_msrs:00004N" in names


def ramp_pair(shape: tuple[int, int] = (90, 150)) -> tuple[np.ndarray, np.ndarray, str]:
    """A pair where every pixel value is unique (IR) and VIS = 1 - IR, so crops can be located."""
    ir = (np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape) + 1) / (shape[0] * shape[1] + 1)
    return ir, 1.0 - ir, "ramp"


def test_sampler_shapes_and_clean_inputs_for_none():
    pair = ramp_pair()
    sampler = CropSampler([pair], crop=32, seed=0)
    batch = sampler.batch(8, ["balanced", "thermal_targets"])
    for key in ("ir_in", "vis_in", "ir", "vis"):
        assert isinstance(batch[key], torch.Tensor)
        assert batch[key].shape == (8, 1, 32, 32) and batch[key].dtype == torch.float32
    assert batch["intent"] and set(batch["intent"]) <= {"balanced", "thermal_targets"} and len(batch["intent"]) == 8
    assert batch["name"] == ["ramp"] * 8
    assert torch.equal(batch["ir_in"], batch["ir"]) and torch.equal(batch["vis_in"], batch["vis"])
    ir_full = pair[0]
    flips = 0
    for ir_crop, vis_crop in zip(batch["ir"][:, 0].numpy(), batch["vis"][:, 0].numpy(), strict=True):
        np.testing.assert_allclose(vis_crop, 1.0 - ir_crop, atol=1e-6)  # same window of a registered pair
        flipped = ir_crop[0, 0] > ir_crop[0, -1]
        flips += int(flipped)
        window = ir_crop[:, ::-1] if flipped else ir_crop
        top, left = np.argwhere(ir_full == window[0, 0])[0]
        np.testing.assert_array_equal(window, ir_full[top:top + 32, left:left + 32])
    assert 0 < flips < 8


def test_sampler_is_deterministic_for_a_seed():
    pairs = [ramp_pair(), (np.full((70, 80), 0.3, np.float32), np.full((70, 80), 0.6, np.float32), "flat")]
    intents = list(INTENT_DEGRADATION)
    first = CropSampler(pairs, crop=24, seed=3).batch(6, intents)
    second = CropSampler(pairs, crop=24, seed=3).batch(6, intents)
    other = CropSampler(pairs, crop=24, seed=4).batch(6, intents)
    for key in ("ir_in", "vis_in", "ir", "vis"):
        assert torch.equal(first[key], second[key])
    assert first["intent"] == second["intent"] and first["name"] == second["name"]
    assert not torch.equal(first["ir_in"], other["ir_in"])


def test_sampler_degrades_inputs_only():
    sampler = CropSampler([ramp_pair()], crop=32, seed=1)
    batch = sampler.batch(4, ["low_light", "fog"], weights=[1.0, 0.0])
    assert batch["intent"] == ["low_light"] * 4
    assert torch.equal(batch["ir_in"], batch["ir"])  # low light leaves the thermal image alone
    assert (batch["vis_in"].mean(dim=(1, 2, 3)) < 0.4 * batch["vis"].mean(dim=(1, 2, 3))).all()
    thermal = sampler.batch(4, ["low_contrast_thermal"])
    assert torch.equal(thermal["vis_in"], thermal["vis"])
    assert (thermal["ir_in"].std(dim=(1, 2, 3)) < 0.5 * thermal["ir"].std(dim=(1, 2, 3))).all()


def test_sampler_pads_small_images():
    small = (np.full((10, 20), 0.25, np.float32), np.full((10, 20), 0.75, np.float32), "tiny")
    batch = CropSampler([small], crop=32, seed=0).batch(2, ["balanced"])
    assert batch["ir"].shape == (2, 1, 32, 32)
    assert torch.allclose(batch["ir"], torch.tensor(0.25)) and torch.allclose(batch["vis"], torch.tensor(0.75))


def test_sampler_rejects_bad_arguments():
    sampler = CropSampler([ramp_pair()], crop=16)
    with pytest.raises(ValueError, match="mri_ct"):
        sampler.batch(2, ["balanced", "mri_ct"])
    with pytest.raises(ValueError, match="intents"):
        sampler.batch(2, [])
    with pytest.raises(ValueError, match="weights"):
        sampler.batch(2, ["fog", "glare"], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        sampler.batch(2, ["fog", "glare"], weights=[0.0, 0.0])
    with pytest.raises(ValueError):
        CropSampler([], crop=16)


def test_real_data_root_sets():
    root = shared_data()
    sources = find_pair_folders(root)
    names = [s.name for s in sources]
    expected = {"roadscene", "m3fd_tardal_samples", "superfusion_reg_msrs", "superfusion_reg_roadscene"}
    present = {name for name in expected if (root / name).is_dir()}
    assert present <= set(names)
    assert all(name in expected or name.startswith("tno_video_sequences/") for name in names)
    if (root / "tno_video_sequences").is_dir():
        assert any(name.startswith("tno_video_sequences/") for name in names)
    for source in sources:
        assert source.ir_dir.name in ("ir", "thermal") and source.vis_dir.name in ("vi", "visual")
        assert not {"tno_cddfuse", "medical_harvard", "murf_rgbir_misaligned"} & set(source.ir_dir.parts)
    # The TarDAL sample set is tiny: load it and check that the copy of a held-out TNO image is dropped.
    tardal = [s for s in sources if s.name == "m3fd_tardal_samples"]
    if tardal and (root / "tno_cddfuse" / "ir").is_dir():
        kept = load_pairs(tardal, holdout_dirs=[root / "tno_cddfuse" / "ir"])
        everything = load_pairs(tardal)
        assert len(kept) < len(everything)
        for ir, vis, _ in everything:
            assert ir.shape == vis.shape and max(ir.shape) <= 640
