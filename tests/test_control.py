from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import zmq

from conftest import free_ports
from streamfuse.cli import main
from streamfuse.config import ControlConfig, config_from_dict
from streamfuse.control import Command, ControlServer, request
from streamfuse.errors import ConfigError, StreamfuseError
from streamfuse.pipeline import Pipeline
from streamfuse.sinks import Subscriber


def live_config(publish: int, control: int, frames: int = 60) -> dict:
    camera = {"type": "synthetic", "fps": 40, "frames": frames, "realtime": True, "drop_policy": "wait"}
    return {
        "synthetic": {"width": 96, "height": 64},
        "sources": {"ir": dict(camera), "vis": dict(camera)},
        "prompt": "find the people",
        "text": {"encoder": "hashing"},
        "control": {"enabled": True, "endpoint": f"tcp://127.0.0.1:{control}"},
        "sinks": [{"type": "zmq", "endpoint": f"tcp://127.0.0.1:{publish}", "encoding": "raw", "lossless": True,
                   "wait_for_subscribers": 1}],
        "stats": {"log_every_s": 0},
    }


def test_prompt_change_mid_run_reaches_headers_without_losing_frames(capsys):
    publish, control = free_ports(2)
    pipeline = Pipeline(config_from_dict(live_config(publish, control)))
    received = []
    with Subscriber(f"tcp://127.0.0.1:{publish}", keep="all") as subscriber:
        runner = threading.Thread(target=pipeline.run, kwargs={"install_signal_handlers": False})
        runner.start()
        while len(received) < 15:
            frame = subscriber.receive(timeout=10)
            assert frame is not None
            received.append(frame)
        assert main(["prompt", "set", "fog, trust thermal", "--control", f"tcp://127.0.0.1:{control}"]) == 0
        assert "prompt 'fog, trust thermal' -> fog" in capsys.readouterr().out
        while (frame := subscriber.receive(timeout=3)) is not None:
            received.append(frame)
        runner.join(10)
    assert [f.header["seq"] for f in received] == list(range(60))  # nothing lost, nothing re-ordered
    prompts = [f.header["prompt"] for f in received]
    switch = prompts.index("fog, trust thermal")
    assert 15 <= switch < 60
    assert prompts[:switch] == ["find the people"] * switch and set(prompts[switch:]) == {"fog, trust thermal"}
    assert max(received[0].header["routing"], key=received[0].header["routing"].get) == "thermal_targets"
    assert max(received[-1].header["routing"], key=received[-1].header["routing"].get) == "fog"
    assert received[-1].header["encoder"].startswith("hashing")


def test_the_prompt_bank_is_embedded_ahead_of_the_first_prompt_change(tmp_path, monkeypatch):
    """With a control socket and no prompt yet, the pipeline loads the encoder and embeds the bank in the
    background: the first ``prompt set`` then costs one encoding, not a model load and a whole bank (which,
    on a busy small CPU, took longer than the client waited for the reply)."""
    cache = tmp_path / "text-cache"
    monkeypatch.setenv("STREAMFUSE_CACHE_DIR", str(cache))
    publish, control = free_ports(2)
    config = live_config(publish, control, frames=None)
    config["prompt"] = ""
    config["sinks"] = []
    config["sources"]["ir"]["frames"] = config["sources"]["vis"]["frames"] = None
    pipeline = Pipeline(config_from_dict(config))
    runner = threading.Thread(target=pipeline.run, kwargs={"install_signal_handlers": False})
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while len(list(cache.rglob("*.npy"))) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(cache.rglob("*.npy"))) >= 20  # the bank's phrasings, with no prompt asked for
    finally:
        pipeline.stop()
        runner.join(10)


