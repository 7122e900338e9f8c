"""The RTSP sink (streamfuse/sinks/rtsp.py) with real clients: PyAV (FFmpeg's RTSP client), ffprobe, raw sockets."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import threading
import time

import av
import numpy as np
import pytest

from conftest import free_ports, running_pipeline, wait_until
from streamfuse.config import config_from_dict
from streamfuse.errors import ConfigError
from streamfuse.sinks import Subscriber
from streamfuse.sinks.rtsp import MAX_PAYLOAD, NAL_FU_A, packetize, split_annex_b

TCP = {"rtsp_transport": "tcp"}


def rtsp_config(*, rtsp: dict | None = None, publish: int | None = None, size=(160, 128)) -> dict:
    camera = {"type": "synthetic", "fps": 30, "frames": 3000, "realtime": True}
    sinks = [{"type": "rtsp", "port": 0, **(rtsp or {})}]
    if publish is not None:
        sinks.append({"type": "zmq", "endpoint": f"tcp://127.0.0.1:{publish}", "encoding": "raw"})
    return {"synthetic": {"width": size[0], "height": size[1], "people": 2},
            "sources": {"ir": dict(camera), "vis": dict(camera)}, "fusion": {"fuser": "classical"},
            "sinks": sinks, "stats": {"log_every_s": 0}}


def serving(config: dict):
    """The pipeline running, once the RTSP sink has its first frame (and so its SDP)."""
    return running_pipeline(config, lambda pipeline: pipeline.sinks and pipeline.sinks[0].encoder is not None,
                            "the first frame")


def decode(url: str, count: int, options: dict | None = None) -> list[np.ndarray]:
    """The first ``count`` frames a PyAV (FFmpeg) RTSP client decodes from ``url``, as BGR arrays."""
    with av.open(url, options={**TCP, **(options or {})}, timeout=10) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == count:
                return frames
    raise AssertionError(f"the stream ended after {len(frames)} frames")


def test_two_pyav_clients_decode_the_fused_stream_encoded_once():
    (publish,) = free_ports(1)
    with Subscriber(f"tcp://127.0.0.1:{publish}", keep="latest", max_age_s=None) as subscriber, \
            serving(rtsp_config(publish=publish)) as pipeline:
        sink = pipeline.sinks[0]
        assert sink.frames_encoded == 0  # nobody watching: nothing encoded
        results: dict[str, list[np.ndarray]] = {}
        clients = [threading.Thread(target=lambda name=name: results.setdefault(name, decode(sink.url, 60)))
                   for name in ("a", "b")]
        for client in clients:
            client.start()
        wait_until(lambda: sink.clients == 2, 20, "both clients playing")
        fused_before, encoded_before = pipeline.frames_fused, sink.frames_encoded
        wait_until(lambda: pipeline.frames_fused >= fused_before + 10, 5, "ten frames")
        fused_meanwhile, encoded_meanwhile = pipeline.frames_fused - fused_before, sink.frames_encoded - encoded_before
        for client in clients:
            client.join(30)
        fused = subscriber.latest(timeout=5).image
        wait_until(lambda: sink.clients == 0, 5, "the clients gone")
    # One encoder for both clients: each frame encoded once (encoding per client would make it twice).
    assert encoded_meanwhile <= fused_meanwhile + 1
    for frames in results.values():
        assert len(frames) == 60 and frames[0].shape == (128, 160, 3)
        assert len({frame.tobytes() for frame in frames}) > 40  # a moving picture, not a still
        # The decoded pictures are the fused stream's (same scene: close to a fused frame of the run).
        assert np.abs(frames[-1].astype(float) - fused.astype(float)).mean() < 25


def test_decoded_frames_map_to_their_capture_time():
    with serving(rtsp_config()) as pipeline:
        sink = pipeline.sinks[0]
        ages = []
        with av.open(sink.url, options=TCP, timeout=10) as container:
            for index, frame in enumerate(container.decode(video=0)):
                captured = sink.capture_time(frame.pts)
                if index == 0 and frame.pts is None:
                    continue  # FFmpeg gives the first frame no presentation time
                assert captured is not None, frame.pts  # every decoded frame is one the sink sent
                ages.append(time.time() - captured)
                if len(ages) == 60:
                    break
    # Capture to decoded, on loopback; FFmpeg reads ahead while it opens, so the first ones waited.
    assert 0 < np.median(ages[-20:]) < 1.0, ages


def test_ffprobe_reads_the_stream():
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe is not installed (apt-get install ffmpeg; .ci/run installs it)")
    with serving(rtsp_config(size=(320, 256))) as pipeline:
        result = subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_streams", "-of", "json",
                                 pipeline.sinks[0].url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    stream = json.loads(result.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 256)


def test_streamfuse_probe_describes_the_stream_in_words(capsys):
    """Its report printed Python's None for what a live stream has not: 'frames: None', 'frames from: None'."""
    from streamfuse.cli import main

    with serving(rtsp_config(size=(320, 256))) as pipeline:
        assert main(["probe", pipeline.sinks[0].url, "--frames", "2"]) == 0
    out = capsys.readouterr().out
    assert "kind: stream" in out and "resolution: 320x256" in out
    assert "frames: unknown (a live stream)" in out and ": None" not in out and "frames from" not in out


