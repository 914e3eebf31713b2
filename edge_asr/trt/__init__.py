"""Native TensorRT engines on pycuda: building them for the GPU at hand (``build``), finding the
set built for this device (``engine_set``), and running them in a worker (``cuda``, ``engine``).

``tensorrt`` and ``pycuda`` are imported only by the functions below, when a TensorRT model is
built or loaded: the service, the CLI and the tests import this package on machines that have
neither.
"""

from __future__ import annotations

from types import ModuleType


class TensorRTUnavailable(RuntimeError):
    """TensorRT cannot run here (no bindings, no pycuda, no GPU); the message says which."""


def tensorrt() -> ModuleType:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(
            f"TensorRT's Python bindings are not installed ({e}); on a Jetson they come with JetPack "
            "(python3-libnvinfer): create the venv with --system-site-packages"
        ) from None
    return trt


def cuda_driver() -> ModuleType:
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise TensorRTUnavailable(
            f"pycuda is not installed ({e}); on a Jetson: `pip install pycuda` with CUDA_ROOT=/usr/local/cuda"
        ) from None
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as e:
        raise TensorRTUnavailable(f"CUDA could not start: {e}") from None
    if count == 0:
        raise TensorRTUnavailable("no CUDA GPU found")
    return cuda


def major_version(trt: ModuleType) -> int:
    return int(trt.__version__.split(".")[0])
