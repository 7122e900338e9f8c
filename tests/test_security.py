"""CURVE on the published frames and the control socket: authorised clients work, others get nothing."""

from __future__ import annotations

import logging
import threading

import pytest

from conftest import free_ports
from streamfuse.cli import main
from streamfuse.config import config_from_dict
from streamfuse.control import request
from streamfuse.errors import ConfigError, StreamfuseError
from streamfuse.pipeline import Pipeline
from streamfuse.security import generate_keys
from streamfuse.sinks import Subscriber


@pytest.fixture
def keys(tmp_path):
    """A server pair, one authorised client pair (its public key in the allow-list), one stranger."""
    server_public, server_secret = generate_keys(tmp_path / "server", "server")
    client_public, client_secret = generate_keys(tmp_path / "clients", "operator")
    _, stranger_secret = generate_keys(tmp_path / "strangers", "intruder")
    return {"server_public": str(server_public), "server_secret": str(server_secret),
            "authorized": str(tmp_path / "clients"), "client_secret": str(client_secret),
            "stranger_secret": str(stranger_secret)}


def secured_config(keys: dict, publish: int, control: int) -> dict:
    camera = {"type": "synthetic", "fps": 30, "realtime": True}
    curve = {"server_secret_key": keys["server_secret"], "authorized_keys": keys["authorized"]}
    return {
        "synthetic": {"width": 64, "height": 48},
        "sources": {"ir": dict(camera), "vis": dict(camera)},
        "fusion": {"fuser": "classical"},
        "text": {"encoder": "hashing"},
        "control": {"enabled": True, "endpoint": f"tcp://127.0.0.1:{control}", "curve": dict(curve)},
        "sinks": [{"type": "zmq", "endpoint": f"tcp://127.0.0.1:{publish}", "encoding": "raw", "curve": dict(curve)}],
        "stats": {"log_every_s": 0},
    }


def test_curve_admits_authorised_clients_only(keys, caplog):
    publish, control = free_ports(2)
    pipeline = Pipeline(config_from_dict(secured_config(keys, publish, control)))
    runner = threading.Thread(target=pipeline.run, kwargs={"install_signal_handlers": False})
    caplog.set_level(logging.WARNING, logger="streamfuse.security")
    caplog.set_level(logging.INFO, logger="streamfuse.control")
    runner.start()
    try:
        publisher, controller = f"tcp://127.0.0.1:{publish}", f"tcp://127.0.0.1:{control}"
        with Subscriber(publisher, keep="all", client_key=keys["client_secret"], server_key=keys["server_public"]) \
                as authorised, \
                Subscriber(publisher, keep="all", client_key=keys["stranger_secret"],
                           server_key=keys["server_public"]) as stranger, \
                Subscriber(publisher, keep="all") as plain:
            assert authorised.receive(timeout=10) is not None
            assert stranger.receive(timeout=1.5) is None
            assert plain.receive(timeout=0.5) is None

        reply = request(controller, {"cmd": "get_prompt"}, client_key=keys["client_secret"],
                        server_key=keys["server_public"])
        assert reply["ok"]
        with pytest.raises(StreamfuseError, match="no reply"):
            request(controller, {"cmd": "set_prompt", "prompt": "fog"}, timeout_s=1.5,
                    client_key=keys["stranger_secret"], server_key=keys["server_public"])
        with pytest.raises(StreamfuseError, match="no reply"):
            request(controller, {"cmd": "set_prompt", "prompt": "fog"}, timeout_s=1.0)
        assert pipeline.routing.prompt == ""  # neither refused client changed anything
        assert main(["prompt", "set", "night", "--control", controller, "--client-key", keys["client_secret"],
                     "--server-key", keys["server_public"]]) == 0
        assert pipeline.routing.prompt == "night"
    finally:
        pipeline.stop()
        runner.join(10)
    assert any("unknown CURVE key" in r.getMessage() for r in caplog.records)  # the refusals were logged
    # the command the log suggests carries the key options a secured socket needs (it answered nothing without)
    assert f"--control tcp://127.0.0.1:{control} --client-key CLIENT.key_secret --server-key " \
           f"{keys['server_public']})" in caplog.text


def test_curve_misconfiguration_is_named(keys, tmp_path):
    with pytest.raises(ConfigError, match="set both server_secret_key and authorized_keys"):
        config_from_dict({"sinks": [{"type": "zmq", "curve": {"server_secret_key": keys["server_secret"]}}]})
    publish, control = free_ports(2)
    data = secured_config(keys, publish, control)
    data["sinks"][0]["curve"]["server_secret_key"] = keys["server_public"]
    with pytest.raises(ConfigError, match=r"sinks.0.curve.server_secret_key: .*server.key holds only a public key"):
        Pipeline(config_from_dict(data)).run(install_signal_handlers=False)
    data = secured_config(keys, publish, control)
    data["control"]["curve"]["authorized_keys"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="control.curve.authorized_keys: .*nowhere is not a folder"):
        Pipeline(config_from_dict(data)).run(install_signal_handlers=False)
    junk = tmp_path / "junk_clients"  # a file that is no key among them was a ValueError traceback
    junk.mkdir()
    (junk / "x.key").write_text("junk\n")
    data = secured_config(keys, publish, control)
    data["control"]["curve"]["authorized_keys"] = str(junk)
    with pytest.raises(ConfigError, match=r"control.curve.authorized_keys: No public key found in .*x\.key; keep only"):
        Pipeline(config_from_dict(data)).run(install_signal_handlers=False)


def test_a_client_key_without_the_server_key_is_an_argument_error(keys, capsys):
    """Exit 2 like every argument error (it was 1), for the subscriber and the control client alike."""
    publish, control = free_ports(2)
    assert main(["subscribe", f"tcp://127.0.0.1:{publish}", "--client-key", keys["client_secret"],
                 "--duration", "0.2"]) == 2
    assert "needs both its own secret key (--client-key) and the publisher's public key" in capsys.readouterr().err
    assert main(["prompt", "get", "--control", f"tcp://127.0.0.1:{control}", "--client-key",
                 keys["client_secret"]]) == 2
    assert "a CURVE control client needs --client-key and --server-key" in capsys.readouterr().err


def test_keys_command_writes_a_pair_and_never_overwrites(tmp_path, capsys):
    assert main(["keys", str(tmp_path), "--name", "cam"]) == 0
    assert (tmp_path / "cam.key").is_file() and (tmp_path / "cam.key_secret").stat().st_mode & 0o077 == 0
    assert main(["keys", str(tmp_path), "--name", "cam"]) == 2
    assert "a key with this name exists" in capsys.readouterr().err
    for name in ("../escape", "a/b", ""):  # keys stay in the folder given
        assert main(["keys", str(tmp_path / "k"), "--name", name]) == 2
        assert f"--name {name!r}: expected a plain file name" in capsys.readouterr().err
    assert main(["keys", str(tmp_path / "cam.key"), "--name", "x"]) == 2
    assert "cam.key: is a file; give the folder the keys go into" in capsys.readouterr().err
    assert not (tmp_path / "escape.key").exists() and not (tmp_path / "k").exists()
