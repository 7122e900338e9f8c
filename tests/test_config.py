from __future__ import annotations

import logging

import pytest

from streamfuse.cli import main
from streamfuse.config import (
    Config,
    ImagesSourceConfig,
    VideoSinkConfig,
    VideoSourceConfig,
    ZmqSinkConfig,
    config_from_dict,
    default_config_path,
    load_config,
    load_train_config,
)
from streamfuse.errors import ConfigError


def error_of(data, overrides=None, env=None) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, overrides, env=env or {})
    return str(info.value)


def test_packaged_demo_config_loads():
    config = load_config()
    assert default_config_path().name == "demo.yaml"
    assert isinstance(config, Config)
    assert config.sinks and isinstance(config.sinks[0], VideoSinkConfig)


def test_running_a_training_config_says_to_train_with_it(capsys):
    """It said 'data_root: unknown key (expected one of: sources, ...)'."""
    assert main(["run", "train", "--max-frames", "5"]) == 2
    assert ("train.yaml: a training config (it sets batch_size, checkpoint_every, data_root); train with it: "
            "streamfuse train train") in capsys.readouterr().err


def test_training_with_a_pipeline_config_or_the_data_split_says_what_they_are(capsys):
    """Both said 'data: unknown key' or '<key>: unknown key (expected one of: data_root, ...)'."""
    assert main(["train", "demo"]) == 2
    assert "demo.yaml: a pipeline config (it sets control, fusion, prompt), not a training one; run it with: " \
           "streamfuse run demo" in capsys.readouterr().err
    for command in ("train", "run"):
        assert main([command, "medical_split"]) == 2
        assert "medical_split.yaml: a data split (the files of each part), not a config to run or train with; " \
               "tools/medical_split.py" in capsys.readouterr().err


def test_empty_config_has_defaults():
    config = config_from_dict({})
    assert config.sync.primary == "vis"
    assert config.registration.mode == "identity"
    assert config.fusion.fuser == "model"


