"""The front process's side of one model's worker: start it, send it requests, release it, notice
its death."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from edge_asr.config import Config
from edge_asr.errors import InvalidRequest, ModelLoadFailed, ServiceError, WorkerCrashed
from edge_asr.manifest import ModelSpec
from edge_asr.workers import protocol
from edge_asr.workers.processes import KILL_GRACE, start_process
from edge_asr.workers.protocol import P, R, Request
from edge_asr.workers.worker import worker_main

if TYPE_CHECKING:  # the spare hands its process over; the handle never starts one
    from edge_asr.workers.spare import Spare

TURN_POLL = 1.0  # seconds between looks at whether the worker a call queues for still lives
TURN_WEIGHT = 0.3  # the latest call's share in ``turn_s`` (an exponential moving average)


class WorkerDied(WorkerCrashed):
    pass


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == protocol.EXIT_UNRECOVERABLE:
        return f"exited after an unrecoverable GPU error (status {code}; its log says which)"
    return f"exited with status {code}"


class WorkerHandle:
    """One worker process. Requests are serialised: a worker serves one at a time, the
    others queue on its lock (how many may queue is the manager's ``max_queue``). A queued call
    never outlives the worker: the lock is awaited in short steps, giving up when the process is
    gone; a hung worker is killed by the monitor's stall check, which frees the lock."""

    def __init__(self, spec: ModelSpec, config: Config, spare: Spare | None = None, nice: int = 0):
        """Start a worker for ``spec``, or hand ``spare`` (a process with its imports done) the
        model; either way, wait for it to load (at ``nice``: a prefetch)."""
        self.model_id = spec.id
        self._lock = threading.Lock()
        self._waiting_since: float | None = None  # a request's last message from the worker
        self.turn_s: float | None = None  # a call's time in the worker, recent ones weighted most (expected waits)
        self._kill_reason: str | None = None
        self._reaping = threading.Lock()
        if spare is not None:
            self.process, self._conn = spare.process, spare.conn
        else:
            self.process, self._conn = start_process(f"edge-asr-worker-{spec.id}", worker_main, spec, config, nice)
        deadline = time.monotonic() + config.load_timeout
        try:
            if spare is not None:
                self._conn.send(protocol.Load(spec, nice))
            answer = self._receive(config.load_timeout)
            if isinstance(answer, protocol.Idle):  # the spare's imports ended after it was handed over
                answer = self._receive(max(0.0, deadline - time.monotonic()))
        except (ServiceError, OSError) as e:  # died or hung while loading: worth a retry (503)
            self.kill()
            why = e.message if isinstance(e, ServiceError) else f"{type(e).__name__}: {e}"
            raise WorkerDied(f"model {spec.id!r} did not load: {why}") from None
        if not isinstance(answer, protocol.Ready):
            self.kill()
            raise ModelLoadFailed(f"model {spec.id!r} failed to load: {answer.message}")
        self.load_report: dict[str, Any] = answer.report

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    def alive(self) -> bool:
        with self._reaping:
            return self.process.is_alive()

    def exit_description(self) -> str:
        return describe_exit(self._join(0))

    def _join(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` for the process to end and reap it; its exit code, or None. One
        thread at a time: the watcher and a request can see the same death, and multiprocessing's
        reaping is not thread-safe (the loser would read "still running" for a dead process).
        multiprocessing itself reaps finished children when it starts another: give it a moment."""
        with self._reaping:
            self.process.join(timeout)
            settle = time.monotonic() + 0.5
            while self.process.exitcode is None and wait([self.process.sentinel], 0) and time.monotonic() < settle:
                time.sleep(0.005)
            return self.process.exitcode

    def silent_for(self) -> float:
        """Seconds since the worker last said anything during a request; 0 between requests."""
        since = self._waiting_since
        return 0.0 if since is None else time.monotonic() - since

    def run(self, request: Request[P, R]) -> Generator[P, None, R]:
        """Yield the partial results of ``request`` as the worker sends them; return the result.

        Closed early (a client went away), it asks the worker to cancel and reads its remaining
        answers, so the next request starts in step.
        """
        with self._turn():
            self._waiting_since = began = time.monotonic()
            try:
                protocol.send_request(self._conn, request)
                while isinstance(answer := self._receive(None), protocol.Partial):
                    self._waiting_since = None  # the client's turn: time it takes is not the worker's
                    yield answer.item
                    self._waiting_since = time.monotonic()
            except (BrokenPipeError, OSError):
                raise self._died() from None
            except GeneratorExit:
                self._cancel()
                raise
            finally:
                self._waiting_since = None
                took = time.monotonic() - began
                self.turn_s = took if self.turn_s is None else TURN_WEIGHT * took + (1 - TURN_WEIGHT) * self.turn_s
        if isinstance(answer, protocol.Done):
            return answer.result
        if answer.kind == "invalid":
            raise InvalidRequest(answer.message)
        raise ServiceError(f"model {self.model_id!r} failed: {answer.message}")

    def _cancel(self) -> None:
        """(Holding the lock, mid-stream.) Stop the call and read up to its end. The stall check
        sees this wait too: a worker that never answers the cancel is killed like one that hangs
        mid-request, and the client's handler thread is freed."""
        try:
            self._waiting_since = time.monotonic()
            self._conn.send(protocol.Cancel())
            while isinstance(self._receive(None), protocol.Partial):
                self._waiting_since = time.monotonic()
        except (ServiceError, BrokenPipeError, OSError):
            pass  # the worker died meanwhile; the watcher reports it

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """The worker's lock, for one call: awaited while the process lives."""
        while not self._lock.acquire(timeout=TURN_POLL):
            if not self.process.is_alive():
                raise self._died()
        try:
            if self._conn.closed:  # killed while this call queued
                raise self._died()
            yield
        finally:
            if not self.alive():  # a kill() meanwhile left the pipe to this call, which held it
                self._conn.close()
            self._lock.release()
            if not self._conn.closed and not self.alive():  # killed between that look and the release
                self._close_between_calls()

    def release(self, timeout: float) -> dict[str, Any]:
        """Ask the worker to destroy its model and exit; kill it if it does not within ``timeout``."""
        report: dict[str, Any] = {}
        if not self._lock.acquire(timeout=timeout):  # a call still runs (a release at shutdown)
            self.abort("released while serving a request")  # the call's thread sees the death and closes up
            return {"error": f"busy for {timeout:.0f} s; killed", "exit": describe_exit(self._join(KILL_GRACE))}
        try:
            try:
                self._conn.send(protocol.Release())
                answer = self._receive(timeout)
                if isinstance(answer, protocol.Released):
                    report = answer.report
            except (ServiceError, BrokenPipeError, OSError) as e:
                report["error"] = str(e)
            report["exit"] = describe_exit(self._join(timeout))
            self.kill()
            self._conn.close()  # this call holds the pipe, so kill() left it open
        finally:
            self._lock.release()
        return report

    def abort(self, reason: str) -> None:
        """Kill the process from another thread (it hangs); the request waiting on it fails with
        ``reason``, and its crash handling closes the pipe."""
        self._kill_reason = reason
        self.process.kill()

    def kill(self) -> None:
        """Make sure the process is gone and reaped and the pipe closed (no zombies, no leaked fds).
        The pipe is closed only between calls: a call that holds it (one queued behind the call
        that died may just have started) finds the process dead and closes it as its turn ends."""
        if self._conn.closed:
            return
        with self._reaping:
            if self.process.is_alive():
                self.process.kill()
            self.process.join(KILL_GRACE)
        self._close_between_calls()

    def _close_between_calls(self) -> None:
        """Close the pipe unless a call holds it (that call closes it as its turn ends)."""
        if self._lock.acquire(blocking=False):
            try:
                self._conn.close()
            finally:
                self._lock.release()

    def _died(self) -> WorkerDied:
        why = self._kill_reason or describe_exit(self._join(1))
        return WorkerDied(f"the worker of model {self.model_id!r} died ({why})")

    def _receive(self, timeout: float | None) -> Any:
        """The worker's next message (``protocol``), or the reason there is none as an error."""
        ready = wait([self._conn, self.process.sentinel], timeout)
        if self._conn in ready:
            try:
                return self._conn.recv()
            except (EOFError, OSError):
                raise self._died() from None
        if ready:
            raise self._died()
        raise ServiceError(f"the worker of model {self.model_id!r} did not answer within {timeout:.0f} s")
