"""TensorRT engines in a worker: deserialised into one CUDA context, run by tensor name, and
destroyed in the order TensorRT needs.

Only names every TensorRT of JetPack 6 and 7 has (8.6 to 10.x) are used: ``num_io_tensors``,
``get_tensor_name/mode/dtype/shape``, ``num_optimization_profiles``, ``get_tensor_profile_shape``,
``set_optimization_profile_async``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``. The binding-index API (``get_binding_*``, ``execute_async_v2``) is gone in 10.x.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edge_asr.errors import Unrecoverable
from edge_asr.steps import Steps
from edge_asr.trt import tensorrt
from edge_asr.trt.cuda import Buffers, CudaDevice

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """An engine could not be loaded or run."""


@dataclass(frozen=True)
class DeviceTensor:
    """A tensor in device memory: its address, shape and element type."""

    pointer: int
    shape: tuple[int, ...]
    dtype: np.dtype


Shapes = dict[str, tuple[int, ...]]


class Engine:
    """One engine and its execution context. A call runs in the first of the engine's
    optimisation profiles that takes its input shapes; the context switches profile only when
    the kind of call changes (a window's prompt, then its steps)."""

    def __init__(self, trt: Any, runtime: Any, path: Path, buffers: Buffers, stream: Any):
        self.name = path.stem
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialise {path} (its log above says why)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"TensorRT could not create an execution context for {path.name} (out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        # Per profile, per input: the (min, max) shapes it takes.
        self.profiles: list[dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = []
        for index in range(self.engine.num_optimization_profiles):
            ranges = {n: self.engine.get_tensor_profile_shape(n, index) for n in self.inputs}
            self.profiles.append({n: (tuple(low), tuple(high)) for n, (low, _, high) in ranges.items()})
        self.profile = 0  # what a new context has selected
        self._buffers, self._stream = buffers, stream

    def declared_shape(self, name: str) -> tuple[int, ...]:
        """The shape the engine declares for ``name``, -1 where it is dynamic."""
        return tuple(self.engine.get_tensor_shape(name))

    def run(
        self, feeds: Mapping[str, np.ndarray | DeviceTensor], into: Mapping[str, str] | None = None
    ) -> dict[str, DeviceTensor]:
        """Queue one execution on the stream. Host arrays are copied in through page-locked
        buffers (converted to the engine's type: TensorRT 8 takes int32 where the graph said
        int64); device tensors are bound where they are. Each output goes to the engine's own
        buffer, or to the buffer ``into`` names for it, and stays there until that buffer is
        written again."""
        into = into or {}
        tensors = {name: self._on_device(name, feeds[name]) for name in self.inputs}
        self._select_profile({name: tensor.shape for name, tensor in tensors.items()})
        for name, tensor in tensors.items():
            if not self.context.set_input_shape(name, tensor.shape):
                raise EngineError(f"{self.name}: TensorRT refused input {name} of shape {tensor.shape}")
            self._bind(name, tensor.pointer)
        outputs = {}
        for name in self.outputs:
            shape, dtype = tuple(self.context.get_tensor_shape(name)), self.dtypes[name]
            pointer = self._buffers.device(into.get(name, f"{self.name}.{name}"), math.prod(shape) * dtype.itemsize)
            self._bind(name, pointer)
            outputs[name] = DeviceTensor(pointer, shape, dtype)
        if not self.context.execute_async_v3(self._stream.handle):
            raise EngineError(f"{self.name}: TensorRT could not run the engine (its log above says why)")
        return outputs

    def max_shape(self, name: str) -> tuple[int, ...]:
        """The largest shape of input ``name`` any profile takes, axis by axis."""
        return tuple(max(sizes) for sizes in zip(*(p[name][1] for p in self.profiles), strict=True))

    def _select_profile(self, shapes: Shapes) -> None:
        fits = [i for i, p in enumerate(self.profiles) if all(_within(s, *p[n]) for n, s in shapes.items())]
        if not fits:
            outside = ", ".join(f"{n} {s}" for n, s in shapes.items())
            raise EngineError(f"{self.name}: inputs of shapes {outside} are outside the engine's profiles")
        if fits[0] != self.profile:
            if not self.context.set_optimization_profile_async(fits[0], self._stream.handle):
                raise EngineError(f"{self.name}: TensorRT could not switch to optimisation profile {fits[0]}")
            self.profile = fits[0]

    def _bind(self, name: str, pointer: int) -> None:
        if not self.context.set_tensor_address(name, pointer):
            raise EngineError(f"{self.name}: TensorRT refused the address of {name}")

    def _on_device(self, name: str, value: np.ndarray | DeviceTensor) -> DeviceTensor:
        if isinstance(value, DeviceTensor):
            if value.dtype != self.dtypes[name]:
                raise EngineError(f"{self.name}: input {name} is {value.dtype}, the engine takes {self.dtypes[name]}")
            return value
        value = np.asarray(value, self.dtypes[name])
        staging = self._buffers.host(f"{self.name}.{name}", value.shape, value.dtype)
        staging[...] = value
        pointer = self._buffers.device(f"{self.name}.{name}", staging.nbytes)
        self._buffers.cuda.memcpy_htod_async(pointer, staging, self._stream)
        return DeviceTensor(pointer, value.shape, value.dtype)


def _within(shape: tuple[int, ...], low: tuple[int, ...], high: tuple[int, ...]) -> bool:
    return len(shape) == len(low) and all(a <= s <= b for s, a, b in zip(shape, low, high, strict=True))


class TensorRTSession:
    """Engines loaded into one CUDA context with the runtime, stream and buffers they share.

    ``release()`` destroys everything in the order TensorRT needs, the context current
    throughout: synchronise the stream -> free device and host buffers -> delete the execution
    contexts -> delete the engines -> delete the runtime -> pop and detach the context. A load
    that fails half-way releases what it had made the same way.
    """

    def __init__(self, directory: Path, files: Sequence[str], device: int = 0):
        trt = tensorrt()
        self.device = CudaDevice(device)
        self.engines: dict[str, Engine] = {}
        self.runtime: Any = None
        self.stream: Any = None
        self.buffers: Buffers | None = None
        self.gpu: dict[str, int] = {}
        self.device.push()
        try:
            self.gpu["free_before_load"], self.gpu["total"] = self.device.free_memory()
            self.stream = self.device.cuda.Stream()
            self.buffers = Buffers(self.device.cuda, self.stream)
            self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            for file in files:
                self.engines[Path(file).stem] = Engine(trt, self.runtime, directory / file, self.buffers, self.stream)
            self.gpu["free_after_load"] = self.device.free_memory()[0]
        except BaseException as e:
            # The failed constructor's frame still holds the runtime it was given: without this,
            # the runtime would outlive the context (TensorRT 1632) whatever the release does.
            traceback.clear_frames(e.__traceback__)
            self.device.pop()
            self.release()
            raise
        self.device.pop()

    def __getitem__(self, name: str) -> Engine:
        return self.engines[name]

    @contextmanager
    def active(self) -> Iterator[None]:
        """The CUDA context current around a piece of work. A failure that left the context
        broken (the work's, or the pop's) is raised as ``Unrecoverable``: the worker must end
        (CUDA cannot mend a context)."""
        try:
            with self.device.active():
                yield
        except Exception as e:
            if broken := self.device.broken():
                raise Unrecoverable(f"the GPU context is broken: {broken}") from e
            raise

    def to_host(self, tensor: DeviceTensor) -> np.ndarray:
        """Copy ``tensor`` back (through a page-locked buffer) once the stream has produced it."""
        assert self.buffers is not None
        staging = self.buffers.host("to-host", tensor.shape, tensor.dtype)
        self.device.cuda.memcpy_dtoh_async(staging, tensor.pointer, self.stream)
        self.stream.synchronize()
        return staging.copy()

    def gather_rows(self, tensor: DeviceTensor, rows: list[int], buffer: str) -> DeviceTensor:
        """``tensor``'s axis-1 rows ``rows`` (``[L, B, ...]`` -> ``[L, len(rows), ...]``) into
        ``buffer``, one device-to-device copy per (leading index, row), on the stream."""
        assert self.buffers is not None
        layers, _, *rest = tensor.shape
        row_bytes = math.prod(rest) * tensor.dtype.itemsize
        shape = (layers, len(rows), *rest)
        pointer = self.buffers.device(buffer, math.prod(shape) * tensor.dtype.itemsize)
        batch = tensor.shape[1]
        for layer in range(layers):
            for i, row in enumerate(rows):
                source = tensor.pointer + (layer * batch + row) * row_bytes
                target = pointer + (layer * len(rows) + i) * row_bytes
                self.device.cuda.memcpy_dtod_async(target, source, row_bytes, self.stream)
        return DeviceTensor(pointer, shape, tensor.dtype)

    def release(self) -> dict[str, Any]:
        """Destroy everything, in order; each step timed. The report also has the GPU's free
        memory before the load, after it and after the release."""
        step = Steps()
        self.device.push()
        if self.stream is not None:
            step("synchronize stream", self.stream.synchronize)
        if self.buffers is not None:
            step("free device and host buffers", self.buffers.free)
        step("delete execution contexts", self._delete_contexts)
        step("delete engines", self._delete_engines)
        step("delete runtime", partial(setattr, self, "runtime", None))
        step("destroy stream", self._destroy_stream)
        step("read free GPU memory", self._read_free_memory)
        step("pop and detach the CUDA context", self._pop_and_detach)
        return {"steps": step.steps, "gpu": dict(self.gpu)}

    def _delete_contexts(self) -> None:
        for engine in self.engines.values():
            engine.context = None

    def _delete_engines(self) -> None:
        for engine in self.engines.values():
            engine.engine = None
        self.engines.clear()

    def _destroy_stream(self) -> None:
        """pycuda destroys a stream with its last reference: the buffers hold one too."""
        self.buffers = self.stream = None

    def _read_free_memory(self) -> None:
        """What the GPU has free once everything is gone but the context itself (still current)."""
        self.gpu["free_after_release"] = self.device.free_memory()[0]

    def _pop_and_detach(self) -> None:
        self.device.pop()
        self.device.detach()
