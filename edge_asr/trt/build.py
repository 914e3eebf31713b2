"""Building TensorRT engines from a prepared model's ONNX files, for the GPU this runs on
(``build_engines.py``, ``edge-asr engines build``).

Each engine gets the optimisation profiles its model family's recipe gives, each covering every
dynamic axis of its inputs (``edge_asr.whisper.trt_graphs.engine_recipes``). Once built, an engine
is deserialised once to read the device memory its execution context will take (the largest of its
profiles), which ``engine.json`` and ``edge-asr engines list`` show. The timing cache is kept
per TensorRT version and GPU and reused, so a rebuild skips the kernel timing it already did. A
set is built in a temporary folder and renamed into place with its ``engine.json`` only when
every engine is there, as ``models prepare`` does with models.

Versions: ``EXPLICIT_BATCH`` is required on TensorRT 8.x, deprecated (implied) on 10.x and gone
in 11; ``build_engine`` and ``max_workspace_size`` are gone in 10.x, so the builder uses
``build_serialized_network`` and ``set_memory_pool_limit``, which 8.5 to 10.x all have.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_asr.config import Config
from edge_asr.fsutil import atomic_write_bytes
from edge_asr.manifest import ModelSpec, load_manifest
from edge_asr.settings import MAX_BEAM
from edge_asr.steps import Job, Steps
from edge_asr.trt import TensorRTUnavailable, major_version, tensorrt
from edge_asr.trt.cuda import CudaDevice
from edge_asr.trt.engine_set import ENGINE_JSON, ENGINES_DIR, DeviceInfo, EngineSet, file_digest, fingerprint
from edge_asr.trt.recipe import EngineRecipe, Range
from edge_asr.units import parse_size

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
DEFAULT_WORKSPACE = "1GiB"
DEFAULT_MAX_BATCH = MAX_BEAM  # the beams (or best-of samples) of a window decode as one batch


class BuildError(RuntimeError):
    """An engine could not be built; the message says which and why."""


def network_flags(trt: ModuleType) -> int:
    if major_version(trt) < 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def profile_shapes(name: str, shape: tuple[int, ...], axes: dict[int, Range]) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) shapes of input ``name``: its static dimensions, and the recipe's range
    where the network has -1."""
    shapes: list[list[int]] = [[], [], []]
    for axis, size in enumerate(shape):
        if size >= 0:
            bounds: Range = (size, size, size)
        elif axis in axes:
            bounds = axes[axis]
        else:
            raise BuildError(f"input {name!r} has a dynamic axis {axis} the recipe gives no range for")
        for i in range(3):
            shapes[i].append(bounds[i])
    return tuple(tuple(s) for s in shapes)


class EngineBuilder:
    """A TensorRT builder for this GPU, at one precision and workspace, with a timing cache."""

    def __init__(self, trt: ModuleType, precision: str, workspace: int, timing_cache: Path):
        self.trt, self.precision, self.workspace, self.timing_cache = trt, precision, workspace, timing_cache
        self.logger = trt.Logger(trt.Logger.WARNING)
        try:
            self.builder = trt.Builder(self.logger)
        except TypeError as e:  # the library returned no builder: what it does without a usable GPU
            raise TensorRTUnavailable(f"TensorRT could not create a builder ({e}): no usable GPU?") from None

    def build(self, onnx: Path, recipe: EngineRecipe, out: Path) -> dict[str, Any]:
        """Build ``recipe`` from ``onnx`` into ``out``; return the profiles it was built with and
        the device memory its execution context takes."""
        trt = self.trt
        network = self.builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BuildError(f"TensorRT could not parse {onnx.name}: {errors}")
        config = self.builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace)
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        cache_data = self.timing_cache.read_bytes() if self.timing_cache.is_file() else b""
        if not config.set_timing_cache(config.create_timing_cache(cache_data), False):
            log.warning("TensorRT refused the timing cache %s; building without it", self.timing_cache)
        profiles = []
        for axes in recipe.profiles:
            profile, shapes_by_input = self.builder.create_optimization_profile(), {}
            for i in range(network.num_inputs):
                tensor = network.get_input(i)
                shapes = profile_shapes(tensor.name, tuple(tensor.shape), axes.get(tensor.name, {}))
                profile.set_shape(tensor.name, *shapes)
                shapes_by_input[tensor.name] = dict(zip(("min", "opt", "max"), map(list, shapes), strict=True))
            config.add_optimization_profile(profile)
            profiles.append(shapes_by_input)
        serialized = self.builder.build_serialized_network(network, config)
        if serialized is None:
            raise BuildError(f"TensorRT could not build {recipe.engine} (its log above says why)")
        out.write_bytes(serialized)
        atomic_write_bytes(self.timing_cache, config.get_timing_cache().serialize())
        del parser, network, config  # before the engine is deserialised: less at once in memory
        return {"profiles": profiles, "device_memory_bytes": self.device_memory(serialized)}

    def device_memory(self, serialized: Any) -> int:
        """The device memory an execution context of this engine allocates (its activations: the
        largest of its profiles'), read from the engine deserialised once."""
        runtime = self.trt.Runtime(self.logger)
        try:
            engine = runtime.deserialize_cuda_engine(serialized)
            if engine is None:
                raise BuildError("TensorRT could not deserialise the engine it had just built")
            try:
                size = getattr(engine, "device_memory_size_v2", None)  # 10.1 on; device_memory_size before
                return int(engine.device_memory_size if size is None else size)
            finally:
                del engine  # before its runtime
        finally:
            del runtime


