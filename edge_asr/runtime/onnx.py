"""ONNX Runtime sessions with a provider chain chosen from what the installed build offers.

On a Jetson (onnxruntime-gpu from the Jetson wheel index) the chain is typically
TensorRT EP (fp16, engine and timing caches kept beside the model) -> CUDA EP (arena grows only
by what is asked, so an unload gives back what a load took; optional hard limit) -> CPU.

A model worker's cores belong to one thread pool (``share_one_thread_pool``): its sessions share
ONNX Runtime's global intra-op pool and numpy's BLAS gets one thread (its only work here is small,
like the mel filterbank). Idle pools spin on after their work, so with a pool per session, or BLAS
threads of their own, whatever runs next shares its cores with spinning threads (what that cost:
``bench/RESULTS.md``). Elsewhere (the library in another program) each session keeps a pool of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def provider_chain(preferred: Sequence[str]) -> list[str]:
    """The preferred providers this onnxruntime build has, in order, always ending with CPU."""
    available = set(ort.get_available_providers())
    chain = [p for p in preferred if p in available and p != CPU]
    return [*chain, CPU]


def provider_options(provider: str, cache_dir: Path, gpu_mem_limit: int = 0) -> dict[str, str]:
    if provider == TENSORRT:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return {
            "trt_fp16_enable": "True",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache_dir),
        }
    if provider == CUDA:
        options = {"arena_extend_strategy": "kSameAsRequested"}
        if gpu_mem_limit:
            options["gpu_mem_limit"] = str(gpu_mem_limit)
        return options
    return {}


_shared_pool = False  # whether this process's sessions share one pool


def share_one_thread_pool(threads: int) -> None:
    """From now on, every session this process opens shares one intra-op pool of ``threads`` (0:
    one per physical core), and numpy's BLAS has one thread. For a process that runs edge-asr's
    models only: ONNX Runtime then refuses sessions that ask for pools of their own (other
    libraries' default sessions)."""
    global _shared_pool
    if not _shared_pool:
        ort.set_global_thread_pool_sizes(threads, 1)
        threadpool_limits(1, user_api="blas")
        _shared_pool = True


def open_session(
    path: Path, preferred: Sequence[str] = (CPU,), threads: int = 0, gpu_mem_limit: int = 0
) -> ort.InferenceSession:
    """``threads``: the session's own pool, where the process shares none."""
    options = ort.SessionOptions()
    if not _shared_pool:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    else:
        options.use_per_session_threads = False
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise
    chain = provider_chain(preferred)
    cache = path.parent / "trt-cache"
    session = ort.InferenceSession(
        str(path), options, providers=chain, provider_options=[provider_options(p, cache, gpu_mem_limit) for p in chain]
    )
    log.debug("opened %s with %s", path.name, session.get_providers())
    return session
