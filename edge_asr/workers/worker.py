"""The main loop of a model's worker process: load the model, serve the requests of the worker
protocol (``protocol``) one at a time, and on release or when the front process goes away destroy
the model and report what the process held before and after."""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import os
import signal
import time
from collections.abc import Generator
from multiprocessing.connection import Connection
from typing import Any

from edge_asr.config import Config
from edge_asr.errors import RequestError, Unrecoverable
from edge_asr.manifest import ModelSpec
from edge_asr.memory import trim_heap
from edge_asr.runtime.onnx import share_one_thread_pool
from edge_asr.workers import protocol
from edge_asr.workers.runners import Runner, create_runner

log = logging.getLogger(__name__)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The most this process has held at once (VmHWM): the model plus its largest request."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return rss_bytes()


def prepare(config: Config) -> None:
    """What a worker does before it knows its model (a spare does it ahead of a wake)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the front process's to handle
    share_one_thread_pool(config.ort_threads)  # the worker's cores are its model's (numpy is loaded)


def worker_main(conn: Connection, spec: ModelSpec, config: Config, nice: int = 0) -> None:
    prepare(config)
    serve(conn, spec, config, nice)


def serve(conn: Connection, spec: ModelSpec, config: Config, nice: int = 0) -> None:
    """Load ``spec`` (at ``nice``, a prefetch: in the time the CPU has left over), serve its
    requests until released, destroy it and report."""
    logging.basicConfig(level=logging.INFO, format=f"[worker {spec.id} %(process)d] %(message)s")
    rss_start, started = rss_bytes(), time.perf_counter()
    normal = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        if nice:
            os.setpriority(os.PRIO_PROCESS, 0, normal + nice)  # this thread (Linux), where the sessions are made
        runner = create_runner(spec, config)
    except Exception as e:  # the front process reports it; the worker just ends
        conn.send(protocol.LoadFailed(f"{type(e).__name__}: {e}"))
        return
    if nice:
        _serve_at(normal, spec.id)
    rss_loaded = rss_bytes()
    conn.send(
        protocol.Ready(
            {
                "pid": os.getpid(),
                "rss_start": rss_start,
                "rss_loaded": rss_loaded,
                "load_s": round(time.perf_counter() - started, 3),
                **runner.describe(),
            }
        )
    )
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the front process is gone
            break
        if isinstance(message, protocol.Release):
            break
        if isinstance(message, protocol.Cancel):  # the request it meant had already ended
            continue
        if not _serve(conn, runner, protocol.receive_arrays(conn, message)):
            # No release: the broken context's destructors would only fail, or hang; the process's
            # exit gives the driver back everything it held.
            os._exit(protocol.EXIT_UNRECOVERABLE)
    rss_before = rss_bytes()
    released = runner.release()
    del runner
    gc.collect()
    trim_heap()
    report = {
        **released,
        "rss_start": rss_start,
        "rss_peak": peak_rss_bytes(),
        "rss_before_release": rss_before,
        "rss_after_release": rss_bytes(),
    }
    with contextlib.suppress(BrokenPipeError, OSError):
        conn.send(protocol.Released(report))


def _serve_at(priority: int, model_id: str) -> None:
    """Every thread of the worker (the runtime's made theirs while loading) back to the service's
    ``priority`` for its requests. Unprivileged, raising it back takes RLIMIT_NICE
    (``LimitNICE=`` in the systemd unit); without it the model serves niced, which only matters
    while something else wants the CPU."""
    for thread in os.listdir("/proc/self/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(thread), priority)
        except ProcessLookupError:  # the thread has ended
            continue
        except OSError as e:
            log.warning("model %s serves at a lower CPU priority than the service: %s (see LimitNICE)", model_id, e)
            return


def _serve(conn: Connection, runner: Runner, request: protocol.Request) -> bool:
    """Serve ``request``; whether the worker can go on (not after ``Unrecoverable``)."""
    if type(request) not in runner.requests:
        conn.send(protocol.Failed("invalid", f"this model does not support {request.method!r}"))
        return True
    try:
        result = getattr(runner, request.method)(request)
        if inspect.isgenerator(result):
            result = _stream(conn, result)
        conn.send(protocol.Done(result))
    except RequestError as e:  # the runner found the request unusable: the client's to fix
        conn.send(protocol.Failed("invalid", str(e)))
    except Unrecoverable:
        log.exception("%s failed and this worker can serve nothing more: it exits", request.method)
        return False
    except Exception as e:
        log.exception("%s failed", request.method)
        conn.send(protocol.Failed("internal", f"{type(e).__name__}: {e}"))
    return True


def _stream(conn: Connection, generator: Generator[Any, None, Any]) -> Any:
    """Send what ``generator`` yields as it comes; stop early when the front sends a cancel (the
    client went away), so the model does not go on working for nobody."""
    while True:
        try:
            conn.send(protocol.Partial(next(generator)))
        except StopIteration as done:
            return done.value
        if conn.poll() and isinstance(conn.recv(), protocol.Cancel):
            generator.close()
            return None