def test_control_get_prompt_and_stats_while_running(capsys):
    publish, control = free_ports(2)
    pipeline = Pipeline(config_from_dict(live_config(publish, control, frames=40)))
    endpoint = f"tcp://127.0.0.1:{control}"
    with Subscriber(f"tcp://127.0.0.1:{publish}", keep="all") as subscriber:
        runner = threading.Thread(target=pipeline.run, kwargs={"install_signal_handlers": False})
        runner.start()
        assert subscriber.receive(timeout=10) is not None
        reply = request(endpoint, {"cmd": "get_prompt"})
        assert reply["ok"] and reply["routing"]["prompt"] == "find the people"
        stats = request(endpoint, {"cmd": "get_stats"})
        assert stats["ok"] and "fuse" in stats["stats"]["stages"]
        capsys.readouterr()
        assert main(["prompt", "get", "--control", endpoint]) == 0  # the CLI asks for the same commands
        assert "prompt 'find the people' -> thermal_targets" in capsys.readouterr().out
        for action in ("stats", "health"):
            assert main(["prompt", action, "--control", endpoint]) == 0
            assert action in json.loads(capsys.readouterr().out)
        while subscriber.receive(timeout=3) is not None:
            pass
        runner.join(10)
    with pytest.raises(StreamfuseError, match="no reply"):
        request(endpoint, {"cmd": "get_prompt"}, timeout_s=0.3)  # closed with the pipeline
    # A prompt change that timed out may still be applied (a pipeline loading its text encoder answers late):
    # the message said only that no pipeline might be running there.
    with pytest.raises(StreamfuseError, match=r"may still be carried out \(check with 'streamfuse prompt get'\)"):
        request(endpoint, {"cmd": "set_prompt", "prompt": "fog"}, timeout_s=0.3)


def control_config(port: int, **fields) -> ControlConfig:
    return ControlConfig(enabled=True, endpoint=f"tcp://127.0.0.1:{port}", **fields)


def echo_commands() -> dict[str, Command]:
    def set_prompt(req):
        if len(req["prompt"]) > 1000:
            raise ValueError("'prompt' must be at most 1000 characters")
        return {"prompt": req["prompt"]}

    def explode(_req):
        raise RuntimeError("boom")

    return {"set_prompt": Command(set_prompt, {"prompt": str}), "explode": Command(explode)}


@contextmanager
def echo_server_and_client() -> Iterator[tuple[int, zmq.Socket]]:
    """A control server with :func:`echo_commands` on a free port, and a raw REQ socket connected to it."""
    (port,) = free_ports(1)
    server = ControlServer(control_config(port), echo_commands())
    context = zmq.Context()
    client = context.socket(zmq.REQ)
    client.connect(f"tcp://127.0.0.1:{port}")
    try:
        yield port, client
    finally:
        client.close(0)
        context.term()
        server.close()


@pytest.mark.parametrize(("raw", "error"), [
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "JSON object with a string 'cmd'"),
    (b'{"cmd": 5}', "JSON object with a string 'cmd'"),
    (b'{"cmd": "reboot"}', "unknown command 'reboot'"),
    (b'{"cmd": "set_prompt"}', "set_prompt: missing key 'prompt'"),
    (b'{"cmd": "set_prompt", "prompt": 7}', "'prompt' must be a str, got int"),
    (b'{"cmd": "set_prompt", "prompt": "fog", "force": true}', "unexpected key 'force' (expected: prompt)"),
    (b'{"cmd": "explode", "x": 1}', "unexpected key 'x' (expected: no other keys)"),
    (json.dumps({"cmd": "set_prompt", "prompt": "x" * 2000}).encode(), "at most 1000 characters"),
    (json.dumps({"cmd": "set_prompt", "prompt": "x" * 70000}).encode(), "over the 65536-byte limit"),
    (b"[" * 100000 + b"]" * 100000, "over the 65536-byte limit"),
    (b'{"cmd": "explode"}', "internal error: boom"),
])
def test_bad_control_messages_get_error_replies(raw, error):
    with echo_server_and_client() as (_, client):
        client.send(raw)
        assert client.poll(5000)
        reply = json.loads(client.recv())
        assert reply["ok"] is False and error in reply["error"]
        if b"reboot" in raw:
            assert reply["commands"] == ["explode", "set_prompt"]
        client.send(b'{"cmd": "set_prompt", "prompt": "still alive"}')  # the server survives every bad request
        assert client.poll(5000) and json.loads(client.recv()) == {"ok": True, "prompt": "still alive"}


