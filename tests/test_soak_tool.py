"""The soak tool's arithmetic (tools/soak.py): the slopes and medians its verdict rests on."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from soak import read_samples, slope_per_hour, slopes, window_medians  # noqa: E402


def test_slope_per_hour_recovers_a_known_trend():
    times = [60.0 * minute for minute in range(31)]
    values = [140.0 + 0.5 * t / 3600.0 for t in times]  # +0.5 MB/h
    assert slope_per_hour(times, values) == pytest.approx(0.5)
    assert slope_per_hour([0.0], [1.0]) == 0.0
    assert slope_per_hour([5.0, 5.0], [1.0, 2.0]) == 0.0  # no spread in time: no slope


def test_slopes_skip_keys_some_samples_lack():
    samples = [{"t_s": 0.0, "rss_mb": 1.0, "fds": 20}, {"t_s": 3600.0, "rss_mb": 3.0}]
    assert slopes(samples, ["rss_mb", "fds"]) == {"rss_mb": 2.0}


def test_window_medians_shrug_off_dips_that_move_the_slope():
    # A plateau at 140 MB with a camera-down dip of 2.5 MB in one window: the medians stay at 140.
    samples = [{"t_s": 10.0 * i, "rss_mb": 137.5 if i in (35, 36) else 140.0} for i in range(60)]
    assert window_medians(samples, "rss_mb") == {"0": 140.0, "5": 140.0}
    assert list(window_medians(samples, "rss_mb", minutes=2.5)) == ["0", "2.5", "5", "7.5"]


def test_read_samples_returns_numbers_and_skips_empty_cells(tmp_path):
    path = tmp_path / "samples.csv"
    path.write_text("t_s,rss_mb,fds\n0.0,140.5,21\n10.0,140.6,\n")
    assert read_samples(path) == [{"t_s": 0.0, "rss_mb": 140.5, "fds": 21.0}, {"t_s": 10.0, "rss_mb": 140.6}]
