"""Our TensorRT code against the REAL bindings of this environment's version (8.6.1 or 10.3.0).

- Every ``trt.<name>`` the code writes exists in this version's module.
- The builder and the runtime run against autospecs of the real classes that also check every
  call against the real signatures (parsed from pybind11's docstrings): a name a version removed
  (``build_engine``, ``max_workspace_size``, ``execute_async_v2``, ``get_binding_*`` in 10.x) or a
  wrong argument list fails here. Objects are destroyed in the order TensorRT needs.
- The fake ``tensorrt`` the behaviour tests use mirrors this module: its names and signatures.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import re
import weakref
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pycuda.driver as cuda
import pytest
import tensorrt as trt

from edge_asr.config import load_config
from edge_asr.trt.build import EngineBuilder, build_engines
from edge_asr.trt.engine_set import ENGINE_JSON, EngineSet
from edge_asr.trt.recipe import EngineRecipe
from edge_asr.whisper.trt_graphs import TensorRTWhisperGraphs, engine_recipes

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")
MAJOR = int(trt.__version__.split(".")[0])
Builder, OnnxParser, Runtime = trt.Builder, trt.OnnxParser, trt.Runtime  # the real ones, before any patch
CODE = [*sorted((REPO_ROOT / "edge_asr" / "trt").glob("*.py")), REPO_ROOT / "edge_asr" / "whisper" / "trt_graphs.py"]
FAKE = REPO_ROOT / "tests" / "fakes" / "tensorrt" / "__init__.py"


# -- the real signatures -----------------------------------------------------------------------


def _split(params: str) -> list[str]:
    """Split a pybind11 parameter list at top-level commas."""
    parts, depth, current = [], 0, ""
    for char in params:
        depth += char in "[(<"
        depth -= char in "])>"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()] if current.strip() else parts


def signatures(cls: type, name: str) -> list[list[tuple[str, bool]]]:
    """Each overload of ``cls.name`` as [(parameter, has a default)], without ``self``."""
    doc = getattr(cls, name).__doc__ or ""
    found = []
    for params in re.findall(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) -> ", doc, re.M):
        parsed = [(p.split(":")[0].strip(), "=" in p) for p in _split(params)]
        found.append([p for p in parsed if p[0] != "self"])
    return found


def check_call(cls: type, name: str, args: tuple, kwargs: dict) -> None:
    overloads = signatures(cls, name)
    assert overloads, f"{cls.__name__}.{name} has no signature in its docstring"
    for params in overloads:
        names = [p for p, _ in params]
        if len(args) > len(names) or any(k not in names[len(args) :] for k in kwargs):
            continue
        given = set(names[: len(args)]) | set(kwargs)
        if all(p in given for p, has_default in params if not has_default):
            return
    raise TypeError(f"{cls.__name__}.{name}{args!r}{kwargs!r} matches no signature of TensorRT {trt.__version__}")


def real(cls: type, **attributes: Any) -> Any:
    """An autospec of the real ``cls`` (names it lacks raise AttributeError) whose methods check
    their arguments against the real signatures; ``attributes`` set on it."""
    instance = mock.create_autospec(cls, instance=True, spec_set=True)
    for name, member in inspect.getmembers(cls):
        if not name.startswith("_") and inspect.isroutine(member):

            def checked(*args: Any, _name: str = name, **kwargs: Any) -> Any:
                check_call(cls, _name, args, kwargs)
                return mock.DEFAULT

            getattr(instance, name).side_effect = checked
    for name, value in attributes.items():
        setattr(instance, name, value)
    return instance


def answer(instance: Any, method: str, fn: Any) -> None:
    """Make ``instance.method`` answer with ``fn``, its calls still checked against the real signature."""
    cls = instance._spec_class

    def checked(*args: Any, **kwargs: Any) -> Any:
        check_call(cls, method, args, kwargs)
        return fn(*args, **kwargs)

    getattr(instance, method).side_effect = checked


def constructor(cls: type, make: Any) -> Any:
    """A stand-in for ``cls(...)`` that checks the arguments against the real constructor."""

    def construct(*args: Any, **kwargs: Any) -> Any:
        check_call(cls, "__init__", args, kwargs)
        return make()

    return construct


class Handle:
    """What the code holds instead of a mock, as a pybind object holds its C++ object: gone, and its
    deletion journaled, the moment the code drops its last reference (mocks themselves sit in
    reference cycles and would wait for the garbage collector)."""

    __slots__ = ("__weakref__", "_mock")

    def __init__(self, target: Any, what: str):
        object.__setattr__(self, "_mock", target)
        weakref.finalize(self, cuda._journal, f"delete {what}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mock, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._mock, name, value)


# -- names ---------------------------------------------------------------------------------------


def test_the_stubbed_libraries_refuse_like_without_a_gpu():
    with pytest.raises(TypeError, match="nullptr"):
        trt.Builder(trt.Logger(trt.Logger.WARNING))
    with pytest.raises(TypeError, match="nullptr"):
        trt.Runtime(trt.Logger(trt.Logger.WARNING))


def test_every_tensorrt_name_the_code_uses_exists_in_this_version():
    used = set()
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                chain, inner = [node.attr], node.value
                while isinstance(inner, ast.Attribute):
                    chain.insert(0, inner.attr)
                    inner = inner.value
                if isinstance(inner, ast.Name) and inner.id == "trt":
                    used.add(".".join(chain))
    assert {"Builder", "Runtime", "OnnxParser", "nptype", "TensorIOMode.INPUT"} <= used
    for dotted in sorted(used):
        target: Any = trt
        for part in dotted.split("."):
            target = getattr(target, part, None)
        assert target is not None, f"trt.{dotted} does not exist in TensorRT {trt.__version__}"


def _fake_module() -> Any:
    os.environ["FAKE_TENSORRT_VERSION"] = trt.__version__
    spec = importlib.util.spec_from_file_location("fake_tensorrt", FAKE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fake_tensorrt_mirrors_this_version():
    fake = _fake_module()
    assert fake.__version__ == trt.__version__
    for name, value in vars(fake).items():
        if name.startswith("_") or inspect.ismodule(value) or name in ("annotations", "Any", "Path"):
            continue
        assert hasattr(trt, name), f"the fake has trt.{name}, which TensorRT {trt.__version__} lacks"
        if not inspect.isclass(value):
            continue
        real_cls = getattr(trt, name)
        for member, attribute in vars(value).items():
            if member.startswith("_") and member != "__init__":
                continue
            if member == "__init__" and not signatures(real_cls, "__init__"):
                continue  # TensorRT makes these itself (no Python constructor); the fake's is its own
            assert hasattr(real_cls, member), f"the fake has {name}.{member}; TensorRT {trt.__version__} has not"
            if inspect.isfunction(attribute):
                # The same parameter names, leaving out only real ones that have defaults.
                params = [p for p in inspect.signature(attribute).parameters if p != "self"]
                overloads = signatures(real_cls, member)
                assert any(
                    [p for p, _ in o[: len(params)]] == params and all(d for _, d in o[len(params) :])
                    for o in overloads
                ), f"fake {name}.{member}{params} vs real {overloads}"
    # Public attributes the fake's objects set on themselves are the real classes' too.
    for node in ast.walk(ast.parse(FAKE.read_text())):
        if isinstance(node, ast.ClassDef):
            for target in ast.walk(node):
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.ctx, ast.Store)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                    and not target.attr.startswith("_")
                ):
                    assert hasattr(getattr(trt, node.name), target.attr), f"fake {node.name}.{target.attr}"


# -- the builder ---------------------------------------------------------------------------------

ONNX_INPUTS = {  # what TensorRT's parser reports for the Whisper tiny graphs (-1: dynamic)
    "encoder.onnx": {"mel": (-1, 80, 3000)},
    "decoder.onnx": {
        "tokens": (-1, -1),
        "self_k": (4, -1, -1, 384),
        "self_v": (4, -1, -1, 384),
        **{f"cross_{kv}_{i}": (1, 6, 64, 1500) if kv == "k" else (1, 6, 1500, 64) for i in range(4) for kv in "kv"},
    },
}


@pytest.fixture
def whisper_dir(tmp_path: Path) -> Path:
    """A prepared-looking Whisper tiny folder (the parser is an autospec: the ONNX bytes are not read)."""
    directory = tmp_path / "models" / "whisper-tiny-en"
    directory.mkdir(parents=True)
    for name in ("encoder.onnx", "decoder.onnx", "decoder-cpu.onnx", "tokenizer.json"):
        (directory / name).write_bytes(name.encode())
    (directory / "whisper.json").write_text(json.dumps({"n_text_ctx": 448, "n_layers": 4}))
    return directory


def patch_builder(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """trt.Builder and trt.OnnxParser replaced by checked autospecs; what they made, by kind."""
    made: dict[str, list[Any]] = {"builder": [], "network": [], "config": [], "profile": []}

    def network() -> Any:
        net = real(trt.INetworkDefinition)
        made["network"].append(net)
        return net

    def config() -> Any:
        cfg = real(trt.IBuilderConfig)
        cfg.get_timing_cache.return_value = real(trt.ITimingCache)
        cfg.get_timing_cache.return_value.serialize.return_value = b"timing-cache"
        made["config"].append(cfg)
        return cfg

    def profile() -> Any:
        made["profile"].append(real(trt.IOptimizationProfile))
        return made["profile"][-1]

    def builder() -> Any:
        b = real(Builder)
        answer(b, "create_network", lambda *a, **k: network())
        answer(b, "create_builder_config", config)
        answer(b, "create_optimization_profile", profile)
        b.build_serialized_network.return_value = b"serialized-plan"
        made["builder"].append(b)
        return b

    def parser() -> Any:
        p = real(OnnxParser)

        def parse(model: str) -> bool:
            inputs = ONNX_INPUTS[Path(model).name]
            tensors = [real(trt.ITensor, name=n, shape=s) for n, s in inputs.items()]
            net = made["network"][-1]
            net.num_inputs = len(tensors)
            answer(net, "get_input", lambda i: tensors[i])
            return True

        answer(p, "parse_from_file", parse)
        return p

    monkeypatch.setattr(trt, "Builder", constructor(Builder, builder))
    monkeypatch.setattr(trt, "OnnxParser", constructor(OnnxParser, parser))
    return made


def built_engine() -> Any:
    """What the builder's check of a built engine deserialises: its device memory, by the name
    this version reads (``device_memory_size_v2`` from 10.1; ``device_memory_size`` before)."""
    sizes = {"device_memory_size_v2": 24 << 20} if MAJOR >= 10 else {"device_memory_size": 24 << 20}
    return Handle(real(trt.ICudaEngine, **sizes), "built engine")


def test_build_engines_against_the_real_classes(monkeypatch, whisper_dir: Path):
    made = patch_builder(monkeypatch)
    runtimes = []

    def runtime() -> Any:
        r = real(Runtime)
        answer(r, "deserialize_cuda_engine", lambda data: built_engine())
        runtimes.append(r)
        return Handle(r, "runtime")

    monkeypatch.setattr(trt, "Runtime", constructor(Runtime, runtime))
    mark = len(cuda.JOURNAL)
    config = load_config(environ={"EDGE_ASR_MODELS_DIR": str(whisper_dir.parent)})
    (built,) = build_engines(config, ["whisper-tiny-en"], precision="fp16", workspace=512 << 20)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if MAJOR < 10 else 0
    for network_call in [c for c in made["builder"][0].mock_calls if c[0] == "create_network"]:
        assert network_call.args == (flags,)
    for cfg in made["config"]:
        cfg.set_memory_pool_limit.assert_called_once_with(trt.MemoryPoolType.WORKSPACE, 512 << 20)
        cfg.set_flag.assert_called_once_with(trt.BuilderFlag.FP16)
        cfg.create_timing_cache.assert_called_once()
        cfg.set_timing_cache.assert_called_once()
    encoder_profile, steps_profile, prompt_profile = made["profile"]
    encoder_profile.set_shape.assert_called_once_with("mel", (1, 80, 3000), (1, 80, 3000), (1, 80, 3000))
    encoder_config, decoder_config = made["config"]
    encoder_config.add_optimization_profile.assert_called_once_with(encoder_profile)
    assert [c.args for c in decoder_config.add_optimization_profile.mock_calls] == [(steps_profile,), (prompt_profile,)]
    steps = {c.args[0]: c.args[1:] for c in steps_profile.set_shape.mock_calls}
    assert steps["self_k"] == ((4, 1, 1, 384), (4, 5, 112, 384), (4, 5, 447, 384))
    assert steps["tokens"] == ((1, 1), (5, 1), (5, 1)) and len(steps) == 11
    prompt = {c.args[0]: c.args[1:] for c in prompt_profile.set_shape.mock_calls}
    assert prompt["self_k"] == ((4, 1, 0, 384), (4, 1, 0, 384), (4, 1, 447, 384))
    assert prompt["tokens"] == ((1, 1), (1, 3), (1, 448)) and len(prompt) == 11
    assert (built / "decoder.engine").read_bytes() == b"serialized-plan"
    record = json.loads((built / ENGINE_JSON).read_text())
    assert record["device"]["tensorrt"] == trt.__version__
    assert [e["device_memory_bytes"] for e in record["engines"].values()] == [24 << 20] * 2
    # Each engine was deserialised once, in the primary context, and gone before it was detached.
    assert [c[0] for c in runtimes[0].mock_calls] == ["deserialize_cuda_engine"] and len(runtimes) == 2
    journal = [e[0] for e in cuda.JOURNAL[mark:] if e[0] in ("push", "pop", "detach") or e[0].startswith("delete")]
    assert journal == ["push", *["delete built engine", "delete runtime"] * 2, "pop", "detach"]
    assert (
        config.models_path / ".tensorrt" / f"timing-trt{trt.__version__}-sm87.cache"
    ).read_bytes() == b"timing-cache"


def test_a_failed_parse_is_a_clear_error(monkeypatch, tmp_path: Path, whisper_dir: Path):
    from edge_asr.trt.build import BuildError

    patch_builder(monkeypatch)

    def failing() -> Any:
        p = real(OnnxParser)
        p.parse_from_file.return_value = False
        p.num_errors = 1
        p.get_error.return_value = "Unsupported ONNX opset 99"
        return p

    monkeypatch.setattr(trt, "OnnxParser", constructor(OnnxParser, failing))
    builder = EngineBuilder(trt, "fp32", 1 << 20, tmp_path / "timing.cache")
    with pytest.raises(BuildError, match=r"could not parse encoder\.onnx: Unsupported ONNX opset 99"):
        builder.build(whisper_dir / "encoder.onnx", EngineRecipe("encoder.engine", "encoder.onnx", {}), tmp_path / "e")


# -- the runtime ---------------------------------------------------------------------------------

ENGINE_IO = {  # name -> (mode, dtype, declared shape) of each engine's tensors
    "encoder": {"mel": ("INPUT", trt.float32, (1, 80, 3000))}
    | {f"cross_{kv}_{i}": ("OUTPUT", trt.float32, (1, 6, 64, 1500)) for i in range(4) for kv in "kv"},
    "decoder": {
        "tokens": ("INPUT", trt.int32 if MAJOR < 10 else trt.int64, (-1, -1)),
        "self_k": ("INPUT", trt.float32, (4, -1, -1, 384)),
        "self_v": ("INPUT", trt.float32, (4, -1, -1, 384)),
        **{
            f"cross_{kv}_{i}": ("INPUT", trt.float32, ONNX_INPUTS["decoder.onnx"][f"cross_{kv}_{i}"])
            for i in range(4)
            for kv in "kv"
        },
        "logits": ("OUTPUT", trt.float32, (-1, 51864)),
        "new_self_k": ("OUTPUT", trt.float32, (4, -1, -1, 384)),
        "new_self_v": ("OUTPUT", trt.float32, (4, -1, -1, 384)),
    },
}


PROFILES = {  # each engine's profiles: input -> (min, opt, max), as engine_recipes makes them for tiny
    "encoder": [{"mel": ((1, 80, 3000),) * 3}],
    "decoder": [
        {
            "tokens": ((1, 1), (5, 1), (5, 1)),
            "self_k": ((4, 1, 1, 384), (4, 5, 112, 384), (4, 5, 447, 384)),
            "self_v": ((4, 1, 1, 384), (4, 5, 112, 384), (4, 5, 447, 384)),
        },
        {
            "tokens": ((1, 1), (1, 3), (1, 448)),
            "self_k": ((4, 1, 0, 384), (4, 1, 0, 384), (4, 1, 447, 384)),
            "self_v": ((4, 1, 0, 384), (4, 1, 0, 384), (4, 1, 447, 384)),
        },
    ],
}


def profile_shape(engine: str, name: str, index: int) -> list[tuple[int, ...]]:
    shape = ENGINE_IO[engine][name][2]
    return list(PROFILES[engine][index].get(name, (shape,) * 3))


def engine_for(name: str, switches: list[tuple[str, int]]) -> Any:
    io = ENGINE_IO[name]
    names = list(io)
    engine = real(trt.ICudaEngine, num_io_tensors=len(names), num_optimization_profiles=len(PROFILES[name]))
    answer(engine, "get_tensor_profile_shape", lambda n, i: profile_shape(name, n, i))
    answer(engine, "get_tensor_name", lambda i: names[i])
    answer(engine, "get_tensor_mode", lambda n: getattr(trt.TensorIOMode, io[n][0]))
    answer(engine, "get_tensor_dtype", lambda n: io[n][1])
    answer(engine, "get_tensor_shape", lambda n: io[n][2])

    def context() -> Any:
        shapes: dict[str, tuple] = {}
        bound: dict[str, int] = {}
        ctx = real(trt.IExecutionContext)
        answer(ctx, "set_input_shape", lambda n, s: shapes.update({n: tuple(s)}) or True)
        answer(ctx, "get_tensor_shape", lambda n: output_shape(n, shapes))
        answer(ctx, "set_tensor_address", lambda n, a: bound.update({n: a}) or True)
        answer(ctx, "set_optimization_profile_async", lambda i, stream: switches.append((name, i)) or True)

        def execute(stream_handle: int) -> bool:
            """Runs only with every tensor bound, and each output where no other tensor is."""
            outputs = [bound[n] for n in names if io[n][0] == "OUTPUT"]
            inputs = {bound[n] for n in names if io[n][0] == "INPUT"}
            return set(bound) == set(names) and len(set(outputs)) == len(outputs) and not inputs & set(outputs)

        answer(ctx, "execute_async_v3", execute)
        return Handle(ctx, f"{name} context")

    answer(engine, "create_execution_context", lambda *a: context())
    return Handle(engine, f"{name} engine")


def output_shape(name: str, inputs: dict[str, tuple]) -> tuple[int, ...]:
    if name.startswith("cross_"):
        return (1, 6, 64, 1500) if "_k_" in name else (1, 6, 1500, 64)
    if name == "logits":
        return (inputs["tokens"][0], 51864)
    layers, batch, past, width = inputs["self_k"]
    return (layers, batch, past + inputs["tokens"][1], width)


def test_whisper_graphs_on_the_real_classes_release_in_order(monkeypatch, tmp_path: Path):
    switches: list[tuple[str, int]] = []

    def runtime() -> Any:
        r = real(Runtime)
        answer(r, "deserialize_cuda_engine", lambda data: engine_for(bytes(data).decode(), switches))
        return Handle(r, "runtime")

    monkeypatch.setattr(trt, "Runtime", constructor(Runtime, runtime))
    for name in ("encoder", "decoder"):
        (tmp_path / f"{name}.engine").write_text(name)
    engine_set = EngineSet(
        tmp_path,
        {"precision": "fp16", "device": {"tensorrt": trt.__version__, "gpu": "Orin", "compute_capability": "8.7"}},
    )
    graphs = TensorRTWhisperGraphs(engine_set)
    encoded = graphs.encode(np.zeros((1, 80, 3000), np.float32))
    logits, first = graphs.decode(np.array([[50257, 50362]], np.int64), None, encoded)
    assert logits.shape == (1, 51864) and first.k.shape == (4, 1, 2, 384) and first.pair == 0
    logits, cache = graphs.decode(np.array([[1000]], np.int64), first, encoded)
    assert cache.k.shape == (4, 1, 3, 384) and cache.pair == 1
    # The cache alternates between two buffer pairs: a step never writes where it reads.
    assert len({first.k.pointer, first.v.pointer, cache.k.pointer, cache.v.pointer}) == 4
    beams = graphs.reorder(cache, [0, 0, 0])  # three beams from one row: gathered into the other pair
    assert beams.k.shape == (4, 3, 3, 384) and beams.pair == 0 and beams.k.pointer != cache.k.pointer
    logits, beams = graphs.decode(np.array([[1], [2], [3]], np.int64), beams, encoded)
    assert logits.shape == (3, 51864) and beams.k.shape == (4, 3, 4, 384) and beams.pair == 1
    # The prompt ran in the decoder's prompt profile, the steps in its steps profile: one switch each.
    assert switches == [("decoder", 1), ("decoder", 0)] and graphs.max_batch == 5
    assert graphs.session["decoder"].dtypes["tokens"] == (np.int32 if MAJOR < 10 else np.int64)
    mark = len(cuda.JOURNAL)
    report = graphs.release()
    del graphs, encoded, cache
    order = [
        e[0]
        for e in cuda.JOURNAL[mark:]
        if e[0] in ("synchronize", "free", "detach", "pop") or e[0].startswith(("delete", "destroy"))
    ]
    assert report["steps"][0]["step"] == "synchronize stream"
    deletions = [e for e in order if e.startswith(("delete", "destroy"))]
    assert deletions == [
        "delete encoder context",
        "delete decoder context",
        "delete encoder engine",
        "delete decoder engine",
        "delete runtime",
        "destroy stream",
    ]
    assert order.index("synchronize") < order.index("free") < order.index("delete encoder context")
    assert order[-2:] == ["pop", "detach"]
    assert cuda.VIOLATIONS == [] and cuda.allocated_bytes() == 0 and cuda.retained_contexts() == 0


def test_engine_recipes_cover_every_dynamic_axis(whisper_dir: Path):
    from edge_asr.trt.build import profile_shapes

    for recipe in engine_recipes(whisper_dir, 5):
        for axes in recipe.profiles:
            for name, shape in ONNX_INPUTS[recipe.onnx].items():
                profile_shapes(name, shape, axes.get(name, {}))
