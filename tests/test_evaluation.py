from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from conftest import make_pair, shared_data
from streamfuse.cli import main
from streamfuse.evaluation import MethodResult, find_fused, folder_labels, format_table, mean_ranks, on_common_images


@pytest.fixture
def eval_folders(tmp_path):
    """4 pairs; fused folder A holds exact names, B uses the _method suffix and misses one pair."""
    dirs = {name: tmp_path / name for name in ("ir", "vis", "A", "B")}
    for d in dirs.values():
        d.mkdir()
    for i in range(4):
        ir, vis = make_pair(i, (64, 48))
        cv2.imwrite(str(dirs["ir"] / f"p{i}.png"), ir)
        cv2.imwrite(str(dirs["vis"] / f"p{i}.png"), vis)
        cv2.imwrite(str(dirs["A"] / f"p{i}.png"), ((ir.astype(int)[..., None] + vis) // 2).astype(np.uint8))
        if i != 2:
            cv2.imwrite(str(dirs["B"] / f"p{i}_average.png"), vis)
    cv2.imwrite(str(dirs["vis"] / "lonely.png"), make_pair(9)[1])  # no infrared partner
    return dirs


def test_find_fused_rule(tmp_path):
    for name in ("1.png", "10_x.png", "2_method.png"):
        (tmp_path / name).write_bytes(b"")
    files = sorted(tmp_path.iterdir())
    assert find_fused(tmp_path, "1", files).name == "1.png"
    assert find_fused(tmp_path, "2", files).name == "2_method.png"
    assert find_fused(tmp_path, "10", files).name == "10_x.png"
    assert find_fused(tmp_path, "3", files) is None


def test_a_fused_name_goes_to_the_longest_input_stem_it_fits(tmp_path):
    """Inputs a and a_b, fused a_x and a_b_x: a_b_x was a candidate for a too, and eval refused the folder."""
    for name in ("a_x.png", "a_b_x.png"):
        (tmp_path / name).write_bytes(b"")
    files = sorted(tmp_path.iterdir())
    assert find_fused(tmp_path, "a", files, ["a", "a_b"]).name == "a_x.png"
    assert find_fused(tmp_path, "a_b", files, ["a", "a_b"]).name == "a_b_x.png"


def test_a_metric_undefined_for_one_method_on_an_image_leaves_that_image_out_of_that_metric_for_all():
    """A constant fused image (Qcb NaN) gave its method a mean over 4 images against the others' 5: a blank
    output ranked first on Qcb."""
    blank = MethodResult("blank", {"x": {"Qcb": float("nan"), "Qabf": 0.1}, "y": {"Qcb": 0.7, "Qabf": 0.5}})
    good = MethodResult("good", {"x": {"Qcb": 0.4, "Qabf": 0.6}, "y": {"Qcb": 0.6, "Qabf": 0.6}})
    (blank_kept, good_kept), left_out = on_common_images([blank, good])
    assert left_out == ["Qcb: x (undefined for blank)"]
    assert good_kept.mean(["Qcb"])["Qcb"] == pytest.approx(0.6) and blank_kept.mean(["Qcb"])["Qcb"] == 0.7
    assert good_kept.mean(["Qabf"])["Qabf"] == pytest.approx(0.6)  # the other metrics keep the image
    assert good_kept.rows["x"]["Qcb"] == 0.4  # the per-image values (the table, the CSV) stay as they are
    # a method with no Qcb anywhere (every image constant) leaves the others' means whole and ranks last
    empty = MethodResult("empty", {"x": {"Qcb": float("nan")}, "y": {"Qcb": float("nan")}})
    (empty_kept, good_kept), left_out = on_common_images([empty, good])
    assert left_out == [] and good_kept.mean(["Qcb"])["Qcb"] == pytest.approx(0.5)
    assert mean_ranks([empty_kept, good_kept], ["Qcb"], {"Qcb": "higher"}) == {"empty": 2.0, "good": 1.0}


def test_the_table_keeps_wide_values_apart():
    results = [MethodResult("f_vis", {"x": {"Qabf": 0.556, "Qcv": 916.9004}}),
               MethodResult("classical", {"x": {"Qabf": 0.5669, "Qcv": 2040.0177}})]
    table = format_table(results, ["Qabf", "Qcv"], {"Qabf": "higher", "Qcv": "lower"})
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:]}
    assert rows == {"f_vis": ["0.5560", "916.9004", "1.50"], "classical": ["0.5669", "2040.0177", "1.50"]}
    single = format_table(results[1:], ["Qcv"], {"Qcv": "lower"})
    assert single.splitlines()[1].split() == ["x", "2040.0177"]


