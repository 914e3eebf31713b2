"""The main loop of an engine worker process.

Protocol over a duplex pipe (the front process sends, the worker answers each message once, a
generator method first with its partial results):
    front -> ("call", method, kwargs, arrays) + raw bytes of each array
                                         worker -> ("partial", item)* ("ok", result) | ("error", kind, message)
    front -> ("cancel",)                 (while partials flow) the generator is closed; the answer
                                         is ("ok", None). A cancel that arrives after the answer is ignored.
    front -> ("release",)                worker -> ("released", report), then exits
On start the worker answers ("ready", report) or ("load_failed", message). If the front process
goes away, the pipe closes and the worker releases its model and exits.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import os
import signal
from collections.abc import Generator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from edge_asr.audio import AudioError
from edge_asr.config import Config
from edge_asr.engine.runners import create_runner
from edge_asr.manifest import ModelSpec
from edge_asr.memory import trim_heap
from edge_asr.runtime.onnx import share_one_thread_pool

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


def worker_main(conn: Connection, spec: ModelSpec, config: Config) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the front process's to handle
    logging.basicConfig(level=logging.INFO, format=f"[worker {spec.id} %(process)d] %(message)s")
    rss_start = rss_bytes()
    try:
        share_one_thread_pool(config.ort_threads)  # the worker's cores are its model's (numpy is loaded)
        runner = create_runner(spec, config)
    except Exception as e:  # the front process reports it; the worker just ends
        conn.send(("load_failed", f"{type(e).__name__}: {e}"))
        return
    rss_loaded = rss_bytes()
    conn.send(("ready", {"pid": os.getpid(), "rss_start": rss_start, "rss_loaded": rss_loaded, **runner.describe()}))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the front process is gone
            break
        if message[0] == "release":
            break
        if message[0] == "cancel":  # the call it meant had already ended
            continue
        _, method, kwargs, arrays = message
        for name, (shape, dtype) in arrays.items():  # the audio, sent as raw bytes after the call
            kwargs[name] = np.frombuffer(conn.recv_bytes(), dtype).reshape(shape)
        _call(conn, runner, method, kwargs)
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
        conn.send(("released", report))


def _call(conn: Connection, runner: Any, method: str, kwargs: dict[str, Any]) -> None:
    if method not in runner.methods:
        conn.send(("error", "invalid", f"this model does not support {method!r}"))
        return
    try:
        result = getattr(runner, method)(**kwargs)
        if inspect.isgenerator(result):
            result = _stream(conn, result)
        conn.send(("ok", result))
    except (AudioError, ValueError, TypeError) as e:
        conn.send(("error", "invalid", str(e)))
    except Exception as e:
        log.exception("%s failed", method)
        conn.send(("error", "internal", f"{type(e).__name__}: {e}"))


def _stream(conn: Connection, generator: Generator[Any, None, Any]) -> Any:
    """Send what ``generator`` yields as it comes; stop early when the front sends a cancel (the
    client went away), so the model does not go on working for nobody."""
    while True:
        try:
            conn.send(("partial", next(generator)))
        except StopIteration as done:
            return done.value
        if conn.poll() and conn.recv()[0] == "cancel":
            generator.close()
            return None
