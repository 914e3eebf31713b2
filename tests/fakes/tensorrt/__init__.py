"""FAKE ``tensorrt`` (no GPU and no TensorRT libraries here): the names ``edge_asr.trt`` uses, with
the real bindings' signatures (``tests/test_tensorrt_bindings.py`` checks that every public name
here exists in the real 8.6.1 and 10.3.0 modules), running "engines" with ONNX Runtime on the fake
pycuda's memory, so what an engine computes is real.

- The builder really reads the ONNX file's inputs and checks each optimisation profile the way
  TensorRT does: every dynamic axis needs a range, static axes must match, min <= opt <= max.
  The serialized "engine" is JSON naming its ONNX file, precision, profiles, TensorRT version and
  GPU; a runtime of another version or on another GPU refuses it (returns None), as TensorRT does.
  An execution context takes shapes within its selected profile only (profile 0 until
  ``set_optimization_profile_async`` selects another).
- Emulating 8.x (``FAKE_TENSORRT_VERSION=8.6.1``), a network needs the EXPLICIT_BATCH flag and
  int64 inputs become int32, as TensorRT 8's ONNX parser does.
- Engines and execution contexts hold device memory from the fake pycuda (the weights; the
  activations), so GPU free memory moves as it would; an engine or context destroyed with no
  current CUDA context is a recorded violation (the real one crashes or leaks: TensorRT 1632).
  Destructions are journaled in the fake pycuda's journal.
- A fake: an execution reads its inputs when output shapes are first asked for (ONNX Runtime
  computes both at once); ``edge_asr.trt.engine`` copies inputs in before that, as it must anyway.
"""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pycuda.driver as cuda

__version__ = os.environ.get("FAKE_TENSORRT_VERSION", "10.3.0")
_MAJOR = int(__version__.split(".")[0])
_CONTEXT_BYTES = 8 << 20  # activation memory of an execution context


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    if _MAJOR >= 10:  # TensorRT 8 has no int64 tensors
        INT64 = 8


float32, float16, int8, int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32
_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32}
_NUMPY[DataType.BOOL] = np.bool_
_ONNX = {"tensor(float)": DataType.FLOAT, "tensor(float16)": DataType.HALF, "tensor(int32)": DataType.INT32}
_ONNX["tensor(bool)"] = DataType.BOOL
if _MAJOR >= 10:
    int64 = DataType.INT64
    _NUMPY[DataType.INT64], _ONNX["tensor(int64)"] = np.int64, DataType.INT64


def nptype(trt_type: DataType) -> type:
    return _NUMPY[trt_type]


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    TF32 = 6


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class Logger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self, min_severity: int = WARNING):
        self.min_severity = min_severity


def _io_type(onnx_type: str) -> DataType:
    """The type of an engine's input or output: TensorRT 8's ONNX parser turns int64 into int32."""
    return _ONNX.get(onnx_type, DataType.INT32)


class ITensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType):
        self.name, self.shape, self.dtype = name, shape, dtype


class INetworkDefinition:
    def __init__(self, flags: int):
        self._explicit_batch = bool(flags & (1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH)) or _MAJOR >= 10
        self._onnx: Path | None = None
        self._inputs: list[ITensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]


def _onnx_session(path: Path) -> Any:
    """A session as a worker allows (its shared thread pool). Imported here: the real-bindings
    environments load this module to compare names, without edge-asr's dependencies."""
    from edge_asr.runtime.onnx import open_session

    return open_session(path)


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: Logger):
        self._network, self._errors = network, []

    def parse_from_file(self, model: str) -> bool:
        if not self._network._explicit_batch:
            self._errors.append("the ONNX parser only supports networks with an explicit batch dimension")
            return False
        session = _onnx_session(Path(model))
        self._network._onnx = Path(model).resolve()
        self._network._inputs = [
            ITensor(i.name, tuple(d if isinstance(d, int) else -1 for d in i.shape), _io_type(i.type))
            for i in session.get_inputs()
        ]
        return True

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> str:
        return self._errors[index]


class IOptimizationProfile:
    def __init__(self) -> None:
        self._shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        self._shapes[input] = (tuple(min), tuple(opt), tuple(max))


class ITimingCache:
    def __init__(self, data: bytes):
        self._entries = json.loads(data or b"{}")

    def serialize(self) -> bytes:
        return json.dumps(self._entries).encode()


class IBuilderConfig:
    def __init__(self) -> None:
        self._flags: set[BuilderFlag] = set()
        self._profiles: list[IOptimizationProfile] = []
        self._pools: dict[MemoryPoolType, int] = {}
        self._cache: ITimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self._pools[pool] = pool_size

    def set_flag(self, flag: BuilderFlag) -> None:
        self._flags.add(flag)

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        return ITimingCache(serialized_timing_cache)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self._cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._cache

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1


class Builder:
    def __init__(self, logger: Logger):
        self.logger = logger
        cuda.init()
        if cuda.Device.count() == 0:
            raise TypeError("pybind11::init(): factory function returned nullptr")

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        """The checks TensorRT makes of the profiles; None (and an error on the logger) if one fails."""
        if not config._profiles:
            return None
        for profile in config._profiles:
            for tensor in network._inputs:
                if tensor.name not in profile._shapes:
                    if -1 in tensor.shape:
                        return None  # a dynamic input with no range in this profile
                    continue
                low, opt, high = profile._shapes[tensor.name]
                if not len(low) == len(opt) == len(high) == len(tensor.shape):
                    return None
                for size, a, b, c in zip(tensor.shape, low, opt, high, strict=True):
                    if not (0 <= a <= b <= c) or (size >= 0 and not a == b == c == size):
                        return None
        if config._cache is not None:
            config._cache._entries[network._onnx.name] = "timed"
        device = cuda.Device(0)
        return json.dumps(
            {
                "onnx": str(network._onnx),
                "tensorrt": __version__,
                "gpu": [device.name(), list(device.compute_capability())],
                "fp16": BuilderFlag.FP16 in config._flags,
                "profiles": [{n: [list(s) for s in shape] for n, shape in p._shapes.items()} for p in config._profiles],
            }
        ).encode()


