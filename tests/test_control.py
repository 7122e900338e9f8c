from __future__ import annotations

import json
import threading

import pytest
import zmq

from conftest import free_ports
from streamfuse.cli import main
from streamfuse.config import config_from_dict
from streamfuse.control import ControlServer, request
from streamfuse.errors import StreamfuseError
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


def test_control_get_prompt_and_stats_while_running():
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
        while subscriber.receive(timeout=3) is not None:
            pass
        runner.join(10)
    with pytest.raises(StreamfuseError, match="no reply"):
        request(endpoint, {"cmd": "get_prompt"}, timeout_s=0.3)  # closed with the pipeline


@pytest.mark.parametrize(("raw", "error"), [
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "JSON object with a string 'cmd'"),
    (b'{"cmd": 5}', "JSON object with a string 'cmd'"),
    (b'{"cmd": "reboot"}', "unknown command 'reboot'"),
    (b'{"cmd": "set_prompt"}', "needs 'prompt'"),
    (b'{"cmd": "set_prompt", "prompt": 7}', "needs 'prompt'"),
    (json.dumps({"cmd": "set_prompt", "prompt": "x" * 2000}).encode(), "at most 1000 characters"),
    (b'{"cmd": "explode"}', "internal error: boom"),
])
def test_bad_control_messages_get_error_replies(raw, error):
    (port,) = free_ports(1)

    def set_prompt(req):
        prompt = req.get("prompt")
        if not isinstance(prompt, str) or len(prompt) > 1000:
            raise ValueError("set_prompt needs 'prompt': a string of at most 1000 characters")
        return {"prompt": prompt}

    def explode(_req):
        raise RuntimeError("boom")

    server = ControlServer(f"tcp://127.0.0.1:{port}", {"set_prompt": set_prompt, "explode": explode})
    context = zmq.Context()
    client = context.socket(zmq.REQ)
    client.connect(f"tcp://127.0.0.1:{port}")
    try:
        client.send(raw)
        assert client.poll(5000)
        reply = json.loads(client.recv())
        assert reply["ok"] is False and error in reply["error"]
        if b"reboot" in raw:
            assert reply["commands"] == ["explode", "set_prompt"]
        client.send(b'{"cmd": "set_prompt", "prompt": "still alive"}')  # the server survives every bad request
        assert client.poll(5000) and json.loads(client.recv()) == {"ok": True, "prompt": "still alive"}
    finally:
        client.close(0)
        context.term()
        server.close()


def test_control_endpoint_in_use():
    (port,) = free_ports(1)
    first = ControlServer(f"tcp://127.0.0.1:{port}", {})
    try:
        with pytest.raises(StreamfuseError, match="control.endpoint: cannot bind"):
            ControlServer(f"tcp://127.0.0.1:{port}", {})
    finally:
        first.close()


def test_prompt_explain_cli(capsys):
    assert main(["prompt", "explain", "night and foggy, find the people", "--set", "text.encoder=hashing",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["encoder"].startswith("hashing")
    active = {k for k, v in report["weights"].items() if v > 0.05}
    assert active == {"thermal_targets", "low_light", "fog"}
    assert main(["prompt", "explain", "headlights", "--set", "text.encoder=hashing"]) == 0
    assert "routing: glare 1.00" in capsys.readouterr().out
