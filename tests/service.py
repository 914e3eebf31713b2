"""A real edge-asr service on loopback, run as its own process (`python -m edge_asr serve`)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openai
import requests
import soundfile

from edge_asr.memory import meminfo

ASR, LLM, TTS = "whisper-tiny-en", "smollm2-135m-instruct", "piper-joe-en"  # the default models
# The same LLM on each runtime: llama.cpp (the default, LLM) and onnxruntime-genai
CHAT_MODELS = (LLM, "smollm2-135m-instruct-onnx")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different free ports (bound at once: two calls of ``free_port`` may get one port twice)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def cmdline(pid: int) -> bytes | None:
    """The process's command line (empty for a zombie); None once it is gone (it may be, between a
    listing and this)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None


def children(pid: int) -> list[int]:
    """Child processes of ``pid``, zombies included (an unreaped worker is a leak too)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def available() -> int:
    """The system's MemAvailable, in bytes."""
    return meminfo().available_bytes


def settled_available(timeout: float = 60) -> int:
    """MemAvailable once it stops moving (under 4 MB in 2 s): this VM returns freed pages lazily
    (free page reporting), for up to half a minute."""
    deadline = time.monotonic() + timeout
    previous = available()
    while time.monotonic() < deadline:
        time.sleep(2)
        current = available()
        if abs(current - previous) < 4e6:
            return current
        previous = current
    return previous


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` (a small tmpfs) up to the last byte; the filler file,
    to delete when it is to have room again."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: no flush at close to fail
        try:
            while True:
                f.write(b"\0" * 65536)  # a short write takes the rest; the next one raises ENOSPC
        except OSError:
            pass
    return filler


def wait_for(predicate, timeout: float, interval: float = 0.05, raises: bool = True):
    """``predicate``'s first true value within ``timeout``; else an AssertionError (or, unless
    it ``raises``, the last value, for the caller's own message)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    if raises:
        raise AssertionError("condition not met in time")
    return value


def wav(samples: np.ndarray, subtype: str = "PCM_16") -> bytes:
    """16-kHz ``samples`` as a WAV file; 16-bit PCM has the canonical 44-byte header."""
    buf = io.BytesIO()
    soundfile.write(buf, samples, 16000, format="WAV", subtype=subtype)
    return buf.getvalue()


class Service:
    def __init__(self, state_dir: Path, **env: str):
        self.state_dir = state_dir
        self.port, self.wyoming_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.port}"
        ports = {"EDGE_ASR_PORT": str(self.port), "EDGE_ASR_WYOMING_PORT": str(self.wyoming_port)}
        self.env = {**os.environ, "EDGE_ASR_STATE_DIR": str(state_dir), **ports, **env}
        self.log = state_dir.parent / f"{state_dir.name}.log"  # outside: the state directory may be full
        self.process: subprocess.Popen | None = None

    def start(self) -> Service:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge_asr", "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the service exited: {self.log.read_text()[-3000:]}"
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return self
            except requests.RequestException:  # not listening yet, or not answering yet
                time.sleep(0.1)
        self.kill()  # not left behind to disturb the tests after
        raise TimeoutError("the service did not start")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def workers(self) -> list[int]:
        """Model worker processes (multiprocessing's resource tracker, tegrastats and the spare
        worker are not model workers)."""
        assert self.process is not None
        others = (b"resource_tracker", b"tegrastats")
        before = self.spare_pid()  # read around the listing: a spare may start meanwhile
        pids = [p for p in children(self.process.pid) if p not in (before, self.spare_pid())]
        return [p for p in pids if (line := cmdline(p)) is not None and not any(name in line for name in others)]

    def spare(self) -> dict:
        """The spare worker as the API shows it."""
        return self.get("/api/system/memory").json()["spare_worker"]

    def spare_pid(self) -> int | None:
        """The spare worker's pid; None when there is none, or the service is too busy to say
        (every request slot taken: a chaos run)."""
        r = self.get("/api/system/memory", timeout=10)
        return r.json()["spare_worker"]["pid"] if r.ok else None

    # -- API helpers -------------------------------------------------------------------------

    def openai(self, api_key: str = "unused") -> openai.OpenAI:
        """The real openai SDK on this service; no retries, so a test sees the first answer."""
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=kw.pop("timeout", 60), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, timeout=kw.pop("timeout", 120), **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return requests.delete(self.url + path, timeout=kw.pop("timeout", 120), **kw)

    def patch(self, path: str, **kw) -> requests.Response:
        return requests.patch(self.url + path, timeout=kw.pop("timeout", 60), **kw)

    def transcribe(self, audio: Path | bytes, model: str = "whisper-tiny-en", **fields: str) -> requests.Response:
        data = audio.read_bytes() if isinstance(audio, Path) else audio
        return self.post(
            "/v1/audio/transcriptions", files={"file": ("clip.wav", data)}, data={"model": model, **fields}
        )

    def model(self, model_id: str = "whisper-tiny-en") -> dict:
        return self.get(f"/api/models/{model_id}").json()


def turns_in_budget(svc: Service, reason: str) -> list[tuple[str, str, str]]:
    """The lifecycle moves (model, to, reason) of the speech model, the LLM and the voice taking
    turns in ``svc.budget`` (``budget_service``), each loaded for ``reason``: the LLM evicts the
    speech model; the voice evicts the LLM unless the two fit together."""
    share = svc.footprints[LLM] + svc.footprints[TTS] <= svc.budget
    return [
        (ASR, "ready", reason),
        (ASR, "unloaded", f"evicted-for:{LLM}"),
        (LLM, "ready", reason),
        *([] if share else [(LLM, "unloaded", f"evicted-for:{TTS}")]),
        (TTS, "ready", reason),
    ]


def assert_within_budget(svc: Service, moves: list[tuple[str, str, str]]) -> None:
    """After each move, the resident models' footprints fit ``svc.budget``."""
    resident: set[str] = set()
    for model, to, _ in moves:
        resident = resident | {model} if to == "ready" else resident - {model}
        assert sum(svc.footprints[m] for m in resident) <= svc.budget, resident
