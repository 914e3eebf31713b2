"""FAKE ``pycuda.driver`` (no CUDA toolkit or GPU here): the names ``edge_asr.trt`` uses, with
pycuda's signatures (``src/wrapper/wrap_cudadrv.cpp``), over simulated device memory.

Device memory is host memory (a bytearray per allocation) at made-up addresses, so data copied in,
worked on by the fake ``tensorrt`` (which reads and writes these addresses) and copied out is real.
What matters for a lifecycle is journaled in ``JOURNAL`` (pushes, pops, allocations, frees,
synchronisations, stream destructions, detaches; the fake tensorrt adds its own destructions).
Misuse that real CUDA punishes — work with no current context, a double free, a context detached
while memory or a stream made in it is still alive, an object used after its context is gone — is
recorded in ``VIOLATIONS`` and raises ``LogicError`` where pycuda would.

Copies are asynchronous as on a GPU: ``memcpy_*_async`` queue on their stream and happen when the
stream is synchronised (or when an engine reads its inputs, which a GPU would do after the copies
queued before it), reading the host memory as it is *then*: code that reuses a page-locked buffer
before the copy out of it has run, or reads one before the copy into it has, gets wrong data.

Fake-only knobs: ``FAKE_CUDA_DEVICES`` (count, default 1), ``FAKE_CUDA_NAME`` (default "Orin"),
``FAKE_CUDA_CC`` ("8.7"), ``FAKE_CUDA_TOTAL`` (bytes, default 8 GiB); ``FAKE_CUDA_JOURNAL``, a file
the journal is appended to as JSON lines, so a test can read what a worker process did;
``FAKE_CUDA_FAULT``, a file whose presence makes the next kernel launch (``launch``, which the fake
tensorrt's executions call) hit an illegal address, in whichever process launches first (it
removes the file): from then on every call in the context raises ``LaunchError``, as CUDA's sticky
errors do.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

import numpy as np


class Error(Exception):
    pass


class LogicError(Error):
    pass


class MemoryError(Error):
    pass


class LaunchError(Error):
    pass


JOURNAL: list[tuple] = []
VIOLATIONS: list[str] = []
PRIMARY_CONTEXT_BYTES = 64 << 20  # what a context itself holds on the device while retained

_memory: dict[int, bytearray] = {}  # address -> bytes
_owner: dict[int, Context] = {}  # address -> the context it was allocated in
_live: dict[int, tuple[str, Context]] = {}  # id -> (what, owner) of live streams and host allocations
# queued copies: ("htod", address, host) | ("dtod", to, from, size) | ("dtoh", host, address)
_pending: list[tuple] = []
_stack: list[Context] = []
_retained: dict[int, int] = {}  # device ordinal -> primary context retain count
_next_address = [0x7F00_0000_0000]
_initialised = [False]
_sticky: list[str] = []  # the error every call repeats once a launch failed


def _journal(*entry: Any) -> None:
    JOURNAL.append(entry)
    path = os.environ.get("FAKE_CUDA_JOURNAL")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps([os.getpid(), *entry]) + "\n")


def _violation(message: str) -> LogicError:
    VIOLATIONS.append(message)
    _journal("violation", message)
    return LogicError(message)


def current() -> Context | None:
    """(fake only) The current context, or None."""
    return _stack[-1] if _stack else None


def require_context(what: str) -> Context:
    """(fake only) The current context; a violation if there is none, or it was detached. After
    a failed launch, the sticky error instead."""
    context = current()
    if context is None or not context.valid:
        raise _violation(f"{what} with no current CUDA context")
    if _sticky:
        raise LaunchError(f"{what} failed: {_sticky[0]}")
    return context


def launch() -> None:
    """(fake only) A kernel starts: it hits an illegal address if ``FAKE_CUDA_FAULT`` says so."""
    require_context("kernel launch")
    fault = os.environ.get("FAKE_CUDA_FAULT")
    if fault and os.path.exists(fault):
        os.remove(fault)
        _sticky.append("an illegal memory access was encountered")
        _journal("fault")


def allocated_bytes() -> int:
    """(fake only) Device memory allocated and not yet freed."""
    return sum(len(m) for m in _memory.values())


def _locate(address: int, nbytes: int) -> tuple[bytearray, int]:
    """The allocation holding ``address`` .. ``address + nbytes`` and the offset into it."""
    base = max((b for b in _memory if b <= address), default=None)
    if base is None or address + nbytes > base + len(_memory[base]):
        raise _violation(f"access of {nbytes} bytes at {address:#x} outside any allocation")
    return _memory[base], address - base


def read(address: int, nbytes: int) -> bytes:
    """(fake only) ``nbytes`` of device memory at ``address``."""
    memory, offset = _locate(address, nbytes)
    return bytes(memory[offset : offset + nbytes])


def write(address: int, data: bytes) -> None:
    """(fake only) Store ``data`` at ``address``; it must fit the allocation there."""
    memory, offset = _locate(address, len(data))
    memory[offset : offset + len(data)] = data


def init(flags: int = 0) -> None:
    _initialised[0] = True


def get_driver_version() -> int:
    return 12060  # CUDA 12.6, JetPack 6.1's


class Device:
    def __init__(self, ordinal: int):
        if not _initialised[0]:
            raise LogicError("cuInit has not been called")
        if not 0 <= ordinal < Device.count():
            raise LogicError(f"invalid device ordinal {ordinal}")
        self.ordinal = ordinal

    @staticmethod
    def count() -> int:
        return int(os.environ.get("FAKE_CUDA_DEVICES", "1"))

    def name(self) -> str:
        return os.environ.get("FAKE_CUDA_NAME", "Orin")

    def compute_capability(self) -> tuple[int, int]:
        major, minor = os.environ.get("FAKE_CUDA_CC", "8.7").split(".")
        return int(major), int(minor)

    def total_memory(self) -> int:
        return int(os.environ.get("FAKE_CUDA_TOTAL", str(8 << 30)))

    def make_context(self, flags: int = 0) -> Context:
        """A new context of its own (not the primary one), made current."""
        context = Context(self)
        context.primary = False
        context.push()
        return context

    def retain_primary_context(self) -> Context:
        _retained[self.ordinal] = _retained.get(self.ordinal, 0) + 1
        _journal("retain_primary_context")
        return Context(self)


class Context:
    def __init__(self, device: Device):
        self.device, self.valid, self.primary = device, True, True

    def push(self) -> None:
        if not self.valid:
            raise _violation("push of a detached context")
        _stack.append(self)
        _journal("push")

    @staticmethod
    def pop() -> None:
        if not _stack:
            raise _violation("cannot pop non-current context")
        _stack.pop()
        _journal("pop")
        if _sticky:  # CUDA may report an earlier launch's error at any later call
            raise LaunchError(f"cuCtxPopCurrent failed: {_sticky[0]}")

    def detach(self) -> None:
        if not self.valid:
            raise LogicError("cannot detach from invalid context")
        live = [a for a, owner in _owner.items() if owner is self]
        live += [what for what, owner in _live.values() if owner is self]
        if live:
            _violation(f"context detached with {len(live)} allocation(s) or stream(s) still live")
        self.valid = False
        if self.primary:
            _retained[self.device.ordinal] -= 1
        if self in _stack:
            _stack.remove(self)
        _journal("detach")

    @staticmethod
    def synchronize() -> None:
        require_context("Context.synchronize")


def retained_contexts() -> int:
    """(fake only) Primary contexts retained and not yet detached."""
    return sum(_retained.values())


class DeviceAllocation:
    def __init__(self, nbytes: int):
        context = require_context("mem_alloc")
        if allocated_bytes() + nbytes > Device(0).total_memory() - PRIMARY_CONTEXT_BYTES:
            raise MemoryError("cuMemAlloc failed: out of memory")
        self.address = _next_address[0]
        _next_address[0] += max(nbytes, 1) + 4096
        _memory[self.address], _owner[self.address] = bytearray(nbytes), context
        _journal("mem_alloc", nbytes)

    def free(self) -> None:
        if self.address not in _memory:
            raise _violation("double free of a device allocation")
        owner = _owner[self.address]
        if not owner.valid:
            raise _violation("free of an allocation whose context was detached")
        nbytes = len(_memory.pop(self.address))
        del _owner[self.address]
        _journal("free", nbytes)

    def __int__(self) -> int:
        return self.address

    __index__ = __int__


def mem_alloc(nbytes: int) -> DeviceAllocation:
    return DeviceAllocation(nbytes)


def mem_get_info() -> tuple[int, int]:
    require_context("mem_get_info")
    total = Device(0).total_memory()
    return total - PRIMARY_CONTEXT_BYTES * retained_contexts() - allocated_bytes(), total


class HostAllocation(bytearray):
    """Page-locked host memory (the ``base`` of what ``pagelocked_empty`` returns)."""

    freed = False

    def free(self) -> None:
        if self.freed:
            raise _violation("double free of page-locked memory")
        _, owner = _live.pop(id(self))
        if not owner.valid:
            raise _violation("free of page-locked memory whose context was detached")
        self.freed = True
        _journal("free_host", len(self))


def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    context = require_context("pagelocked_empty")
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    host = HostAllocation(int(np.prod(shape)) * dtype.itemsize)
    _live[id(host)] = ("page-locked memory", context)
    _journal("pagelocked_empty", len(host))
    return np.ndarray(shape, dtype, buffer=host, order=order)


_stream_handles = itertools.count(0x5000)


class Stream:
    def __init__(self, flags: int = 0):
        self._context = require_context("Stream()")
        self.handle = next(_stream_handles)
        _live[id(self)] = ("stream", self._context)

    def synchronize(self) -> Stream:
        require_context("Stream.synchronize")
        flush()
        _journal("synchronize")
        return self

    def __del__(self) -> None:  # pycuda destroys a stream in its own context, which must still exist
        _live.pop(id(self), None)
        if not self._context.valid:
            VIOLATIONS.append("stream destroyed after its context was detached")
        _journal("destroy stream")


def flush() -> None:
    """(fake only) Carry out the queued copies, as the GPU does by the time they are waited for."""
    while _pending:
        kind, dest, src, *size = _pending.pop(0)
        if kind == "htod":
            write(dest, memoryview(src).cast("B").tobytes())
        elif kind == "dtod":
            write(dest, read(src, size[0]))
        else:
            dest.view(np.uint8).reshape(-1)[:] = np.frombuffer(read(src, dest.nbytes), np.uint8)


def memcpy_htod_async(dest: Any, src: Any, stream: Stream | None = None) -> None:
    require_context("memcpy_htod_async")
    _pending.append(("htod", int(dest), src))


def memcpy_dtod_async(dest: Any, src: Any, size: int, stream: Stream | None = None) -> None:
    require_context("memcpy_dtod_async")
    _pending.append(("dtod", int(dest), int(src), size))


def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Stream | None = None) -> None:
    require_context("memcpy_dtoh_async")
    _pending.append(("dtoh", dest, int(src)))
