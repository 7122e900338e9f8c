"""Property-based tests: whatever the config loader and the control socket are given, they answer
with a result or one clear error, never a crash."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import free_ports
from streamfuse.config import Config, ControlConfig, config_from_dict
from streamfuse.control import Command, ControlServer
from streamfuse.errors import ConfigError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=20))
#: Keys that exist somewhere in the config, mixed with random ones, so the search reaches deep sections.
known_keys = st.sampled_from(["sources", "ir", "vis", "type", "uri", "fps", "frames", "reconnect", "sync", "primary",
                              "tolerance_ms", "on_camera_loss", "fusion", "fuser", "sinks", "path", "endpoint",
                              "control", "curve", "health", "port", "synthetic", "width", "height", "prompt",
                              "video", "zmq", "synthetic", "images", "camera", "stall_timeout_s", "max_attempts"])
keys = st.one_of(known_keys, st.text(max_size=12))
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(keys, inner, max_size=5)), max_leaves=25)


@SETTINGS
@given(st.dictionaries(keys, documents, max_size=6))
def test_config_loader_returns_a_config_or_one_config_error(data):
    try:
        config = config_from_dict(data, env={})
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip()  # one line, naming the problem
    else:
        assert isinstance(config, Config)


@SETTINGS
@given(st.lists(st.text(max_size=40), max_size=4))
def test_set_overrides_never_crash_the_loader(overrides):
    try:
        config_from_dict({}, overrides, env={})
    except ConfigError as exc:
        assert str(exc)


request_values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars,
                                                                                   max_size=3))
requests = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["cmd", "prompt", "extra"]) | st.text(max_size=8), request_values,
                    max_size=4).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries({"cmd": st.sampled_from(["set_prompt", "get_prompt", "nope"])},
                          optional={"prompt": request_values}).map(lambda d: json.dumps(d).encode()),
)


def test_control_messages_always_get_one_well_formed_reply():
    (port,) = free_ports(1)
    accepted = []

    def set_prompt(request):
        accepted.append(request["prompt"])
        return {"prompt": request["prompt"]}

    commands = {"set_prompt": Command(set_prompt, {"prompt": str}), "get_prompt": Command(lambda _r: {"prompt": "x"})}
    server = ControlServer(ControlConfig(enabled=True, endpoint=f"tcp://127.0.0.1:{port}",
                                         max_requests_per_s=1e9), commands)

    @SETTINGS
    @given(requests)
    def check(raw):
        before = len(accepted)
        reply = server.handle(raw)
        assert isinstance(reply["ok"], bool)
        json.dumps(reply)  # serialisable: it goes back over the socket
        if not reply["ok"]:
            assert reply["error"] and len(accepted) == before  # refused requests change nothing
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            assert not reply["ok"]
            return
        if reply["ok"] and isinstance(request, dict) and request.get("cmd") == "set_prompt":
            assert set(request) == {"cmd", "prompt"} and accepted[-1] == request["prompt"]

    try:
        check()
    finally:
        server.close()