def test_folder_labels_are_names_unless_two_share_one():
    assert folder_labels(["x/model", "y/classical"]) == ["model", "classical"]
    assert folder_labels(["runs/a/tno", "runs/b/tno", "c"]) == ["a/tno", "b/tno", "c"]


def test_mean_ranks_follow_metric_direction():
    a = MethodResult("a", {"x": {"Entropy": 7.0, "Rmse": 0.1}})
    b = MethodResult("b", {"x": {"Entropy": 6.0, "Rmse": 0.2}})
    tie = MethodResult("c", {"x": {"Entropy": 7.0, "Rmse": 0.3}})
    ranks = mean_ranks([a, b, tie], ["Entropy", "Rmse"], {"Entropy": "higher", "Rmse": "lower"})
    # Entropy: a and c tie for 1st (1.5 each), b 3rd; Rmse (lower better): a 1, b 2, c 3
    assert ranks == {"a": pytest.approx(1.25), "b": pytest.approx(2.5), "c": pytest.approx(2.25)}


def test_a_metric_undefined_on_some_images_is_averaged_over_the_others_and_nan_ranks_last():
    """One constant fused image (its Qcb is NaN) made the method's mean NaN, and a NaN mean ranked 0.5:
    ahead of first place."""
    black = MethodResult("black", {"x": {"Qcb": float("nan")}, "y": {"Qcb": float("nan")}})
    partly = MethodResult("partly", {"x": {"Qcb": 0.4}, "y": {"Qcb": float("nan")}})
    good = MethodResult("good", {"x": {"Qcb": 0.6}, "y": {"Qcb": 0.5}})
    assert partly.mean(["Qcb"])["Qcb"] == pytest.approx(0.4)
    assert np.isnan(black.mean(["Qcb"])["Qcb"])
    ranks = mean_ranks([black, partly, good], ["Qcb"], {"Qcb": "higher"})
    assert ranks == {"good": 1.0, "partly": 2.0, "black": 3.0}


def test_eval_single_folder_table_csv_and_skips(eval_folders, tmp_path, capsys, caplog):
    out = tmp_path / "table.csv"
    cv2.imwrite(str(eval_folders["ir"] / "alone.png"), make_pair(8)[0])  # no visible partner: named too
    code = main(["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--fused",
                 str(eval_folders["B"]), "--convention", "cddfuse", "--csv", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "p0" in text and "mean" in text and "p2" not in text.split("mean")[0].split("image", 1)[1]
    assert "lonely.png: no infrared image" in caplog.text and "p2: no fused image" in caplog.text
    assert "alone.png: no visible image with stem 'alone'" in caplog.text
    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == ["p0", "p1", "p3", "mean"]
    assert set(rows[0]) >= {"method", "EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM"}
    # B is the visible image itself: the summed SSIM is SSIM(VIS, VIS) = 1 plus SSIM(VIS, IR), near 0 here
    assert 0.9 < float(rows[0]["SSIM"]) < 1.2
    # the CSV written is an earlier evaluation's result: replaced only with -y (it was replaced without a word)
    before = out.read_bytes()
    command = ["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--fused",
               str(eval_folders["A"]), "--metrics", "Entropy", "--csv", str(out)]
    assert main(command) == 1 and out.read_bytes() == before
    assert f"--csv {out}: already exists (an earlier evaluation?); pass -y" in capsys.readouterr().err
    assert main([*command, "-y"]) == 0 and out.read_bytes() != before


def test_eval_csv_to_standard_output_is_the_whole_output(eval_folders, tmp_path, capsys, monkeypatch):
    """--csv - wrote a file named '-'."""
    monkeypatch.chdir(tmp_path)
    code = main(["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--fused",
                 str(eval_folders["A"]), str(eval_folders["B"]), "--metrics", "Qabf", "--csv", "-"])
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert code == 0 and not (tmp_path / "-").exists()
    assert [(r["method"], r["image"]) for r in rows] == [("A", "p0"), ("A", "p1"), ("A", "p3"), ("A", "mean"),
                                                         ("B", "p0"), ("B", "p1"), ("B", "p3"), ("B", "mean")]


def test_eval_takes_its_list_flags_more_than_once(eval_folders, capsys):
    """--fused A --fused B scored B alone, --metrics x --metrics y only y: argparse kept the last list."""
    code = main(["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--fused",
                 str(eval_folders["A"]), "--fused", str(eval_folders["B"]), "--metrics", "Qabf", "--metrics", "Ssim"])
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:]}
    assert code == 0 and set(rows) == {"A", "B"} and "Qabf" in text and "Ssim" in text


