"""ONNX Runtime sessions with a provider chain chosen from what the installed build offers.

On a Jetson (onnxruntime-gpu from the Jetson wheel index) the chain is typically
TensorRT EP (fp16, engine and timing caches kept beside the model) -> CUDA EP (arena grows only
by what is asked, so an unload gives back what a load took; optional hard limit) -> CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

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


def open_session(
    path: Path, preferred: Sequence[str] = (CPU,), threads: int = 0, gpu_mem_limit: int = 0
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise
    chain = provider_chain(preferred)
    cache = path.parent / "trt-cache"
    session = ort.InferenceSession(
        str(path), options, providers=chain, provider_options=[provider_options(p, cache, gpu_mem_limit) for p in chain]
    )
    log.debug("opened %s with %s", path.name, session.get_providers())
    return session
