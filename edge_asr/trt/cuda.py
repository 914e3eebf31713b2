"""CUDA for TensorRT through pycuda, as a worker process uses it.

- The device's *primary* context, retained once per worker and pushed around each piece of work,
  popped after. Never ``pycuda.autoinit``: it creates a context bound to the importing thread and
  destroys it at interpreter exit, before or after the TensorRT objects made in it — and TensorRT
  objects destroyed after their context crash or leak (TensorRT issue 1632). The primary context
  is also the one the CUDA runtime (TensorRT's own allocations) uses.
- Buffers by name, each allocated for a size class (the next power of two) and reused: a decoding
  step allocates nothing once its tensors have reached their class, and a tensor that grows one
  token at a time is reallocated a logarithmic number of times.
- Page-locked host buffers for every copy, so copies run asynchronously on the stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import ModuleType
from typing import Any

import numpy as np

from edge_asr.trt import cuda_driver

MIN_SIZE_CLASS = 4096


def size_class(nbytes: int) -> int:
    """The capacity a buffer for ``nbytes`` gets: the next power of two, at least 4 KiB."""
    return max(MIN_SIZE_CLASS, 1 << max(nbytes - 1, 0).bit_length())


class CudaDevice:
    """One GPU and its primary context, retained for the life of the worker."""

    def __init__(self, index: int = 0):
        self.cuda: ModuleType = cuda_driver()
        self._context = self.cuda.Device(index).retain_primary_context()

    def push(self) -> None:
        self._context.push()

    def pop(self) -> None:
        self.cuda.Context.pop()

    @contextmanager
    def active(self) -> Iterator[None]:
        """The context current on this thread for the duration. A failing pop does not hide the
        error already on its way out (CUDA may report a sticky error again at the pop)."""
        self.push()
        try:
            yield
        except BaseException:
            with suppress(self.cuda.Error):
                self.pop()
            raise
        self.pop()

    def broken(self) -> str | None:
        """Why the context can be used no more, or None: a sticky error (an illegal address, a
        failed launch) is reported again by every later call, synchronising included; an ordinary
        failure (out of memory) is not."""
        try:
            with self.active():
                self.cuda.Context.synchronize()
        except self.cuda.Error as e:
            return f"{type(e).__name__}: {e}"
        return None

    def free_memory(self) -> tuple[int, int]:
        """(free, total) device memory in bytes, as the driver reports it (the context must be
        current, so what the context itself holds is never counted free). On a Jetson the GPU
        shares the system's memory: the figures are the system's."""
        free, total = self.cuda.mem_get_info()
        return int(free), int(total)

    def detach(self) -> None:
        """Give back the retained context: last, once everything made in it is gone."""
        self._context.detach()


class Buffers:
    """Device and page-locked host memory by name, each kept at the size class of its largest use."""

    def __init__(self, cuda: ModuleType, stream: Any):
        self.cuda, self._stream = cuda, stream
        self._device: dict[str, tuple[Any, int]] = {}  # name -> (DeviceAllocation, capacity)
        self._host: dict[str, np.ndarray] = {}  # name -> page-locked bytes

    def device(self, name: str, nbytes: int) -> int:
        """The address of buffer ``name``, with room for ``nbytes``."""
        held = self._device.get(name)
        if held is None or held[1] < nbytes:
            if held is not None:
                self._drop(self._device, name, held[0].free)
            capacity = size_class(nbytes)
            held = self._device[name] = (self.cuda.mem_alloc(capacity), capacity)
        return int(held[0])

    def host(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Page-locked host array ``name`` of ``shape`` and ``dtype`` (contents undefined)."""
        nbytes = math.prod(shape) * dtype.itemsize
        held = self._host.get(name)
        if held is None or held.nbytes < nbytes:
            if held is not None:
                self._drop(self._host, name, held.base.free)
            held = self._host[name] = self.cuda.pagelocked_empty(size_class(nbytes), np.uint8)
        return held[:nbytes].view(dtype).reshape(shape)

    def _drop(self, buffers: dict[str, Any], name: str, free: Callable[[], None]) -> None:
        """Free buffer ``name`` to make room for a larger one, its entry gone first: if the larger
        one cannot be allocated (out of memory), no freed address is left to hand out or free again."""
        self._stream.synchronize()  # work queued on the stream may still read it
        del buffers[name]
        free()

    def free(self) -> None:
        """Free every buffer now (not whenever the garbage collector gets to them): each one, even
        after another's free failed; the first failure is raised at the end."""
        frees = [allocation.free for allocation, _ in self._device.values()]
        frees += [array.base.free for array in self._host.values()]
        self._device.clear()
        self._host.clear()
        failure = None
        for free in frees:
            try:
                free()
            except Exception as e:
                failure = failure or e
        if failure is not None:
            raise failure
