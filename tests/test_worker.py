"""A model's worker process and the front's handle on it, on the real models: what model code
raises becomes the client's error only when it names the request as the fault, and no path leaves a
pipe end open (a unit runs for months: a leaked descriptor a crash is a slow death)."""

from __future__ import annotations

import multiprocessing.context
import os
import signal
import threading
from multiprocessing import Pipe

import pytest

from edge_asr.config import Config
from edge_asr.errors import RequestError, Unrecoverable
from edge_asr.manifest import get_model
from edge_asr.workers import protocol
from edge_asr.workers.handle import WorkerDied, WorkerHandle
from edge_asr.workers.protocol import Synthesize
from edge_asr.workers.worker import _serve
from tests.service import TTS


class RaisingRunner:
    """A runner whose ``synthesize`` raises what the test gives it (fault injection)."""

    requests = frozenset({Synthesize})

    def __init__(self, error: Exception):
        self.error = error

    def synthesize(self, request: Synthesize):
        raise self.error


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RequestError("the prompt is 9000 tokens"), "invalid"),
        (ValueError("operands could not be broadcast together"), "internal"),  # our bug, not the client's
        (TypeError("'NoneType' object is not subscriptable"), "internal"),
    ],
)
def test_only_a_request_error_is_the_clients_fault(error, kind, caplog):
    front, worker = Pipe()
    assert _serve(worker, RaisingRunner(error), Synthesize("hello"))  # the worker goes on
    answer = front.recv()
    assert isinstance(answer, protocol.Failed) and answer.kind == kind and str(error) in answer.message
    assert (kind == "internal") == ("Traceback" in caplog.text)  # our failures are logged with their traceback


def test_an_unrecoverable_error_ends_the_worker_without_an_answer(caplog):
    front, worker = Pipe()
    assert not _serve(worker, RaisingRunner(Unrecoverable("the GPU context is broken")), Synthesize("hello"))
    assert not front.poll() and "can serve nothing more" in caplog.text and "Traceback" in caplog.text


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_worker_that_cannot_start_leaks_no_pipe(config: Config, monkeypatch):
    spec = get_model(config, TTS)
    before = open_fds()

    def start(self) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", start)
    with pytest.raises(OSError, match="Too many open files"):
        WorkerHandle(spec, config)
    assert open_fds() == before


def test_a_call_that_holds_a_crashed_worker_closes_its_pipe(config: Config):
    """The monitor's ``kill`` cannot close a pipe a call holds: the call closes it as it ends."""
    handle = WorkerHandle(get_model(config, TTS), config)
    reply = handle.run(Synthesize("One sentence. " * 40))
    next(reply)  # the call holds the worker now, mid-stream
    os.kill(handle.pid, signal.SIGKILL)
    monitor = threading.Thread(target=handle.kill)  # what the monitor does when it sees the death
    monitor.start()
    monitor.join()
    assert not handle._conn.closed  # the call still holds it
    with pytest.raises(WorkerDied):
        while True:
            next(reply)
    assert handle._conn.closed and handle.exit_description() == "killed by SIGKILL"
