"""The web view (streamfuse/view): real HTTP clients, real ZeroMQ sockets, and headless Chromium."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from browser import Browser, chromium_missing
from conftest import free_ports, http_get, python_env, running_pipeline, wait_until
from streamfuse.config import config_from_dict
from streamfuse.control import CommandHandler, pipeline_commands, request
from streamfuse.errors import ConfigError
from streamfuse.pipeline import Pipeline
from streamfuse.sinks import Subscriber

TOKEN = "view-test-token-0123456789"


def view_config(publish: int, *, size=(160, 128), fps: int = 30, frames: int = 3000, token: str | None = TOKEN,
                encoding: str = "raw", lossless: bool = False) -> dict:
    camera = {"type": "synthetic", "fps": fps, "frames": frames, "realtime": True}
    return {
        "synthetic": {"width": size[0], "height": size[1], "people": 2},
        "sources": {"ir": dict(camera), "vis": dict(camera)},
        "fusion": {"fuser": "classical"},
        "prompt": "find the people",
        "text": {"encoder": "hashing"},
        "view": {"enabled": True, "port": 0, "token": token},
        "sinks": [{"type": "zmq", "endpoint": f"tcp://127.0.0.1:{publish}", "encoding": encoding,
                   "lossless": lossless}],
        "stats": {"log_every_s": 0},
    }


def running(config: dict):
    """The pipeline running, once the view has its first frame."""
    return running_pipeline(config, lambda pipeline: pipeline.view is not None and pipeline.view.board.latest
                            is not None, "the first frame")


def post(url: str, body: bytes, **headers: str) -> tuple[int, dict]:
    """POST ``body`` as JSON (as the page does), with extra ``headers``; the status and the JSON reply."""
    request_ = urllib.request.Request(url, data=body, method="POST",
                                      headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request_, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_wrong_or_missing_token_gets_403_and_nothing_else():
    (publish,) = free_ports(1)
    with running(view_config(publish)) as pipeline:
        base = pipeline.view.url
        for path in ("/", "/?token=wrong", "/stream/fused.mjpg", "/stream/fused.mjpg?token=" + TOKEN[:-1],
                     "/snapshot.png?token=", "/api/status", "/nothing-here"):
            assert http_get(base + path) == (403, ""), path
        connection = http.client.HTTPConnection("127.0.0.1", pipeline.view.port, timeout=5)
        connection.request("POST", "/api/control?token=nope", body=b'{"cmd": "set_prompt", "prompt": "fog"}')
        response = connection.getresponse()
        assert (response.status, response.read()) == (403, b"")
        connection.close()
        assert pipeline.routing.prompt == "find the people"  # the refused request changed nothing
        status, page = http_get(f"{base}/?token={TOKEN}")
        assert status == 200 and "prompt-form" in page
        for method, path, token, expected in (
                ("PUT", "/api/control", "", 403), ("OPTIONS", "/", "", 403), ("TRACE", "/", "", 403),
                ("DELETE", "/api/control", TOKEN, 405),
                ("GET", "/api/control", TOKEN, 405), ("POST", "/api/status", TOKEN, 405),
                ("HEAD", "/api/status", TOKEN, 200)):
            connection = http.client.HTTPConnection("127.0.0.1", pipeline.view.port, timeout=5)
            connection.request(method, f"{path}?token={token}")  # other methods got http.server's HTML 501, unchecked
            response = connection.getresponse()
            assert response.status == expected, (method, path)
            assert response.read() == b"" or expected == 405
            connection.close()
        request_ = urllib.request.Request(f"{base}/api/status", headers={"Authorization": f"bearer {TOKEN}"})
        with urllib.request.urlopen(request_, timeout=5) as response:  # the scheme in any case
            assert response.status == 200
        request_ = urllib.request.Request(f"{base}/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request_, timeout=5) as response:
            assert json.loads(response.read())["routing"]["prompt"] == "find the people"


def test_prompt_errors_are_the_control_sockets(tmp_path):
    publish, control = free_ports(2)
    config = view_config(publish)
    config["control"] = {"enabled": True, "endpoint": f"tcp://127.0.0.1:{control}"}
    config["view"]["max_requests_per_s"] = 100
    with running(config) as pipeline:
        url = f"{pipeline.view.url}/api/control?token={TOKEN}"
        for message in ({"cmd": "set_prompt", "prompt": "x" * 1001}, {"cmd": "set_prompt", "prompt": 3},
                        {"cmd": "set_prompt"}, {"cmd": "shutdown"}):
            status, reply = post(url, json.dumps(message).encode())
            assert status == 400 and reply["ok"] is False
            assert reply == request(f"tcp://127.0.0.1:{control}", message)
        assert post(url, b"{not json")[1] == {"ok": False, "error": "request is not valid JSON"}
        for length in ("-5", "-1", "many"):  # -5 was a ValueError traceback; -1 read until the client gave up
            host, port = pipeline.view.url.removeprefix("http://").split(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=5)
            connection.putrequest("POST", f"/api/control?token={TOKEN}")
            connection.putheader("Content-Length", length)
            connection.putheader("Content-Type", "application/json")
            connection.endheaders()
            assert connection.getresponse().status == 411, length
            connection.close()
        oversized = json.dumps({"cmd": "set_prompt", "prompt": "y" * 70000}).encode()
        status, reply = post(url, oversized)
        assert status == 413
        assert reply == CommandHandler(pipeline_commands(pipeline), 1.0).handle(oversized)
        assert pipeline.routing.prompt == "find the people"
        status, reply = post(url, json.dumps({"cmd": "set_prompt", "prompt": "fog, trust thermal"}).encode())
        assert status == 200 and reply["ok"] and reply["routing"]["prompt"] == "fog, trust thermal"
        assert pipeline.routing.prompt == "fog, trust thermal"
    config["view"]["max_requests_per_s"] = 1
    with running(config) as pipeline:
        url = f"{pipeline.view.url}/api/control?token={TOKEN}"
        replies = [post(url, b'{"cmd": "get_prompt"}') for _ in range(3)]
        assert replies[0][0] == 200
        assert replies[-1] == (400, {"ok": False, "error": "rate limit: at most 1 requests per second; retry later"})


def read_parts(response, count: int) -> list[tuple[dict[str, str], bytes]]:
    """The first ``count`` parts of a multipart/x-mixed-replace response."""
    parts = []
    while len(parts) < count:
        assert response.readline().strip() == b"--streamfuse-frame"
        headers = {}
        while (line := response.readline().strip()):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, response.read(int(headers["content-length"]))))
        assert response.readline() == b"\r\n"
    return parts


def test_streams_encode_each_frame_once_whatever_the_number_of_viewers():
    (publish,) = free_ports(1)
    with running(view_config(publish)) as pipeline:
        board = pipeline.view.board
        responses = [urllib.request.urlopen(f"{pipeline.view.url}/stream/{kind}.mjpg?token={TOKEN}", timeout=10)
                     for kind in ("fused", "fused", "fused", "fused", "ir", "vis")]
        try:
            assert responses[0].headers["Content-Type"] == "multipart/x-mixed-replace; boundary=streamfuse-frame"
            wait_until(lambda: pipeline.view.viewers == 6, 5, "six viewers counted")
            received = [read_parts(response, 20) for response in responses]
        finally:
            for response in responses:
                response.close()
        wait_until(lambda: pipeline.view.viewers == 0, 5, "the viewers counted out")
        encoded, fused = dict(board.encoded), pipeline.frames_fused
        indexes = set()
        for parts in received:
            seen = [int(headers["x-index"]) for headers, _ in parts]
            assert seen == sorted(set(seen))  # newer frames only, in order
            indexes.update(seen)
            for headers, jpeg in parts:
                image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
                assert image.shape[:2] == (128, 160)
                assert abs(float(headers["x-captured-at"]) - time.time()) < 10
    # Four fused viewers, one infrared, one visible: at most one JPEG per frame and picture was made.
    assert 20 <= encoded["fused"] <= fused and 20 <= encoded["ir"] <= fused and 20 <= encoded["vis"] <= fused
    fused_indexes = [{int(h["x-index"]) for h, _ in parts} for parts in received[:4]]
    assert len(set.intersection(*fused_indexes)) >= 10  # the same frames reached all four


def test_streams_beyond_max_viewers_are_answered_503():
    """Each stream holds a thread, and there was no limit: 100 viewers, 100 threads."""
    (publish,) = free_ports(1)
    config = view_config(publish)
    config["view"]["max_viewers"] = 2
    with running(config) as pipeline:
        url = f"{pipeline.view.url}/stream/fused.mjpg?token={TOKEN}"
        responses = [urllib.request.urlopen(url, timeout=10) for _ in range(2)]
        try:
            wait_until(lambda: pipeline.view.viewers == 2, 5, "two viewers counted")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url, timeout=10)
            assert refused.value.code == 503 and "view.max_viewers" in refused.value.read().decode()
            assert pipeline.view.viewers == 2
        finally:
            responses[0].close()
        wait_until(lambda: pipeline.view.viewers == 1, 40, "a viewer counted out")
        with urllib.request.urlopen(url, timeout=10) as again:  # room again
            assert again.status == 200
        responses[1].close()


def test_snapshot_is_the_fused_frame_lossless():
    (publish,) = free_ports(1)
    config = view_config(publish, fps=10, lossless=True)
    config["sinks"][0]["wait_for_subscribers"] = 1
    with Subscriber(f"tcp://127.0.0.1:{publish}", keep="all") as subscriber, running(config) as pipeline:
        with urllib.request.urlopen(f"{pipeline.view.url}/snapshot.png?token={TOKEN}", timeout=10) as response:
            assert response.headers["Content-Type"] == "image/png"
            name = response.headers["Content-Disposition"]
            snapshot = cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_UNCHANGED)
        index = int(name.split("streamfuse-")[1].split(".png")[0])
        while (frame := subscriber.receive(timeout=10)).header["index"] < index:
            pass
    assert frame.header["index"] == index
    assert np.array_equal(snapshot, frame.image)


def test_view_settings_are_checked():
    base = view_config(5555)
    for view, problem in (({"bind": "0.0.0.0", "token": None}, "view.bind: 0.0.0.0 is reachable from the network"),
                          ({"token": "short"}, "view.token: must be at least 16 characters"),
                          # base64 (openssl rand -base64): a raw '+' in ?token= reads as a space, and it was refused
                          ({"token": "Ab+cD/eF==gh1234xyZ+"}, r"view.token: use letters, digits and \. _ ~ - only"),
                          ({"port": 70000}, "view.port: must be a TCP port"),
                          ({"jpeg_quality": 0}, "view.jpeg_quality")):
        with pytest.raises(ConfigError, match=problem):
            config_from_dict({**base, "view": {**base["view"], **view}})
    config_from_dict({**base, "view": {"enabled": True, "bind": "0.0.0.0", "token": TOKEN}})


def test_view_off_serves_nothing():
    (publish,) = free_ports(1)
    config = view_config(publish, frames=10)
    config["view"] = {"enabled": False}
    pipeline = Pipeline(config_from_dict(config))
    pipeline.run(install_signal_handlers=False)
    assert pipeline.view is None and pipeline.frames_fused > 0


def test_streamfuse_run_serves_the_view_on_the_demo(tmp_path):
    command = [sys.executable, "-m", "streamfuse", "run", "--set", "view.enabled=true", "--set", "view.port=0",
               "--set", "fusion.fuser=classical", "--set", "text.encoder=hashing", "--set", "control.enabled=false",
               "--set", "sinks=[]"]
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=python_env())
    try:
        while (line := process.stderr.readline()) and "web view" not in line:
            pass
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        wait_until(lambda: http_get(url + "api/status")[0] == 200 and json.loads(http_get(url + "api/status")[1])
                   ["health"]["frames"] > 0, 20, "fused frames")
        status, page = http_get(url)
        assert status == 200 and "<canvas id=\"fused\">" in page
        with urllib.request.urlopen(url + "snapshot.png", timeout=10) as response:
            snapshot = cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_COLOR)
        assert snapshot.shape == (512, 640, 3)  # the demo's size
    finally:
        process.send_signal(signal.SIGINT)
        process.stderr.read()
        assert process.wait(30) == 130


@pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))
def test_chromium_plays_the_page_and_its_prompt_box_steers_the_fusion(tmp_path):
    (publish,) = free_ports(1)
    config = view_config(publish, size=(320, 256), encoding="jpeg")
    with Subscriber(f"tcp://127.0.0.1:{publish}", keep="latest", max_age_s=None) as subscriber, \
            running(config) as pipeline, Browser(f"{pipeline.view.url}/?token={TOKEN}") as browser:
        def stats() -> dict:
            return json.loads(browser.evaluate("JSON.stringify(window.viewStats || {})"))

        wait_until(lambda: all(stats().get(kind, {}).get("frames", 0) >= 5 for kind in ("fused", "ir", "vis")), 30,
                   "the three pictures drawn in Chromium")
        first = stats()["fused"]
        time.sleep(1.0)
        later = stats()["fused"]
        assert later["width"] == 320 and later["frames"] >= first["frames"] + 10  # playing, not a still
        assert later["index"] > first["index"]
        latencies = []
        for _ in range(10):
            latencies.append(stats()["fused"]["latency_ms"])
            time.sleep(0.1)
        assert 0 <= np.median(latencies) < 500, latencies  # capture to display, on loopback

        # Over the limit: the page shows the control socket's error and nothing changes.
        browser.type_text("#prompt", "x" * 1001)
        browser.evaluate("document.querySelector('#prompt-form button').click()")
        wait_until(lambda: browser.evaluate("document.getElementById('prompt-reply').textContent")
                   not in ("", "sending..."), 10, "a reply")
        assert browser.evaluate("document.getElementById('prompt-reply').textContent") == \
            "set_prompt: 'prompt' must be at most 1000 characters"
        assert pipeline.routing.prompt == "find the people"

        browser.evaluate("document.getElementById('prompt').value = ''")
        browser.type_text("#prompt", "fog, trust thermal")
        browser.evaluate("document.querySelector('#prompt-form button').click()")

        def routed_to_fog() -> bool:
            frame = subscriber.latest(timeout=1)
            return frame is not None and frame.header["prompt"] == "fog, trust thermal" and max(
                frame.header["routing"], key=frame.header["routing"].get) == "fog"

        wait_until(routed_to_fog, 10, "the typed prompt in the ZeroMQ headers")
        wait_until(lambda: browser.evaluate("document.getElementById('current-prompt').textContent")
                   == '"fog, trust thermal"', 5, "the page showing the new prompt")
        shot = browser.screenshot(tmp_path / "view.png")

        # The pipeline gone: the badge turns red (it kept the green of 'ok'), and a prompt that cannot be sent
        # says so (the reply box kept the previous prompt's 'applied from the next frame').
        pipeline.stop()
        wait_until(lambda: browser.evaluate("document.getElementById('state').className") == "failed", 15,
                   "the badge showing the lost connection")
        assert browser.evaluate("document.getElementById('state').textContent") == "no connection"
        browser.evaluate("document.querySelector('#prompt-form button').click()")
        wait_until(lambda: browser.evaluate("document.getElementById('prompt-reply').textContent")
                   not in ("", "sending...", "applied from the next frame"), 10, "the reply to a prompt not sent")
        assert browser.evaluate("document.getElementById('prompt-reply').className") == "error"
    image = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[1] == 1280 and image.shape[0] > 600 and image.std() > 10
    print(f"screenshot: {tmp_path / 'view.png'}")


def test_the_token_stays_out_of_the_debug_log_and_an_address_error_names_the_address(caplog):
    """`-v` logged every request line with its ?token=...; a bind address this machine lacks was told to change
    the port."""
    from streamfuse.errors import StreamfuseError
    from streamfuse.webserver import WebServer

    token = "Secr3tTokenValue_0123456789"

    def answer(request):
        request.send_response(200)
        request.send_header("Content-Length", "0")
        request.end_headers()

    server = WebServer("127.0.0.1", 0, answer, section="view")
    try:
        with caplog.at_level("DEBUG", logger="streamfuse"):
            assert http_get(f"{server.url}/api/status?token={token}&x=1")[0] == 200
    finally:
        server.close()
    assert "/api/status?token=...&x=1" in caplog.text and token not in caplog.text
    with pytest.raises(StreamfuseError, match=r"view: cannot listen on 192\.0\.2\.77:0 \(.*\); choose an address of "
                                              r"this machine for view\.bind"):
        WebServer("192.0.2.77", 0, answer, section="view")  # TEST-NET-1: no interface has it
    server = WebServer("::1", 0, answer, section="view")  # IPv6 loopback: refused as an address family before
    try:
        assert server.url.startswith("http://[::1]:")
    finally:
        server.close()


def test_other_sites_in_the_operators_browser_cannot_steer_or_watch_a_view_without_a_token():
    """A page on another site could POST a prompt as text/plain (no preflight) to the loopback view, and a
    DNS-rebinding page (its own name resolving to 127.0.0.1) could read the snapshot."""
    (publish,) = free_ports(1)
    with running(view_config(publish, token=None)) as pipeline:
        url = f"{pipeline.view.url}/api/control"
        prompt = json.dumps({"cmd": "set_prompt", "prompt": "glare"}).encode()
        for headers in ({"Content-Type": "text/plain;charset=UTF-8", "Origin": "http://evil.example"},
                        {"Content-Type": "text/plain"},
                        {"Origin": "http://evil.example"}):
            status, reply = post(url, prompt, **headers)
            assert status == 403 and "a control request is JSON" in reply["error"], headers
        assert pipeline.routing.prompt == "find the people"
        port = pipeline.view.port
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.attacker.example:{port}"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/snapshot.png", headers={"Host": host})
            response = connection.getresponse()
            assert response.status == 403 and f"the request named {host!r}" in response.read().decode()
            connection.close()
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/snapshot.png", headers={"Host": host})
            assert connection.getresponse().status == 200, host
            connection.close()
        status, reply = post(url, prompt, Origin=pipeline.view.url)  # the view's own page
        assert status == 200 and reply["ok"] and pipeline.routing.prompt == "glare"
