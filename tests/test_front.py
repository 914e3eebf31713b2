"""The front door against the LAN's sockets, on the real service: 300 connections from one address
that announce a 100-MB body and stall, or never finish their head, do not take the unit off the
network (``/healthz`` answers within 1 s throughout), are bounded per address
(``max_client_connections``) and are closed after ``client_timeout``. The stalling clients use
127.0.0.2, another loopback address than the probes'."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from tests.service import Service

STALLERS = 300
PER_CLIENT = 32
TIMEOUT = 3.0  # client_timeout


@pytest.fixture(scope="module")
def unit(tmp_path_factory, whisper_spec):
    limits = {"EDGE_ASR_MAX_CLIENT_CONNECTIONS": str(PER_CLIENT), "EDGE_ASR_CLIENT_TIMEOUT": f"{TIMEOUT}s"}
    svc = Service(tmp_path_factory.mktemp("front") / "state", **limits).start()
    yield svc
    svc.stop()


def staller(port: int, head: bytes) -> socket.socket | None:
    """A connection from 127.0.0.2 that sends ``head`` and then nothing; None if it was refused."""
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(head)
    except OSError:
        s.close()
        return None
    return s


def probe_while(unit: Service, busy: threading.Event) -> list[float]:
    """``/healthz`` and ``/api/models`` answer times while ``busy`` is set."""
    times = []
    while busy.is_set():
        for path in ("/healthz", "/api/models"):
            started = time.monotonic()
            assert requests.get(unit.url + path, timeout=5).ok
            times.append(time.monotonic() - started)
        time.sleep(0.05)
    return times


def closed_by_server(s: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing ``s`` within ``within`` seconds; None if it stayed open."""
    s.settimeout(within)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: unit\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        b"Content-Length: 100000000\r\n\r\n--x\r\n",
        b"GET /api/models HTTP/1.1\r\nHost: unit\r\nX-Slow: ",  # a head that never ends
    ],
    ids=["stalled-body", "stalled-head"],
)
def test_300_stalled_sockets_from_one_address_leave_the_unit_answering(unit: Service, head: bytes):
    busy = threading.Event()
    busy.set()
    probes: list[float] = []
    prober = threading.Thread(target=lambda: probes.extend(probe_while(unit, busy)))
    prober.start()
    try:
        sockets = [staller(unit.port, head) for _ in range(STALLERS)]
        opened = [s for s in sockets if s is not None]
        time.sleep(0.5)
        # past the per-address limit the server closes the connection at once, without a word
        refused = [s for s in opened[PER_CLIENT:] if closed_by_server(s, 0.2) == b""]
        assert len(refused) >= STALLERS - PER_CLIENT - 5, len(refused)
        held = opened[:PER_CLIENT]
        # the held ones are closed after client_timeout: a stalled body with a 408
        answers = [closed_by_server(s, TIMEOUT + 3) for s in held]
        assert all(a is not None for a in answers)
        if b"Content-Length" in head:
            assert all(b" 408 " in a.split(b"\r\n")[0] and b"request_timeout" in a for a in answers if a)
    finally:
        busy.clear()
        prober.join()
        for s in sockets:
            if s is not None:
                s.close()
    assert len(probes) > 20 and max(probes) < 1.0, max(probes)
    assert requests.get(unit.url + "/healthz", timeout=5).ok


def test_a_head_that_stalls_after_a_first_request_is_closed_too(unit: Service):
    """A kept-alive connection: one whole request, then a head trickled a byte at a time."""
    s = socket.create_connection(("127.0.0.1", unit.port))
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b" 200 " in s.recv(65536).split(b"\r\n")[0]
        started = time.monotonic()
        s.settimeout(0.5)
        closed = False
        for byte in b"GET /api/models HTTP/1.1\r\nX-Slow: " + b"x" * 100:
            try:
                s.sendall(bytes([byte]))
                if s.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed and time.monotonic() - started < TIMEOUT + 2
    finally:
        s.close()


def test_a_chunked_upload_is_read_whole(unit: Service, clips):
    """``Transfer-Encoding: chunked`` (a client streaming a file it has not measured)."""
    form = requests.Request(
        "POST", unit.url, files={"file": ("a.wav", clips["beckett"].read_bytes())}, data={"model": "whisper-tiny-en"}
    ).prepare()
    body = form.body
    parts = (body[i : i + 65536] for i in range(0, len(body), 65536))  # a generator: requests sends it chunked
    r = requests.post(
        unit.url + "/v1/audio/transcriptions",
        data=parts,
        headers={"Content-Type": form.headers["Content-Type"]},
        timeout=60,
    )
    assert r.ok and r.json()["text"].startswith("Ever tried."), r.text


def test_a_client_that_stops_reading_a_stream_is_left_and_its_model_freed(unit: Service):
    """Sixty sentences of speech streamed to a socket that reads none of it: the server's buffers
    fill, the handler waits ``client_timeout`` for room and leaves the client, the worker is told
    to stop, and the voice serves the next request."""
    text = " ".join(f"This is sentence number {n} of a long reading." for n in range(60))
    body = json.dumps({"input": text, "response_format": "pcm"}).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", unit.port))
    head = "POST /v1/audio/speech HTTP/1.1\r\nHost: unit\r\nContent-Type: application/json\r\n"
    s.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    try:
        started = time.monotonic()
        short = unit.post("/v1/audio/speech", json={"input": "The pump is fine.", "response_format": "pcm"}, timeout=60)
        assert short.ok and len(short.content) > 8000
        assert time.monotonic() - started < 6 * TIMEOUT  # it queued behind the stalled stream until that was left
        assert closed_by_server(s, within=2 * TIMEOUT) is not None
    finally:
        s.close()