@pytest.mark.parametrize("parts", [
    [b'{"cmd": "set_prompt", "prompt": "fog"}', b"second part"],
    [b"", b"", b""],
    [b"not json", b'{"cmd": "set_prompt", "prompt": "fog"}', b"x" * 70000],
])
def test_multipart_control_message_gets_an_error_and_the_socket_keeps_answering(parts):
    with echo_server_and_client() as (port, client):
        client.send_multipart(parts)
        assert client.poll(5000)
        reply = json.loads(client.recv())
        assert reply == {"ok": False, "error": f"request must be one message part, got {len(parts)}"}
        reply = request(f"tcp://127.0.0.1:{port}", {"cmd": "set_prompt", "prompt": "still alive"}, timeout_s=5)
        assert reply == {"ok": True, "prompt": "still alive"}


def test_control_rate_limit_refuses_a_flood_but_always_replies():
    (port,) = free_ports(1)
    server = ControlServer(control_config(port, max_requests_per_s=5), echo_commands())
    try:
        replies = [request(f"tcp://127.0.0.1:{port}", {"cmd": "set_prompt", "prompt": f"p{i}"}) for i in range(20)]
        refused = [r for r in replies if not r["ok"]]
        assert 10 <= len(refused) <= 15 and all("rate limit" in r["error"] for r in refused)
        assert all(r["ok"] for r in replies[:5])  # the burst allowance
        time.sleep(0.5)  # tokens come back at 5 per second
        assert request(f"tcp://127.0.0.1:{port}", {"cmd": "set_prompt", "prompt": "later"})["ok"]
    finally:
        server.close()


def test_control_endpoint_in_use():
    (port,) = free_ports(1)
    first = ControlServer(control_config(port), {})
    try:
        with pytest.raises(StreamfuseError, match="control.endpoint: cannot bind"):
            ControlServer(control_config(port), {})
    finally:
        first.close()


def test_a_wildcard_port_reports_the_port_it_was_given(caplog):
    """``tcp://127.0.0.1:*`` binds any free port; the server says which (nobody can connect to ``*``)."""
    caplog.set_level("INFO")
    server = ControlServer(ControlConfig(enabled=True, endpoint="tcp://127.0.0.1:*"), echo_commands())
    try:
        assert not server.endpoint.endswith(":*"), server.endpoint
        assert f"bound to {server.endpoint}" in caplog.text, caplog.text
        assert request(server.endpoint, {"cmd": "set_prompt", "prompt": "fog"})["ok"]
    finally:
        server.close()


def test_control_refuses_a_network_endpoint_without_keys():
    with pytest.raises(ConfigError, match="control.endpoint: tcp://0.0.0.0:5556 is reachable from the network"):
        config_from_dict({"control": {"enabled": True, "endpoint": "tcp://0.0.0.0:5556"}})
    config = config_from_dict({"control": {"enabled": True, "endpoint": "tcp://0.0.0.0:5556",
                                           "allow_insecure_remote": True}})
    assert config.control.allow_insecure_remote


def test_prompt_explain_cli(capsys):
    assert main(["prompt", "explain", "night and foggy, find the people", "--set", "text.encoder=hashing",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["encoder"].startswith("hashing")
    active = {k for k, v in report["weights"].items() if v > 0.05}
    assert active == {"thermal_targets", "low_light", "fog"}
    assert main(["prompt", "explain", "headlights", "--set", "text.encoder=hashing"]) == 0
    assert "routing: glare 1.00" in capsys.readouterr().out
