"""A fake of ``edge_asr.workers.handle.WorkerHandle`` for driving the ModelManager without
processes (``spawn=``): the same names, a real file descriptor as its sentinel (the monitor waits
on it), and switches to make each step fail. The real worker runs in the service tests."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any, ClassVar

from edge_asr.workers.handle import WorkerDied
from edge_asr.workers.protocol import Request

MB = 10**6


class FakeWorkerHandle:
    """``FakeWorkerHandle.spawned`` lists every one made; ``fail_load``/``fail_release`` make the
    next load or release raise what they hold."""

    spawned: ClassVar[list[FakeWorkerHandle]] = []
    fail_load: ClassVar[BaseException | None] = None
    fail_release: ClassVar[BaseException | None] = None
    detected: ClassVar[float | None] = None
    broken_sentinels: ClassVar[int] = 0  # the next reads of ``sentinel`` that raise (a bug in the watch)
    spares_die: ClassVar[bool] = False  # a spare handed a model dies taking it (a runtime's imports broke it)

    def __init__(self, spec: Any, config: Any, spare: Any = None, nice: int = 0):
        if FakeWorkerHandle.fail_load is not None:
            raise FakeWorkerHandle.fail_load
        if spare is not None and FakeWorkerHandle.spares_die:
            spare.release()
            raise WorkerDied(f"model {spec.id!r} did not load: the worker died (exited with status 1)")
        self.spare = spare
        self.model_id = spec.id
        self._read, self._write = os.pipe()
        self.killed = self.released = False
        self.load_report: dict[str, Any] = {"rss_loaded": 100 * MB, "runtime": "fake", "providers": []}
        self.turn_s: float | None = None  # as the real handle's: a call's recent time in the worker
        FakeWorkerHandle.spawned.append(self)

    pid = 424242

    @property
    def sentinel(self) -> int:
        if FakeWorkerHandle.broken_sentinels:
            FakeWorkerHandle.broken_sentinels -= 1
            raise RuntimeError("a bug in the watch")
        return self._read

    def alive(self) -> bool:
        return not self.killed

    def exit_description(self) -> str:
        return "killed by SIGKILL" if self.killed else "still running"

    def silent_for(self) -> float:
        return 0.0

    def run(self, request: Request) -> Generator[Any, None, Any]:
        """One partial result, then the request itself as the result (``language_probability``
        set to ``FakeWorkerHandle.detected``: what a transcription detected)."""
        if self.killed:
            raise WorkerDied(f"the worker of model {self.model_id!r} died (killed by SIGKILL)")
        yield {"partial": True}
        return {"request": request, "language": "de", "language_probability": FakeWorkerHandle.detected}

    def release(self, timeout: float) -> dict[str, Any]:
        if FakeWorkerHandle.fail_release is not None:
            raise FakeWorkerHandle.fail_release
        self.released = True
        self.kill()
        return {"rss_peak": 150 * MB, "exit": "exited with status 0"}

    def abort(self, reason: str) -> None:
        self.kill()

    def kill(self) -> None:
        """Dies: the sentinel becomes readable, as a process's does."""
        if not self.killed:
            self.killed = True
            os.close(self._write)


class FakeSpare:
    """A fake of ``edge_asr.workers.spare.Spare`` (``make_spare=``): ready at once, no process."""

    made: ClassVar[list[FakeSpare]] = []

    def __init__(self, config: Any):
        self.report: dict[str, Any] | None = {"pid": 525252, "rss": 60 * MB}
        self.pid, self.released = 525252, False
        FakeSpare.made.append(self)

    def poll(self) -> bool:
        return True

    def alive(self) -> bool:
        return not self.released

    def release(self) -> None:
        self.released = True