class Runtime:
    def __init__(self, logger: Logger):
        cuda.init()
        if cuda.Device.count() == 0:
            raise TypeError("pybind11::init(): factory function returned nullptr")
        cuda.require_context("Runtime()")

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        try:
            plan = json.loads(bytes(serialized_engine))
        except ValueError:
            return None  # TensorRT logs "Serialization assertion ... failed" and returns nothing
        device = cuda.Device(0)
        if plan["tensorrt"] != __version__ or plan["gpu"] != [device.name(), list(device.compute_capability())]:
            return None
        try:
            return ICudaEngine(plan)
        except cuda.MemoryError:
            return None  # TensorRT logs the failed allocation and returns nothing

    def __del__(self) -> None:
        _destroyed("runtime")


def _destroyed(what: str) -> None:
    if cuda.current() is None or not cuda.current().valid:
        cuda.VIOLATIONS.append(f"{what} destroyed with no current CUDA context")
    cuda._journal(f"delete {what}")


class ICudaEngine:
    def __init__(self, plan: dict[str, Any]):
        self._weights = cuda.mem_alloc(Path(plan["onnx"]).stat().st_size)
        self._session = _onnx_session(Path(plan["onnx"]))
        self._profiles = [{n: tuple(map(tuple, shapes)) for n, shapes in p.items()} for p in plan["profiles"]]
        self._io = {t.name: (TensorIOMode.INPUT, t) for t in self._session.get_inputs()}
        self._io |= {t.name: (TensorIOMode.OUTPUT, t) for t in self._session.get_outputs()}

    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    def get_tensor_name(self, index: int) -> str:
        return list(self._io)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._io[name][0]

    def get_tensor_dtype(self, name: str) -> DataType:
        return _io_type(self._io[name][1].type)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else -1 for d in self._io[name][1].shape)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        return list(self._profiles[profile_index][name])

    @property
    def device_memory_size(self) -> int:
        return _CONTEXT_BYTES

    if _MAJOR >= 10:
        device_memory_size_v2 = device_memory_size

    def create_execution_context(self) -> IExecutionContext | None:
        try:
            return IExecutionContext(self)
        except cuda.MemoryError:
            return None  # as TensorRT does when it cannot allocate the activations

    def __del__(self) -> None:
        if hasattr(self, "_weights"):  # not one whose weights could not be allocated
            _destroyed("engine")
            if cuda.current() is not None:
                self._weights.free()


class IExecutionContext:
    def __init__(self, engine: ICudaEngine):
        self._activations = cuda.mem_alloc(engine.device_memory_size)
        self.engine = engine
        self._profile = 0
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}
        self._results: dict[str, np.ndarray] | None = None

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        if not 0 <= profile_index < self.engine.num_optimization_profiles:
            return False
        self._profile, self._shapes, self._results = profile_index, {}, None  # shapes are set again after a switch
        return True

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        low, _, high = self.engine._profiles[self._profile][name]
        shape = tuple(shape)
        if len(shape) != len(low) or any(not a <= s <= b for s, a, b in zip(shape, low, high, strict=True)):
            return False
        self._shapes[name], self._results = shape, None
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if not memory:
            return False
        self._addresses[name] = int(memory)
        if name in self._inputs():
            self._results = None
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if self.engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            return self._shapes[name]
        return self._compute()[name].shape

    def execute_async_v3(self, stream_handle: int) -> bool:
        cuda.launch()
        inputs = {self._addresses[name] for name in self._inputs()}
        for name, value in self._compute().items():
            if self._addresses[name] in inputs:  # TensorRT does not compute in place
                cuda.VIOLATIONS.append(f"output {name} bound to the address of an input")
            cuda.write(self._addresses[name], value.tobytes())
        return True

    def _inputs(self) -> list[str]:
        return [n for n in self.engine._io if self.engine.get_tensor_mode(n) == TensorIOMode.INPUT]

    def _compute(self) -> dict[str, np.ndarray]:
        if self._results is None:
            cuda.flush()  # the copies queued before this execution have landed by the time it runs
            feeds = {}
            for name in self._inputs():
                dtype = np.dtype(nptype(self.engine.get_tensor_dtype(name)))
                shape = self._shapes[name]
                data = cuda.read(self._addresses[name], int(np.prod(shape)) * dtype.itemsize)
                value = np.frombuffer(data, dtype).reshape(shape)
                onnx_type = self.engine._io[name][1].type
                feeds[name] = value.astype(np.int64) if onnx_type == "tensor(int64)" else value
            names = [o.name for o in self.engine._session.get_outputs()]
            self._results = dict(zip(names, self.engine._session.run(names, feeds), strict=True))
        return self._results

    def __del__(self) -> None:
        if hasattr(self, "_activations"):  # not one whose activations could not be allocated
            _destroyed("execution context")
            if cuda.current() is not None:
                self._activations.free()
