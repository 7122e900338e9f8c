"""Medical pairs: the medical rule keeps CT bone, tracer uptake and a black background; `fuse --task` keeps colour."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from media import read_video, write_video
from streamfuse.cli import main
from streamfuse.colour import has_colour
from streamfuse.config import FusionConfig
from streamfuse.fusers import build_fuser
from streamfuse.text import HashingTextEncoder, Router, load_bank


def head_phantom(size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A gray MRI-like slice (textured soft tissue), a CT-like slice (bright skull ring, faint tissue) and a
    colour PET-like slice (a hot spot in pseudo-colour), all on a black background."""
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - size / 2, xx - size / 2)
    head = radius < size * 0.40
    tissue = 110 + 50 * np.sin(xx / 3.0) * np.cos(yy / 5.0)  # folds of soft tissue
    mri = np.where(head, tissue, 0).astype(np.uint8)
    skull = (radius >= size * 0.36) & (radius < size * 0.40)
    ct = np.where(skull, 235, np.where(head, 40, 0)).astype(np.uint8)
    spot = np.hypot(yy - size * 0.45, xx - size * 0.55) < size * 0.08
    pet_gray = np.where(spot, 220, np.where(head, 60, 0)).astype(np.uint8)
    pet = cv2.applyColorMap(pet_gray, cv2.COLORMAP_JET)
    pet[~head] = 0
    return mri, ct, pet


def radius_below(fraction: float, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.hypot(yy - size / 2, xx - size / 2) < size * fraction


def routed(prompt: str):
    return Router(HashingTextEncoder(), load_bank()).route(prompt)


@pytest.mark.parametrize("fuser", ["classical", "model"])
def test_ct_prompt_keeps_bone_soft_tissue_and_a_black_background(fuser):
    mri, ct, _ = head_phantom()
    fusion = build_fuser(FusionConfig(fuser=fuser))
    fusion.condition(routed("fuse MRI and CT"))
    fused = fusion.fuse(mri, ct).astype(float)
    background = (mri == 0) & (ct == 0)
    distance = cv2.distanceTransform(background.astype(np.uint8), cv2.DIST_L2, 5)
    assert fused[distance >= 8].max() == 0  # black stays black beyond the bands' reach (8 px) from the head
    assert fused[background].max() <= 8  # within it, the bright skull's edge leaves a faint ring at most
    bone = ct == 235
    assert fused[cv2.erode(bone.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)].mean() > 0.9 * 235
    soft = radius_below(0.30, mri.shape[0])
    assert np.corrcoef(fused[soft], mri[soft].astype(float))[0, 1] > 0.8  # the MRI's texture, not the CT's flat level

    fusion.condition(routed("balanced fusion of both cameras"))  # the visible-base rule loses most of the bone
    assert fusion.fuse(mri, ct).astype(float)[bone].mean() < fused[bone].mean() - 20


def test_fuse_task_keeps_the_functional_colour_whichever_flag_names_it(tmp_path, capsys):
    mri, _, pet = head_phantom()
    for name in ("a", "b"):
        (tmp_path / "mri").mkdir(exist_ok=True)
        (tmp_path / "pet").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "mri" / f"{name}.png"), cv2.cvtColor(mri, cv2.COLOR_GRAY2BGR))  # gray stored as RGB
        cv2.imwrite(str(tmp_path / "pet" / f"{name}.png"), pet)
    common = ["--task", "mri_pet", "--fuser", "classical", "--no-progress"]
    assert main(["fuse", "--ir", str(tmp_path / "mri"), "--vis", str(tmp_path / "pet"), "-o", str(tmp_path / "x"),
                 *common]) == 0
    assert main(["fuse", "--ir", str(tmp_path / "pet"), "--vis", str(tmp_path / "mri"), "-o", str(tmp_path / "y"),
                 *common]) == 0
    as_given, swapped = (cv2.imread(str(tmp_path / out / "a.png")) for out in ("x", "y"))
    assert has_colour(as_given) and np.array_equal(as_given, swapped)
    # Without --task, PET given as --ir is reduced to gray: the output takes the (gray) visible chroma.
    assert main(["fuse", "--ir", str(tmp_path / "pet"), "--vis", str(tmp_path / "mri"), "-o", str(tmp_path / "z"),
                 "--fuser", "classical", "--no-progress"]) == 0
    assert not has_colour(cv2.imread(str(tmp_path / "z" / "a.png")))


