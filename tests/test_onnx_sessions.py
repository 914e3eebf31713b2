"""The process's CPU threads: every ONNX Runtime session shares one pool, numpy's BLAS has one
thread (``edge_asr.runtime.onnx``), on real sessions of the prepared models."""

from __future__ import annotations

import os

from threadpoolctl import threadpool_info

from edge_asr.manifest import ModelSpec
from edge_asr.runtime.onnx import open_session


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def test_sessions_share_one_thread_pool_and_blas_keeps_one_thread(whisper_spec: ModelSpec) -> None:
    kept = [open_session(whisper_spec.directory / "encoder.onnx", threads=2)]
    before = thread_count()
    kept += [open_session(whisper_spec.directory / name, threads=2) for name in ("decoder.onnx", "encoder.onnx")]
    assert thread_count() == before  # a session with a pool of its own starts threads
    assert {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"} == {1}