def test_eval_compares_methods_with_mean_rank(eval_folders, capsys):
    code = main(["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--fused",
                 str(eval_folders["A"]), str(eval_folders["B"]), "--metrics", "Entropy", "Ssim", "Rmse"])
    text = capsys.readouterr().out
    assert code == 0 and "mean rank" in text
    assert text.count("\nA ") == 1 and text.count("\nB ") == 1


def test_methods_are_ranked_on_the_images_all_of_them_scored(eval_folders, tmp_path, capsys, caplog):
    """A folder holding a copy of one of A's images ties with A: both are ranked on that image alone."""
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "p1.png").write_bytes((eval_folders["A"] / "p1.png").read_bytes())
    code = main(["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--fused",
                 str(eval_folders["A"]), str(partial), "--convention", "cddfuse", "--metrics", "EN", "SD", "SSIM"])
    text = capsys.readouterr().out
    assert code == 0 and "cddfuse metrics, 1 pairs" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:]}
    assert rows["A"] == rows["partial"] and rows["A"][-1] == "1.50"  # (was: A over 4 images, partial over 1)
    assert "ranked on the 1 image(s) every method scored; left out: A: p0, p2, p3" in caplog.text


def test_folders_with_the_same_name_get_distinct_rows(eval_folders, tmp_path, capsys):
    twin = tmp_path / "other" / "A"
    twin.parent.mkdir()
    eval_folders["B"].rename(twin)
    code = main(["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--fused",
                 str(eval_folders["A"]), str(twin), "--metrics", "Entropy", "Ssim"])
    text = capsys.readouterr().out
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:]}
    assert set(rows) == {f"{tmp_path.name}/A", "other/A"}
    assert rows[f"{tmp_path.name}/A"] != rows["other/A"]  # both folders were scored, neither replaced the other


def test_eval_fuser_and_size_mismatch(eval_folders, capsys, caplog):
    cv2.imwrite(str(eval_folders["ir"] / "p3.png"), np.zeros((10, 10), np.uint8))
    code = main(["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--fuser", "classical",
                 "--metrics", "Qabf", "Entropy"])
    assert code == 0
    assert "skipped p3: infrared is 10x10 but visible is 64x48" in caplog.text  # the pair's, not the fuser's
    assert "classical: p3" not in caplog.text
    assert "Qabf" in capsys.readouterr().out


def test_eval_warns_when_its_prompt_routes_camera_footage_to_the_medical_rule(eval_folders, capsys, caplog):
    """As run and fuse do: eval logged the routing without the medical warning."""
    code = main(["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--fuser", "classical",
                 "--prompt", "fuse MRI and PET", "--metrics", "Entropy", "--no-progress"])
    assert code == 0 and "routes 100% to the medical intents" in caplog.text


def test_eval_ranks_fused_folders_and_fusers_together(eval_folders, capsys):
    code = main(["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--fused",
                 str(eval_folders["A"]), "--fuser", "classical", "--metrics", "Qabf", "Entropy", "--no-progress"])
    assert code == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"A", "classical"}
    assert sum(float(row[-1]) for row in rows.values()) == pytest.approx(3.0)  # mean ranks of two methods