@pytest.mark.parametrize(("data", "expected"), [
    ({"sources": {"ir": {"type": "video", "uri": 5}}}, "sources.ir.uri: expected a string, got 5"),
    ({"sources": {"ir": {"type": "video"}}}, "sources.ir.uri: missing required value"),
    ({"sources": {"ir": {"type": "webcam"}}}, "sources.ir.type: unknown type 'webcam'"),
    ({"sync": {"tolerance": 3}}, "sync.tolerance: unknown key"),
    ({"sync": {"tolerance_ms": "fast"}}, "sync.tolerance_ms: expected a number"),
    ({"sync": {"primary": "thermal"}}, "sync.primary: expected one of vis, ir"),
    ({"synthetic": {"width": 20}}, "synthetic: width and height must be at least 32"),
    ({"synthetic": {"people": -1}}, "synthetic.people: must not be negative"),
    ({"synthetic": {"width": 100000}}, "synthetic: width and height must be at most 8192"),
    ({"synthetic": {"people": 100000}}, "synthetic.people: at most 1000, got 100000"),
    ({"registration": {"mode": "optical_flow"}}, "registration.mode: expected one of identity, resize, homography"),
    ({"sinks": {"type": "video"}}, "sinks: expected a list"),
    ({"sinks": [{"type": "video"}]}, "sinks.0.path: missing required value"),
    ({"sinks": [{"type": "zmq", "queue_size": 0}]}, "sinks.0.queue_size: must be at least 1, got 0"),
    ({"sinks": [{"type": "images", "path": "o", "pattern": "../{name}.png"}]}, "leaves the output folder"),
    ({"sinks": [{"type": "images", "path": "o", "queue_size": -1}]}, "sinks.0.queue_size: must be at least 1, got -1"),
    ({"sinks": [{"type": "ftp", "path": "x"}]}, "sinks.0.type: unknown type 'ftp'"),
    ({"sinks": [{"type": "zmq", "endpoint": "localhost:5555"}]}, "sinks.0.endpoint: expected a ZeroMQ endpoint"),
    ({"sinks": [{"type": "video", "path": "x.mp4", "max_segments": 3}]}, "sinks.0.max_segments: needs segment_minutes"),
    ({"sinks": [{"type": "video", "path": "x.mp4", "segment_minutes": 1, "max_mb": 0}]},
     "sinks.0.max_mb: must be positive"),
    ({"sinks": [{"type": "video", "path": "x.mp4", "resume_free_mb": -1}]},
     "sinks.0.resume_free_mb: must be 0 or more"),
    ({"sources": {"ir": {"type": "images", "path": "x", "realtime": "yes"}}},
     "sources.ir.realtime: expected true or false"),
    ({"registration": {"mode": "homography"}}, "registration.matrix: required when mode is 'homography'"),
    ({"registration": {"matrix": [[1, 0], [0, 1]]}}, "registration.matrix: expected a 3x3 matrix"),
    ({"registration": {"matrix": [[1, 2, 3], [2, 4, 6], [0, 0, 1]]}}, "registration.matrix: matrix is singular"),
    ({"registration": {"matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 0]]}},
     "registration.matrix: H[2][2] must not be 0"),
    ({"synthetic": {"fog": 2}}, "synthetic.fog: must be between 0 and 1"),
    ({"fusion": {"max_batch": 1e9}}, "fusion.max_batch: must be 1 to 64"),
    ({"fusion": {"max_batch": 2.5}}, "fusion.max_batch: expected an integer, got 2.5"),
    ({"registration": {"mode": "resize", "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}},
     "registration.matrix: only used"),
    ({"sinks": [{"type": "video", "path": "x.mp4", "preset": "superfast2"}]},
     "sinks.0.preset: unknown x264 preset 'superfast2' (expected one of: ultrafast, superfast, veryfast"),
    ({"sinks": [{"type": "images", "path": "o", "pattern": "{index:06d}"}]},
     "sinks.0.pattern: '{index:06d}' does not end in an image extension"),
    ({"sinks": [{"type": "zmq", "wait_for_subscribers": -1}]}, "sinks.0.wait_for_subscribers: must be 0 or more"),
    ({"sinks": [{"type": "zmq", "subscriber_timeout_s": -1}]}, "sinks.0.subscriber_timeout_s: must be positive"),
    ({"sinks": [{"type": "zmq", "bind": False, "endpoint": "tcp://127.0.0.1:*"}]},
     "sinks.0.endpoint: 'tcp://127.0.0.1:*' needs a TCP port from 1 to 65535 to connect to"),
    ({"prompt": "fog " * 300}, "prompt: at most 1000 characters, got 1200"),
    ({"text": {"cache_dir": ""}}, "text.cache_dir: empty; give default"),
    ({"sinks": [{"type": "video", "path": "rec-%Y%m%d.mp4"}]}, "sinks.0.path: rec-%Y%m%d.mp4: date codes and "
                                                               "{segment} name the files of a recording in segments"),
    ({"sinks": [{"type": "video", "path": "rec/%Y-%m/cam.mp4", "segment_minutes": 10}]},
     "sinks.0.path: rec/%Y-%m/cam.mp4: date codes and {segment} fill in the file name only, not its folders"),
    ({"sinks": [{"type": "video", "path": "rec.mp4", "codec": "mpeg4", "crf": 40}]},
     "sinks.0.crf: sets H.264's quality; codec mpeg4 does not read it"),
    ({"sinks": [{"type": "video", "path": "rec/a.mp4"}, {"type": "zmq"}, {"type": "video", "path": "./rec/a.mp4"}]},
     "sinks.2.path: ./rec/a.mp4 is written by sinks.0 too; give each sink its own file or folder"),
    ({"sinks": [{"type": "images", "path": "frames"}, {"type": "images", "path": "frames/", "pattern": "{seq}.jpg"}]},
     "sinks.1.path: frames/ is written by sinks.0 too"),
    ({"sinks": [{"type": "zmq", "endpoint": "tcp://127.0.0.1:5556"}], "control": {"enabled": True}},
     "control.endpoint: port 5556 is also sinks.0.endpoint's; give each its own port"),
    ({"view": {"enabled": True, "port": 8080}, "health": {"enabled": True}},
     "health.port: port 8080 is also view.port's"),
])
def test_errors_name_the_key(data, expected):
    assert expected in error_of(data)


def test_a_key_of_another_type_says_how_to_change_the_type(tmp_path):
    """``--set sources.ir.type=video`` on a file whose source has a ``path`` (an images source's key)."""
    config = tmp_path / "files.yaml"
    config.write_text("sources:\n  ir: {type: images, path: thermal, fps: 25}\n")
    with pytest.raises(ConfigError, match=r"sources\.ir\.path: a key of 'images' sources, not of type 'video'; "
                                          r".*--set 'sources\.ir=\{type: video, \.\.\.\}'"):
        load_config(config, ["sources.ir.type=video", "sources.ir.uri=thermal.mp4"])
    replaced = load_config(config, ["sources.ir={type: video, uri: thermal.mp4}"])
    assert isinstance(replaced.sources.ir, VideoSourceConfig) and replaced.sources.ir.uri == "thermal.mp4"
    assert "unknown key" in error_of({"sources": {"ir": {"type": "video", "uri": "a.mp4", "pathx": "x"}}})


def test_error_is_one_line():
    message = error_of({"sources": {"vis": {"type": "images", "path": "x", "fps": -1}}})
    assert message == "sources.vis.fps: must be positive, got -1.0"
    assert "\n" not in message


def test_homography_mode_is_implied_by_matrix():
    config = config_from_dict({"registration": {"matrix": [[2, 0, 1], [0, 2, 1], [0, 0, 1]]}})
    assert config.registration.mode == "homography"


def test_env_substitution_and_default():
    config = config_from_dict(
        {"sources": {"ir": {"type": "video", "uri": "rtsp://${IR_CAM}/stream1"},
                     "vis": {"type": "video", "uri": "${VIS_URI:-/data/vis.mp4}"}}},
        env={"IR_CAM": "10.0.0.5"})
    assert config.sources.ir.uri == "rtsp://10.0.0.5/stream1"
    assert config.sources.vis.uri == "/data/vis.mp4"


def test_a_default_stands_in_for_an_empty_variable_as_in_a_shell(caplog):
    """OUTDIR= in an environment file: '${OUTDIR:-out}/z.mp4' wrote /z.mp4, and 'overwrite: ${OVER:-true}' was
    "expected true or false, got '' (_FromEnvironment)"."""
    sink = {"type": "video", "path": "${OUTDIR:-out}/z.mp4", "overwrite": "${OVER:-true}"}
    config = config_from_dict({"sinks": [sink]}, env={"OUTDIR": "", "OVER": ""})
    assert config.sinks[0].path == "out/z.mp4" and config.sinks[0].overwrite is True
    with caplog.at_level(logging.WARNING, logger="streamfuse"):
        config = config_from_dict({"sinks": [{"type": "video", "path": "${OUTDIR}/z.mp4"}]}, env={"OUTDIR": ""})
    assert "sinks.0.path: environment variable OUTDIR is set but empty" in caplog.text
    message = error_of({"sinks": [{"type": "video", "path": "x.mp4", "overwrite": "${OVER}"}]}, env={"OVER": ""})
    assert message == "sinks.0.overwrite: expected true or false, got '' (str)"


@pytest.mark.parametrize("name", ["cam{1}.mp4", "cam{x}-{segment}.mp4"])
def test_braces_in_a_segmented_file_name_other_than_segment_are_refused(name):
    """They failed at the first segment with a traceback (IndexError, KeyError)."""
    message = error_of({"sinks": [{"type": "video", "path": name, "segment_minutes": 1}]})
    assert message.startswith(f"sinks.0.path: {name}: braces in a segmented file name hold {{segment}}")
    config_from_dict({"sinks": [{"type": "video", "path": "cam{{1}}-{segment:03d}.mp4", "segment_minutes": 1}]})


def test_missing_env_var_names_key_and_variable():
    message = error_of({"sources": {"ir": {"type": "video", "uri": "rtsp://${IR_CAM}/s"}}})
    assert message.startswith("sources.ir.uri: environment variable IR_CAM is not set")


def test_a_placeholder_as_a_whole_value_fills_numbers_and_switches():
    """``port: ${PORT}``: the expansion is read as YAML where the key wants a number or true/false (it was
    "expected a number, got '5'"); where it wants text, it stays text."""
    config = config_from_dict({"sync": {"tolerance_ms": "${TOL}"}, "view": {"enabled": "${VIEW:-true}"},
                               "sinks": [{"type": "video", "path": "${NAME}", "overwrite": "${OVER}"}]},
                              ["sinks.0.crf=${CRF}"], env={"TOL": "12.5", "NAME": "2024.mp4", "OVER": "yes",
                                                           "CRF": "30"})
    assert config.sync.tolerance_ms == 12.5 and config.view.enabled is True
    assert config.sinks[0].path == "2024.mp4" and config.sinks[0].overwrite is True and config.sinks[0].crf == 30
    assert type(config.sinks[0].path) is str
    assert "sync.tolerance_ms: expected a number, got 'fast'" in error_of({"sync": {"tolerance_ms": "${T}"}},
                                                                         env={"T": "fast"})


@pytest.mark.parametrize("value", ["${bad name}/x.mp4", "${OUT:-out/${SUB:-a}}/x.mp4", "${OUT/x.mp4"])
def test_a_placeholder_streamfuse_cannot_read_is_refused(value):
    """It was left as literal text and became a folder named ``${bad name}``."""
    message = error_of({"sinks": [{"type": "video", "path": value}]}, env={"OUT": "o", "SUB": "s", "X": "x"})
    assert message.startswith(f"sinks.0.path: {value!r} has a placeholder streamfuse cannot read; write ${{NAME}}")


def test_a_key_written_twice_in_a_file_is_refused(tmp_path):
    """YAML keeps the last silently: a second ``sinks:`` further down replaced the first without a word."""
    config = tmp_path / "twice.yaml"
    config.write_text("sinks: []\nsync: {tolerance_ms: 10, tolerance_ms: 20}\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: invalid YAML: line 2, column \d+: key tolerance_ms is "
                                          r"written twice \(also on line 2\); keep one"):
        load_config(config)
    config.write_text("sinks: []\nstats: {log_every_s: 1}\nsinks: [{type: zmq}]\n")
    with pytest.raises(ConfigError, match=r"line 3, column 1: key sinks is written twice \(also on line 1\)"):
        load_config(config)


def test_env_variables_in_set_values_are_expanded_like_in_files(tmp_path, capsys, monkeypatch):
    overrides = ["sinks.0.path=${OUT_DIR}/x.mp4", "sources.ir.type=video", "sources.ir.uri=${NOPE:-v.mp4}"]
    config = config_from_dict({"sinks": [{"type": "video", "path": "a.mp4"}]}, overrides, env={"OUT_DIR": "/rec"})
    assert config.sinks[0].path == "/rec/x.mp4" and config.sources.ir.uri == "v.mp4"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NOPE_VAR", raising=False)
    code = main(["run", "--max-frames", "2", "--set", "sinks.0.path=${NOPE_VAR}/x.mp4"])
    assert code == 2
    assert ("streamfuse: error: sinks.0.path: environment variable NOPE_VAR is not set"
            in capsys.readouterr().err)
    assert not list(tmp_path.iterdir())  # no folder literally named ${NOPE_VAR}


def test_set_overrides_parse_yaml_values_and_list_items():
    config = config_from_dict(
        {"sinks": [{"type": "video", "path": "a.mp4"}, {"type": "zmq"}]},
        ["sync.tolerance_ms=12.5", "sinks.0.path=b.mkv", "sinks.1.hwm=9", "sources.ir.type=images",
         "sources.ir.path=frames/", "registration.matrix=[[1,0,3],[0,1,4],[0,0,1]]"])
    assert config.sync.tolerance_ms == 12.5
    assert config.sinks[0].path == "b.mkv"
    assert isinstance(config.sinks[1], ZmqSinkConfig) and config.sinks[1].hwm == 9
    assert isinstance(config.sources.ir, ImagesSourceConfig) and config.sources.ir.path == "frames/"
    assert config.registration.mode == "homography"


def test_numbers_with_an_exponent_are_numbers_in_files_and_set_values(tmp_path):
    # PyYAML follows YAML 1.1, which reads 1e3 (no decimal point) as the string '1e3'
    path = tmp_path / "c.yaml"
    path.write_text("sync:\n  tolerance_ms: 1e3\nfusion:\n  max_wait_ms: 5E-1\n  max_batch: 4.0\n")
    config = load_config(path, ["stats.log_every_s=2e1"])
    assert config.sync.tolerance_ms == 1000.0 and config.fusion.max_wait_ms == 0.5
    assert config.fusion.max_batch == 4 and isinstance(config.fusion.max_batch, int)
    assert config.stats.log_every_s == 20.0
    message = error_of({}, ["sources.ir.type=images", "sources.ir.path=1e3"])
    assert message.startswith("sources.ir.path: expected a string, got 1000.0 (float); quote it")


def test_set_override_errors():
    assert "expected key.path=value" in error_of({}, ["sync.tolerance_ms"])
    assert "no list item '3'" in error_of({"sinks": []}, ["sinks.3.path=x"])
    assert "sync.tolerance_ms: expected a number" in error_of({}, ["sync.tolerance_ms=abc"])


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fusion: {fuser: classical\nsinks: []\n")
    with pytest.raises(ConfigError) as error:
        load_config(bad)
    assert str(error.value) == (f"{bad}: invalid YAML: line 2, column 6: expected ',' or '}}', but got ':' "
                                "(while parsing a flow mapping)")  # was three lines, naming "<unicode string>"
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("sync: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(unsafe)
    listed = tmp_path / "listed.yaml"
    listed.write_text("- sources\n- sinks\n")
    with pytest.raises(ConfigError, match=r"listed.yaml: expected a mapping at the top level .*got list"):
        load_config(listed)


@pytest.mark.parametrize("name", ["out.webm", "out.avi", "out.png", "out"])
def test_a_video_sink_path_streamfuse_cannot_write_is_a_config_error(name):
    """Found when the sink opened (exit 1, after the sources had started); a config value error is exit 2."""
    with pytest.raises(ConfigError, match=rf"sinks.0.path: {name}: not a video file streamfuse writes; end it in one "
                                          r"of \.mp4, \.mkv"):
        config_from_dict({"sinks": [{"type": "video", "path": name}]})


def test_load_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sources:\n  ir: {type: video, uri: ir.mp4}\n  vis: {type: video, uri: vis.mp4}\n"
                    "sinks:\n  - {type: video, path: out.mp4}\n")
    config = load_config(path, ["sinks.0.codec=ffv1"])
    assert isinstance(config.sources.ir, VideoSourceConfig)
    assert config.sinks[0].codec == "ffv1"


def test_a_folder_named_like_a_packaged_config_does_not_hide_it(tmp_path, monkeypatch):
    """`output_dir: train` makes a folder 'train': 'streamfuse train train' then died with IsADirectoryError."""
    monkeypatch.chdir(tmp_path)
    for folder in ("train", "demo", "other"):
        (tmp_path / folder).mkdir()
    assert load_train_config("train").steps > 0
    assert load_config("demo").sources.ir.type == "synthetic"
    with pytest.raises(ConfigError, match="other: is a folder, not a config file"):
        load_train_config("other")


@pytest.mark.parametrize("section", [
    {"sinks": [{"type": "zmq", "endpoint": "tcp://127.0.0.1:99999"}]},
    {"control": {"enabled": True, "endpoint": "tcp://127.0.0.1:70000"}},
    {"sinks": [{"type": "zmq", "endpoint": "tcp://127.0.0.1"}]},
])
def test_a_zeromq_port_out_of_range_is_refused_not_wrapped(section):
    """ZeroMQ binds port 99999 as 34463 (modulo 65536) without a word: the config refuses it by key."""
    key = "sinks.0.endpoint" if "sinks" in section else "control.endpoint"
    with pytest.raises(ConfigError, match=rf"^{key}: .* needs a TCP port from 1 to 65535"):
        config_from_dict(section)


def test_a_wildcard_zeromq_port_is_accepted():
    config = config_from_dict({"sinks": [{"type": "zmq", "endpoint": "tcp://127.0.0.1:*"}],
                               "control": {"enabled": True, "endpoint": "ipc:///tmp/streamfuse-control"}})
    assert config.sinks[0].endpoint == "tcp://127.0.0.1:*"
