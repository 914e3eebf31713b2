"""A model worker's CPU threads (``edge_asr.runtime.onnx``): once the process shares one pool,
every session it opens runs on that pool and numpy's BLAS has one thread; elsewhere each session
keeps a pool of its own. Real sessions of the prepared models, in a spawned process as a worker is."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from threadpoolctl import threadpool_info

from edge_asr.manifest import ModelSpec
from edge_asr.runtime.onnx import open_session, share_one_thread_pool


def threads_three_sessions_add(model: Path, shared: bool) -> tuple[int, set[int]]:
    """Threads the process gains by three more sessions (two threads each asked for), and BLAS's threads."""
    if shared:
        share_one_thread_pool(2)
    kept = [open_session(model, threads=2)]
    before = len(os.listdir("/proc/self/task"))
    kept += [open_session(model, threads=2) for _ in range(3)]
    added = len(os.listdir("/proc/self/task")) - before
    return added, {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_a_worker_s_sessions_share_one_pool_and_blas_keeps_one_thread(whisper_spec: ModelSpec) -> None:
    model = whisper_spec.directory / "encoder.onnx"
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        shared = pool.apply(threads_three_sessions_add, (model, True))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        own = pool.apply(threads_three_sessions_add, (model, False))
    assert shared == (0, {1})
    assert own[0] == 3  # a pool of two each: the caller's thread and one more