def test_the_functional_folder_is_found_past_gray_slices_and_colour_is_flagged_for_ct(tmp_path, caplog):
    """A PET folder starting with a gray slice was taken for the MRI (all PET outputs gray); mri_ct said nothing
    about a colour input, whose colour it drops."""
    mri, _, pet = head_phantom()
    for folder in ("mri", "pet"):
        (tmp_path / folder).mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / "mri" / f"{name}.png"), mri)
    cv2.imwrite(str(tmp_path / "pet" / "a.png"), mri)  # a gray slice first
    cv2.imwrite(str(tmp_path / "pet" / "b.png"), pet)
    with caplog.at_level(logging.INFO, logger="streamfuse"):
        assert main(["fuse", "--task", "mri_pet", "--ir", str(tmp_path / "pet"), "--vis", str(tmp_path / "mri"),
                     "-o", str(tmp_path / "out"), "--fuser", "classical", "--no-progress"]) == 0
    assert has_colour(cv2.imread(str(tmp_path / "out" / "b.png")))
    assert "neither input is in colour" not in caplog.text
    # The prompt a task stands for routes softly among the medical intents, which share one rule: said so.
    assert "--task mri_pet: the medical rule (the medical intents share it" in caplog.text
    assert main(["fuse", "--task", "mri_ct", "--ir", str(tmp_path / "mri"), "--vis", str(tmp_path / "pet"),
                 "-o", str(tmp_path / "ct"), "--fuser", "classical", "--no-progress"]) == 0
    assert f"--task mri_ct: {tmp_path / 'pet'} has images in colour" in caplog.text
    assert "the output keeps the --vis image's colour" in caplog.text  # as the output shows (it said "fused as gray")
    assert has_colour(cv2.imread(str(tmp_path / "ct" / "b.png")))
    # the colour image given as --ir: its colour is not kept (the warning said the gray --vis image's was)
    assert main(["fuse", "--task", "mri_ct", "--ir", str(tmp_path / "pet"), "--vis", str(tmp_path / "mri"),
                 "-o", str(tmp_path / "ct_swapped"), "--fuser", "classical", "--no-progress"]) == 0
    assert "the --ir image's colour is not kept: the output is gray" in caplog.text
    assert not has_colour(cv2.imread(str(tmp_path / "ct_swapped" / "b.png")))


def test_eval_of_a_swapped_task_says_how_to_name_the_slots(tmp_path, capsys):
    """fuse --task names its outputs after the functional image, whichever flag named it; eval given the same
    flags found no fused image for any pair and said only that."""
    mri, _, pet = head_phantom()
    for folder in ("mri", "pet"):
        (tmp_path / folder).mkdir()
    for index in range(2):
        cv2.imwrite(str(tmp_path / "mri" / f"mri_{index}.png"), mri)
        cv2.imwrite(str(tmp_path / "pet" / f"pet_{index}.png"), pet)
    flags = ["--ir", str(tmp_path / "pet"), "--vis", str(tmp_path / "mri"), "--pair-by", "order"]
    assert main(["fuse", "--task", "mri_pet", *flags, "-o", str(tmp_path / "out"), "--fuser", "classical",
                 "--no-progress"]) == 0
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["pet_0.png", "pet_1.png"]
    capsys.readouterr()
    assert main(["eval", *flags, "--fused", str(tmp_path / "out"), "--convention", "cddfuse", "--no-progress"]) == 1
    assert "its images are named like the --ir images" in capsys.readouterr().err
    swapped = ["--ir", str(tmp_path / "mri"), "--vis", str(tmp_path / "pet"), "--pair-by", "order"]
    assert main(["eval", *swapped, "--fused", str(tmp_path / "out"), "--convention", "cddfuse", "--no-progress"]) == 0


def test_task_and_prompt_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fuse", "--ir", "a", "--vis", "b", "-o", str(tmp_path), "--task", "mri_ct", "--prompt", "x"])
    assert "not allowed with argument" in capsys.readouterr().err
    # the prompt given with --set was dropped without a word
    assert main(["fuse", "--ir", "a", "--vis", "b", "-o", str(tmp_path), "--task", "mri_ct", "--set", "prompt=x"]) == 2
    assert "--set prompt=...: --task mri_ct sets the prompt" in capsys.readouterr().err