def engine_recipes(spec: ModelSpec, max_batch: int) -> list[EngineRecipe]:
    """What to build for ``spec``'s family; only Whisper has a TensorRT path (the LLM stays on
    onnxruntime-genai: see docs/jetson.md)."""
    if spec.family == "whisper":
        from edge_asr.whisper.trt_graphs import engine_recipes as whisper_recipes

        return whisper_recipes(spec.directory, max_batch)
    raise BuildError(f"model {spec.id!r} ({spec.family}) has no TensorRT engines: only Whisper models do")


def build_engines(
    config: Config,
    model_ids: list[str] | None = None,
    precision: str = "fp16",
    workspace: int = parse_size(DEFAULT_WORKSPACE),
    max_batch: int = DEFAULT_MAX_BATCH,
    force: bool = False,
) -> list[Path]:
    """Build the engine sets of ``model_ids`` (default: every prepared model whose manifest
    prefers TensorRT) for this device; return their folders. Nothing is written before the
    TensorRT, pycuda and GPU checks pass."""
    specs = load_manifest(config)
    unknown = sorted(set(model_ids or ()) - specs.keys())
    if unknown:
        raise BuildError(f"unknown model(s): {', '.join(unknown)}")
    preferring = [s for s in specs.values() if s.runtime == "tensorrt" and s.present]
    chosen = [specs[m] for m in model_ids] if model_ids else preferring
    for spec in chosen:
        if not spec.present:
            raise BuildError(f"model {spec.id!r} is not prepared (missing {', '.join(spec.missing_files)})")
    trt = tensorrt()
    device = DeviceInfo.detect()
    slug = f"trt{device.tensorrt}-sm{device.compute_capability.replace('.', '')}"
    timing_cache = config.models_path / ".tensorrt" / f"timing-{slug}.cache"
    gpu = CudaDevice()
    try:
        with gpu.active():  # the primary context, which TensorRT's own allocations use
            try:
                builder = EngineBuilder(trt, precision, workspace, timing_cache)
                log.info("building for %s, %s, workspace %d MiB", device.describe(), precision, workspace >> 20)
                return [_build_set(builder, device, spec, engine_recipes(spec, max_batch), force) for spec in chosen]
            except BaseException as e:
                # The failed build's frames hold TensorRT objects: gone now, while the context is current.
                traceback.clear_frames(e.__traceback__)
                raise
    finally:
        gpu.detach()


def _build_set(
    builder: EngineBuilder, device: DeviceInfo, spec: ModelSpec, recipes: list[EngineRecipe], force: bool
) -> Path:
    onnx = {r.onnx: file_digest(spec.directory / r.onnx) for r in recipes}
    key = fingerprint(device, builder.precision, onnx, {r.engine: r.profiles for r in recipes})
    root = spec.directory / ENGINES_DIR
    final = root / key
    if not force and (final / ENGINE_JSON).is_file() and not EngineSet.read(final).mismatches(device, spec.directory):
        log.info("[%s] up to date: %s", spec.id, final)
        return final
    root.mkdir(exist_ok=True)
    start = time.monotonic()
    engines: dict[str, Any] = {}
    step = Steps(Job(spec.id, len(recipes), BuildError))
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f".tmp-{key}-", dir=root) as tmp:
        out = Path(tmp) / "set"
        out.mkdir()
        for recipe in recipes:

            def build(recipe: EngineRecipe = recipe) -> None:
                began = time.monotonic()
                made = builder.build(spec.directory / recipe.onnx, recipe, out / recipe.engine)
                engines[recipe.engine] = {
                    "onnx": recipe.onnx,
                    **made,
                    "bytes": (out / recipe.engine).stat().st_size,
                    "build_seconds": round(time.monotonic() - began, 1),
                }

            step(f"{recipe.engine} from {recipe.onnx} ({builder.precision})", build)
        record = {
            "model": spec.id,
            "fingerprint": key,
            "device": {"tensorrt": device.tensorrt, "gpu": device.gpu, "compute_capability": device.compute_capability},
            "precision": builder.precision,
            "workspace_bytes": builder.workspace,
            "onnx": onnx,
            "engines": engines,
            "built_at": time.time(),
            "build_seconds": round(time.monotonic() - start, 1),
        }
        (out / ENGINE_JSON).write_text(json.dumps(record, indent=1))
        if final.exists():
            final.rename(Path(tmp) / "old")  # removed with the temporary folder
        out.rename(final)
    log.info("[%s] engines built in %.1f s -> %s", spec.id, time.monotonic() - start, final)
    return final