def test_eval_refuses_a_fuser_and_a_folder_of_the_same_name(eval_folders, tmp_path, capsys):
    folder = tmp_path / "classical"
    folder.mkdir()
    for image in eval_folders["A"].iterdir():
        (folder / image.name).write_bytes(image.read_bytes())
    code = main(["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--fused", str(folder),
                 "--fuser", "classical"])
    assert code != 0 and "--fuser classical and the --fused folder labelled 'classical'" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message", "status"), [
    (["--fused", "nowhere"], "--fused nowhere: no such folder", 1),
    (["--fuser", "classical", "--metrics", "Sharpness"], "unknown vifb metric 'Sharpness'", 2),
    (["--fused", "A", "--prompt", "fog"], "--prompt steers a fuser", 2),
    (["--fused", "A/p0.png"], "A/p0.png: a file; --fused takes folders of fused images", 2),
])
def test_eval_errors(eval_folders, capsys, args, message, status):
    args = [str(eval_folders["A"] / "p0.png") if a == "A/p0.png" else str(eval_folders[a]) if a in eval_folders
            else a for a in args]
    code = main(["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), *args])
    assert code == status and message in capsys.readouterr().err


def test_eval_takes_metric_names_in_any_case_and_pairs_by_order_as_fuse_does(eval_folders, tmp_path, capsys):
    """Names differ in case between the conventions (VIFB Ssim, CDDFuse SSIM); folders of sequences named
    4900i / 4900v are fused with --pair-by order, which eval did not have."""
    (tmp_path / "seq_ir").mkdir()
    for index, image in enumerate(sorted(eval_folders["ir"].iterdir())):
        (tmp_path / "seq_ir" / f"{index}i.png").write_bytes(image.read_bytes())
    (eval_folders["vis"] / "lonely.png").unlink()
    common = ["eval", "--vis", str(eval_folders["vis"]), "--fused", str(eval_folders["A"]), "--metrics", "ssim",
              "qabf", "QABF", "--convention", "cddfuse", "--no-progress"]
    assert main([*common, "--ir", str(eval_folders["ir"])]) == 0
    by_stem = capsys.readouterr().out
    assert "SSIM" in by_stem and by_stem.count("Qabf") == 1  # a repeated name once: it weighed twice in the rank
    assert main([*common, "--ir", str(tmp_path / "seq_ir")]) == 1
    assert "has a same-name partner" in (err := capsys.readouterr().err) and "pass --pair-by order" in err
    assert main([*common, "--ir", str(tmp_path / "seq_ir"), "--pair-by", "order"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == by_stem.splitlines()[1:]


def test_eval_on_tno_with_classical(capsys):
    tno = shared_data("tno_cddfuse")
    assert main(["eval", "--ir", str(tno / "ir"), "--vis", str(tno / "vi"), "--fuser", "classical",
                 "--convention", "cddfuse", "--no-progress"]) == 0
    mean = capsys.readouterr().out.splitlines()[-1].split()
    assert mean[0] == "mean" and len(mean) == 10
    en, sd, sf, ag, mi, scd, vif, qabf, ssim = map(float, mean[1:])
    # a sound classical fusion sits near the published CDDFuse numbers (EN 7.12, SD 46.0, Qabf 0.54, SSIM 1.03)
    assert 6.8 < en < 7.4 and 35 < sd < 55 and 0.45 < qabf < 0.65 and 0.9 < ssim < 1.1


def test_eval_refuses_what_it_would_otherwise_guess_or_ignore(eval_folders, capsys):
    """Two fused files for one image (the first was used), a method given twice (collapsed into one row),
    --weights with no model fuser (ignored), --fuser model twice (a message about a folder)."""
    common = ["eval", "--ir", str(eval_folders["ir"]), "--vis", str(eval_folders["vis"]), "--convention", "cddfuse",
              "--metrics", "EN"]
    (eval_folders["B"] / "p0_other.png").write_bytes((eval_folders["B"] / "p0_average.png").read_bytes())
    assert main([*common, "--fused", str(eval_folders["B"])]) == 1
    assert "2 files could be the fused 'p0' (p0_average.png, p0_other.png); keep one per input image" in \
        capsys.readouterr().err
    assert main([*common, "--fused", str(eval_folders["A"]), str(eval_folders["A"])]) == 2
    assert f"--fused {eval_folders['A'].resolve()} is given twice" in capsys.readouterr().err
    assert main([*common, "--fuser", "model", "model"]) == 2
    assert "--fuser model is given twice" in capsys.readouterr().err
    assert main([*common, "--fuser", "classical", "--weights", "w.pt"]) == 2
    assert "--weights is the model fuser's checkpoint; it needs --fuser model" in capsys.readouterr().err


@pytest.mark.parametrize("convention", ["vifb", "cddfuse"])
def test_eval_reads_a_jpeg_turned_as_its_exif_orientation_says_as_fuse_does(tmp_path, capsys, convention):
    """VIFB's loader ignored the tag: fuse's outputs of phone photos were scored against the sideways images."""
    from test_fuse_inputs import with_exif_orientation

    for name in ("ir", "vis", "plain"):
        (tmp_path / name).mkdir()
    for index in range(2):
        ir, vis = make_pair(index, (64, 48))
        cv2.imwrite(str(tmp_path / "ir" / f"p{index}.png"), ir)
        ok, data = cv2.imencode(".jpg", cv2.rotate(vis, cv2.ROTATE_90_COUNTERCLOCKWISE))
        (tmp_path / "vis" / f"p{index}.jpg").write_bytes(with_exif_orientation(data.tobytes(), 6))
        cv2.imwrite(str(tmp_path / "plain" / f"p{index}.png"),
                    cv2.rotate(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.ROTATE_90_CLOCKWISE))
    tables = []
    for vis in ("vis", "plain"):
        code = main(["eval", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / vis), "--fuser", "classical",
                     "--convention", convention, "--metrics", "qabf", "ssim", "--no-progress"])
        assert code == 0
        tables.append(capsys.readouterr().out.splitlines()[1:])
    assert tables[0] == tables[1]