def test_one_folder_given_twice_to_a_task_is_one_error_about_the_task(tmp_path, capsys, caplog):
    """It warned that neither input was in colour, then refused the folder as infrared and visible input."""
    mri, _, _ = head_phantom()
    (tmp_path / "mri").mkdir()
    cv2.imwrite(str(tmp_path / "mri" / "a.png"), mri)
    assert main(["fuse", "--task", "mri_pet", "--ir", str(tmp_path / "mri"), "--vis", str(tmp_path / "mri"),
                 "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    assert (f"--ir and --vis both name {tmp_path / 'mri'}: --task mri_pet fuses the MRI with the PET image; give "
            "each its own input") in capsys.readouterr().err
    assert "colour" not in caplog.text


def test_a_prompt_that_routes_camera_footage_to_the_medical_rule_is_warned_about(tmp_path, caplog):
    """'I need to spot the deer' took the PET intent with the keyword encoder and changed the output silently."""
    mri, _, pet = head_phantom()
    cv2.imwrite(str(tmp_path / "a.png"), mri)
    cv2.imwrite(str(tmp_path / "b.png"), pet)
    common = ["fuse", "--ir", str(tmp_path / "a.png"), "--vis", str(tmp_path / "b.png"), "--fuser", "classical",
              "--no-progress", "-y"]
    with caplog.at_level(logging.WARNING):
        assert main([*common, "-o", str(tmp_path / "x.png"), "--prompt", "fuse MRI and PET"]) == 0
        assert "routes 100% to the medical intents" in caplog.text and "use streamfuse fuse --task" in caplog.text
        caplog.clear()
        assert main([*common, "-o", str(tmp_path / "y.png"), "--task", "mri_pet"]) == 0
        assert "medical intents (" not in caplog.text


def test_a_functional_video_given_as_ir_keeps_its_colour(tmp_path):
    """Videos were taken as given: PET as --ir went to the infrared slot and came out gray, without a word."""
    mri, _, pet = head_phantom()
    write_video(tmp_path / "pet.mp4", [pet] * 4)
    write_video(tmp_path / "mri.mp4", [cv2.cvtColor(mri, cv2.COLOR_GRAY2BGR)] * 4)
    for ir, vis, out in (("mri", "pet", "given.mp4"), ("pet", "mri", "swapped.mp4")):
        assert main(["fuse", "--task", "mri_pet", "--ir", str(tmp_path / f"{ir}.mp4"), "--vis",
                     str(tmp_path / f"{vis}.mp4"), "-o", str(tmp_path / out), "--fuser", "classical",
                     "--no-progress"]) == 0
    given, swapped = (read_video(tmp_path / out)[0][0] for out in ("given.mp4", "swapped.mp4"))
    assert has_colour(given) and has_colour(swapped)
    assert np.abs(given.astype(int) - swapped.astype(int)).max() <= 2


def test_a_folder_of_slices_is_fused_slice_by_slice(tmp_path):
    """`fuse` of folders ran the model with the video setting temporal_smoothing 0.5: a slice's decisions were
    blended with the previous slice's (up to 85 grey levels on held-out SPECT slices, against the same pair
    fused alone). Each pair of a folder is now fused on its own, as the same pair given alone."""
    for folder in ("mri", "ct", "one_mri", "one_ct"):
        (tmp_path / folder).mkdir()
    head = np.zeros((96, 96), np.uint8)
    cv2.circle(head, (48, 48), 34, 140, -1)
    for index in range(2):  # neighbouring slices: alike, but bone where the previous slice has soft tissue
        ct = np.zeros_like(head)
        cv2.circle(ct, (48, 48), 36, 255, 3)
        if index:
            cv2.rectangle(ct, (36, 36), (60, 60), 255, -1)
        cv2.imwrite(str(tmp_path / "mri" / f"{index}.png"), head)
        cv2.imwrite(str(tmp_path / "ct" / f"{index}.png"), ct)
    cv2.imwrite(str(tmp_path / "one_mri" / "1.png"), head)
    cv2.imwrite(str(tmp_path / "one_ct" / "1.png"), cv2.imread(str(tmp_path / "ct" / "1.png")))
    for ir, vis, out in (("mri", "ct", "all"), ("one_mri", "one_ct", "alone")):
        assert main(["fuse", "--task", "mri_ct", "--ir", str(tmp_path / ir), "--vis", str(tmp_path / vis),
                     "-o", str(tmp_path / out), "--no-progress", "--fuser", "model"]) == 0
    assert np.array_equal(cv2.imread(str(tmp_path / "all" / "1.png")), cv2.imread(str(tmp_path / "alone" / "1.png")))