def test_basic_authentication():
    config = rtsp_config(rtsp={"user": "operator", "password": "s3cret-pass"})
    with serving(config) as pipeline:
        url = pipeline.sinks[0].url
        with pytest.raises(av.error.FFmpegError):
            av.open(url, options=TCP, timeout=5)
        with pytest.raises(av.error.FFmpegError):
            av.open(url.replace("rtsp://", "rtsp://operator:wrong@"), options=TCP, timeout=5)
        frames = decode(url.replace("rtsp://", "rtsp://operator:s3cret-pass@"), 5)
    assert frames[0].shape == (128, 160, 3)


def rtsp_exchange(sock: socket.socket, reader, request: str) -> tuple[str, dict[str, str], bytes]:
    """Send one RTSP request; its reply's status line, headers and body (read through ``reader``, the socket's)."""
    sock.sendall(request.encode())
    status = reader.readline().decode().strip()
    headers = {}
    while (line := reader.readline().decode().strip()):
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", 0)))
    return status, headers, body


def test_protocol_answers_sdp_udp_refusal_and_unknown_paths():
    with serving(rtsp_config()) as pipeline:
        sink = pipeline.sinks[0]
        with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as sock, sock.makefile("rb") as reader:
            status, headers, _ = rtsp_exchange(sock, reader, f"OPTIONS {sink.url} RTSP/1.0\r\nCSeq: 1\r\n\r\n")
            assert status == "RTSP/1.0 200 OK" and "PLAY" in headers["public"] and headers["cseq"] == "1"
            status, _, _ = rtsp_exchange(sock, reader, f"DESCRIBE rtsp://127.0.0.1:{sink.port}/other RTSP/1.0\r\n"
                                                   "CSeq: 2\r\n\r\n")
            assert status == "RTSP/1.0 404 Not Found"
            status, headers, sdp = rtsp_exchange(sock, reader, f"DESCRIBE {sink.url} RTSP/1.0\r\nCSeq: 3\r\n\r\n")
            assert status == "RTSP/1.0 200 OK" and headers["content-type"] == "application/sdp"
            assert b"a=rtpmap:96 H264/90000" in sdp and b"sprop-parameter-sets=" in sdp
            # PLAY before SETUP was answered 200 OK with a new session and the stream (RFC 2326: 455)
            status, _, _ = rtsp_exchange(sock, reader, f"PLAY {sink.url} RTSP/1.0\r\nCSeq: 4\r\nSession: 1234\r\n\r\n")
            assert status == "RTSP/1.0 455 Method Not Valid in This State"
            status, _, _ = rtsp_exchange(sock, reader, f"SETUP {sink.url}/track1 RTSP/1.0\r\nCSeq: 4\r\n"
                                               "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n")
            assert status == "RTSP/1.0 461 Unsupported Transport"
            status, headers, _ = rtsp_exchange(sock, reader, f"SETUP {sink.url}/track1 RTSP/1.0\r\nCSeq: 5\r\n"
                                                     "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
            assert status == "RTSP/1.0 200 OK" and "interleaved=0-1" in headers["transport"]
            session = headers["session"].split(";")[0]
            status, _, _ = rtsp_exchange(sock, reader, f"PLAY {sink.url} RTSP/1.0\r\nCSeq: 6\r\nSession: 1234\r\n\r\n")
            assert status == "RTSP/1.0 454 Session Not Found"
            status, _, _ = rtsp_exchange(sock, reader, f"PLAY {sink.url} RTSP/1.0\r\nCSeq: 6\r\n"
                                                       f"Session: {session}\r\n\r\n")
            assert status == "RTSP/1.0 200 OK"
            magic, channel, length = struct.unpack("!cBH", reader.read(4))
            packet = reader.read(length)
            assert (magic, channel) == (b"$", 0) and packet[0] == 0x80 and packet[1] & 0x7F == 96
            assert packet[12] & 0x1F in (7, 6, 5, NAL_FU_A)  # the client starts at a keyframe (SPS, SEI or IDR)
        with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as sock, sock.makefile("rb") as reader:
            status, _, _ = rtsp_exchange(sock, reader, "HELLO\r\n\r\n")  # closed without a word before
            assert status == "RTSP/1.0 400 Bad Request"


def depacketize(packets: list[bytes]) -> list[bytes]:
    """NAL units back from RTP packets (the receiving side of RFC 6184, for the round trip)."""
    units, fragment = [], b""
    for packet in packets:
        payload = packet[12:]
        if payload[0] & 0x1F == NAL_FU_A:
            if payload[1] & 0x80:
                fragment = bytes(((payload[0] & 0xE0) | (payload[1] & 0x1F),))
            fragment += payload[2:]
            if payload[1] & 0x40:
                units.append(fragment)
        else:
            units.append(payload)
    return units


def nal_unit(header: int, size: int, rng: np.random.Generator) -> bytes:
    """A NAL unit with a random body free of zero bytes: like a real one, it holds no start code and
    does not end in 0x00 (its RBSP ends with a stop bit), which is what Annex B splitting relies on."""
    return bytes((header,)) + rng.integers(1, 256, size, dtype=np.uint8).tobytes()


def test_packetize_round_trip_with_fu_a_fragments():
    rng = np.random.default_rng(0)
    units = [nal_unit(0x67, 20, rng), nal_unit(0x68, 4, rng), nal_unit(0x65, 5000, rng)]
    packets = packetize(units, timestamp=123456, seq=65534, ssrc=0xABCDEF01)
    assert all(len(packet) <= 12 + MAX_PAYLOAD for packet in packets)
    assert depacketize(packets) == units
    seqs = [struct.unpack("!H", packet[2:4])[0] for packet in packets]
    assert seqs[:3] == [65534, 65535, 0]  # wraps
    assert [packet[1] >> 7 for packet in packets] == [0] * (len(packets) - 1) + [1]  # marker on the last
    assert split_annex_b(b"\x00\x00\x00\x01" + units[0] + b"\x00\x00\x01" + units[1]) == units[:2]


def test_rtsp_settings_are_checked():
    base = rtsp_config()
    for rtsp, problem in (({"bind": "0.0.0.0"}, r"sinks\.0\.bind: 0\.0\.0\.0 is reachable from the network"),
                          ({"user": "a"}, "set both user and password"), ({"path": "a/b"}, r"sinks\.0\.path"),
                          ({"crf": 60}, r"sinks\.0\.crf")):
        with pytest.raises(ConfigError, match=problem):
            config_from_dict({**base, "sinks": [{**base["sinks"][0], **rtsp}]})
    config_from_dict({**base, "sinks": [{"type": "rtsp", "bind": "0.0.0.0", "user": "a", "password": "b"}]})


def play(sink, sock: socket.socket, reader) -> None:
    """SETUP and PLAY on a raw connection (interleaved RTP over the RTSP connection)."""
    status, headers, _ = rtsp_exchange(sock, reader, f"SETUP {sink.url}/track1 RTSP/1.0\r\nCSeq: 1\r\n"
                                                     "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
    assert status == "RTSP/1.0 200 OK", status
    session = headers["session"].split(";")[0]
    status, _, _ = rtsp_exchange(sock, reader, f"PLAY {sink.url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n")
    assert status == "RTSP/1.0 200 OK", status


def next_frame_timestamp(reader) -> int:
    """Read RTP packets up to the end of a frame (the marker bit); its RTP timestamp."""
    while True:
        _, _, length = struct.unpack("!cBH", reader.read(4))
        packet = reader.read(length)
        if packet[1] & 0x80:
            return struct.unpack("!I", packet[4:8])[0]


def test_a_viewer_that_stopped_reading_comes_back_to_live_not_seconds_behind():
    """The system's send buffer held seconds of a small stream, so a viewer that paused (or whose network
    stalled) for 20 s stayed 20 s behind for good, the per-client backlog never filling. Now a client whose
    unreceived data is over a second old skips to the next keyframe once it has caught up."""
    with serving(rtsp_config()) as pipeline:
        sink = pipeline.sinks[0]
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the buffering is then on the server's side
            sock.settimeout(10)
            sock.connect(("127.0.0.1", sink.port))
            with sock.makefile("rb") as reader:
                play(sink, sock, reader)
                for _ in range(10):
                    next_frame_timestamp(reader)
                time.sleep(4)  # paused
                ages, resumed = [], time.monotonic()
                while time.monotonic() - resumed < 4:  # then read as a player does, at the stream's rate
                    captured = sink.captured_at.get(next_frame_timestamp(reader))
                    if captured is not None:
                        ages.append(time.time() - captured)
                    time.sleep(1 / 30)
    assert pipeline.stats.counters().get("drops.rtsp", 0) > 0
    assert ages and max(ages[-10:]) < 1.5, ages[-10:]


def test_connections_that_never_play_do_not_lock_viewers_out():
    """max_clients counted every connection, and a silent one was held for 90 s: a few sockets that never log in
    kept every viewer out. Now it counts clients playing; a further PLAY gets 503."""
    with serving(rtsp_config(rtsp={"max_clients": 1})) as pipeline:
        sink = pipeline.sinks[0]
        idle = [socket.create_connection(("127.0.0.1", sink.port), timeout=10) for _ in range(3)]
        try:
            with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as sock, \
                    sock.makefile("rb") as reader:
                play(sink, sock, reader)
                next_frame_timestamp(reader)
                with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as other, \
                        other.makefile("rb") as other_reader:
                    status, headers, _ = rtsp_exchange(other, other_reader, f"SETUP {sink.url}/track1 RTSP/1.0\r\n"
                                                       "CSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1"
                                                       "\r\n\r\n")
                    session = headers["session"].split(";")[0]
                    status, _, _ = rtsp_exchange(other, other_reader, f"PLAY {sink.url} RTSP/1.0\r\nCSeq: 2\r\n"
                                                                     f"Session: {session}\r\n\r\n")
                    assert status == "RTSP/1.0 503 Service Unavailable"
        finally:
            for connection in idle:
                connection.close()


def test_an_empty_rtsp_password_is_refused():
    base = rtsp_config()
    with pytest.raises(ConfigError, match=r"sinks\.0\.password: must not be empty"):
        config_from_dict({**base, "sinks": [{"type": "rtsp", "bind": "0.0.0.0", "user": "op", "password": ""}]})
