"""The service as an appliance: its systemd unit, the notify protocol and watchdog as systemd
would see them (a socket of our own as NOTIFY_SOCKET), and the Prometheus metrics."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service import Service, wait_for

UNIT = Path(__file__).parent.parent / "systemd" / "edge-asr.service"
ASR = "whisper-tiny-en"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed on this machine")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # ExecStart points at the installed venv; verify checks it exists, so point it at this one
    executable = Path(sys.executable).parent / "edge-asr"
    assert executable.is_file()
    unit = tmp_path / UNIT.name
    text = UNIT.read_text()
    assert "ExecStart=/opt/edge-asr/venv/bin/edge-asr serve" in text and "\nPrivateDevices=" not in text
    unit.write_text(text.replace("/opt/edge-asr/venv/bin/edge-asr", str(executable)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and complaints == [], result.stderr
    # and it does complain about a broken unit
    unit.write_text(text.replace("/opt/edge-asr/venv/bin/edge-asr", str(executable)).replace("Type=notify", "Type=x"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert any(UNIT.name in line for line in result.stderr.splitlines())


class NotifySocket:
    """What systemd listens on: a datagram socket; records each message with its arrival time."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                continue

    def pings(self, since: float = 0.0) -> list[float]:
        return [t for t, m in self.messages if m == "WATCHDOG=1" and t > since]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_notify_ready_watchdog_pings_and_their_stop_when_the_supervisor_hangs(tmp_path, whisper_spec, clips):
    notify = NotifySocket(tmp_path / "notify.sock")
    svc = Service(
        tmp_path / "state",
        NOTIFY_SOCKET=str(notify.path),
        WATCHDOG_USEC="600000",  # WatchdogSec=0.6: a ping at most every 0.2 s
        EDGE_ASR_MEMORY_INTERVAL_MS="100",
        EDGE_ASR_UNLOAD_TIMEOUT="6",  # how long an unload waits for a worker that does not answer
    )
    try:
        svc.start()
        assert wait_for(lambda: [m for _, m in notify.messages if m == "READY=1"], 5)
        wait_for(lambda: len(notify.pings()) >= 5, 5)
        gaps = [b - a for a, b in zip(notify.pings(), notify.pings()[1:], strict=False)]
        assert max(gaps) < 0.6  # within WatchdogSec, so systemd would be content

        # hang the supervisor the way life would: the model's keep-alive runs out while its worker
        # is frozen, so the supervisor's unload waits for an answer that does not come
        assert svc.patch(f"/api/models/{ASR}/settings", json={"keep_alive": "1s"}).ok
        assert svc.transcribe(clips["beckett"]).ok
        worker = svc.model()["worker_pid"]
        os.kill(worker, signal.SIGSTOP)
        wait_for(lambda: svc.model()["state"] == "unloading", 5)
        hung_at = time.monotonic()
        time.sleep(2)
        assert notify.pings(since=hung_at + 0.3) == []  # systemd would now restart the service
        os.kill(worker, signal.SIGKILL)  # the unload notices the death and the loop goes on
        killed_at = time.monotonic()
        wait_for(lambda: notify.pings(since=killed_at), 5)
        assert svc.model()["state"] == "unloaded"
        assert svc.stop() == 0
        assert notify.messages[-1][1] == "STOPPING=1"
    finally:
        if svc.process and svc.process.poll() is None:
            svc.kill()
        notify.close()


def test_metrics_parse_and_hold_the_families(service: Service, clips):
    assert service.transcribe(clips["beckett"]).ok
    assert service.post(f"/api/models/{ASR}/unload").json()["unloaded"]
    r = service.get("/metrics")
    assert r.ok and r.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}

    def value(family: str, sample: str | None = None, **labels: str) -> float:
        return next(
            s.value
            for s in families[family].samples
            if (sample is None or s.name == sample) and labels.items() <= s.labels.items()
        )

    assert value("edge_asr_memory_available_bytes", source="meminfo") > 0
    for kind in ("total", "used"):
        assert value(f"edge_asr_memory_{kind}_bytes") > 0
    assert "edge_asr_swap_used_bytes" in families
    assert value("edge_asr_model_state", model=ASR, state="unloaded") == 1
    assert value("edge_asr_model_state", model=ASR, state="ready") == 0
    assert value("edge_asr_model_loads", "edge_asr_model_loads_total", model=ASR, reason="request") == 1
    assert value("edge_asr_model_unloads", "edge_asr_model_unloads_total", model=ASR, reason="user") == 1
    assert value("edge_asr_model_load_seconds", "edge_asr_model_load_seconds_count", model=ASR) == 1
    assert value("edge_asr_model_unload_seconds", "edge_asr_model_unload_seconds_sum", model=ASR) > 0
    assert value("edge_asr_model_reclaimed_bytes", "edge_asr_model_reclaimed_bytes_total", model=ASR) >= 0
    assert "edge_asr_model_residue_bytes" in families  # observed once memory settles (test_lifecycle)
    assert value("edge_asr_loop_errors", "edge_asr_loop_errors_total", loop="supervisor") == 0
    assert value("edge_asr_loop_errors", "edge_asr_loop_errors_total", loop="worker monitor") == 0
    assert "edge_asr_spare_worker_bytes" in families
    assert value("edge_asr_model_in_flight", model=ASR) == 0
    assert value("edge_asr_model_footprint_bytes", model=ASR) > 50e6
    assert value("edge_asr_supervisor_ticks", "edge_asr_supervisor_ticks_total") > 0
    transcriptions = {"endpoint": "/v1/audio/transcriptions", "status": "200"}
    assert value("edge_asr_request_duration_seconds", "edge_asr_request_duration_seconds_count", **transcriptions) == 1
