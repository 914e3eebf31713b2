"""``edge-asr check``: the unit checklist (docs/jetson.md) as one command, for the person who
installs a unit, run in the service's environment.

Each item passes, fails, or is skipped with what cannot be checked here (TensorRT and CUDA off a
Jetson). In order: the versions of what the service runs on; the memory source and a reading;
the state directory; each model of the manifest, prepared, and for a model preferring TensorRT
whether an engine set fits this GPU; then, unless ``quick``, each model loaded in a worker as the
service loads it, a sample run through it on the runtime it chose, and unloaded, with the memory
(system, and GPU where TensorRT reports it) before, loaded and after. A voice speaks the sample
the speech models transcribe, so the check needs nothing from the network.

Run it with the service stopped: its loads take the memory the service would use.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_asr.config import Config
from edge_asr.manifest import ModelSpec, load_manifest
from edge_asr.memory import MemorySource, create_memory_source
from edge_asr.units import format_size

Status = Literal["pass", "fail", "skip"]
L4T_RELEASE = Path("/etc/nv_tegra_release")
SAMPLE_TEXT = "The pump in room four is running and the valve is closed."
SAMPLE_HEARD = 0.75  # of the sample's words the speech models must hear in the voice's reading
UNLOAD_TIMEOUT = 60.0


@dataclass
class Item:
    name: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


class Skip(Exception):
    """This item cannot be checked here; the message says why."""


class Failed(Exception):
    """This item failed; the message says why."""


@dataclass
class Checklist:
    report: Callable[[Item], None] = lambda item: None  # sees each item as it is done
    items: list[Item] = field(default_factory=list)

    def run(self, name: str, check: Callable[[], tuple[str, dict[str, Any]] | str]) -> Item:
        """Run ``check``, which returns a detail (and data) when the item passes and raises
        ``Skip`` or ``Failed``; any other exception fails the item too, with what it said."""
        try:
            result = check()
            detail, data = result if isinstance(result, tuple) else (result, {})
            item = Item(name, "pass", detail, data)
        except Skip as e:
            item = Item(name, "skip", str(e))
        except Exception as e:
            item = Item(name, "fail", str(e) if isinstance(e, Failed) else f"{type(e).__name__}: {e}")
        self.items.append(item)
        self.report(item)
        return item

    @property
    def ok(self) -> bool:
        return all(item.status != "fail" for item in self.items)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "items": [asdict(item) for item in self.items]}


def run_checks(config: Config, quick: bool = False, report: Callable[[Item], None] = lambda item: None) -> Checklist:
    """The whole checklist; ``report`` sees each item as it is done."""
    checks = Checklist(report)
    run = checks.run
    l4t = l4t_release()
    on_jetson = l4t is not None
    run("python", python_version)
    run("jetpack", lambda: jetpack(l4t))
    tensorrt = run("tensorrt", lambda: tensorrt_version(on_jetson))
    run("pycuda", lambda: cuda_device(on_jetson))
    run("onnxruntime", lambda: onnxruntime_providers(on_jetson))
    run("onnxruntime-genai", lambda: package_version("onnxruntime_genai", "onnxruntime-genai"))
    run("llama.cpp", lambda: llama_cpp_backend(on_jetson))
    run("piper", lambda: package_version("piper", "piper-tts"))
    source = create_memory_source(config)
    try:
        run("memory source", lambda: memory_reading(source, config.memory_source))
        run("state directory", lambda: writable(config.state_dir))
        specs: list[ModelSpec] = []
        run("manifest", lambda: manifest(config, specs))
        prepared = [s for s in specs if run(f"model {s.id}", lambda s=s: model_files(s, tensorrt)).status == "pass"]
        if not quick:
            sample: dict[str, Any] = {}
            for spec in sorted(prepared, key=lambda s: s.task != "tts"):  # a voice first: it speaks the sample
                if spec.task in SAMPLES:
                    run(f"load {spec.id}", lambda spec=spec: load_and_run(spec, config, source, sample))
    finally:
        source.stop()
    return checks


# -- versions -------------------------------------------------------------------------------


def l4t_release() -> str | None:
    """The L4T release of a Jetson ("36.4.0"), None elsewhere."""
    if not L4T_RELEASE.is_file():
        return None
    found = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", L4T_RELEASE.read_text())
    return f"{found[1]}.{found[2]}" if found else "unknown"


def python_version() -> str:
    """Which Python, and so which environment (JetPack 6's is 3.10; the package needs no older)."""
    return f"Python {platform.python_version()} ({sys.executable})"


def jetpack(l4t: str | None) -> str:
    if l4t is None:
        raise Skip("not a Jetson (no /etc/nv_tegra_release)")
    major = l4t.split(".")[0]
    if major == "35":
        raise Failed(f"L4T {l4t} is JetPack 5, whose Python (3.8) edge-asr does not run on")
    return f"L4T {l4t} (JetPack {'6' if major == '36' else '7' if major == '38' else '?'})"


def absent(why: Exception, on_jetson: bool, off_jetson: str) -> Exception:
    """What a missing GPU library is: a failure on a Jetson, elsewhere not checkable here."""
    return Failed(str(why)) if on_jetson else Skip(f"{off_jetson}: {why}")


def tensorrt_version(on_jetson: bool) -> str:
    from edge_asr.trt import TensorRTUnavailable, tensorrt

    try:
        version = tensorrt().__version__
    except TensorRTUnavailable as e:
        off_jetson = "not installed (not a Jetson): models that prefer TensorRT serve on ONNX Runtime"
        raise absent(e, on_jetson, off_jetson) from None
    major, minor = (int(part) for part in version.split(".")[:2])
    if (major, minor) < (8, 6):
        raise Failed(f"TensorRT {version}: edge-asr supports 8.6 (JetPack 6.0) and 10.x")
    return f"TensorRT {version}"


def cuda_device(on_jetson: bool) -> tuple[str, dict[str, Any]]:
    from edge_asr.trt import TensorRTUnavailable, cuda_driver

    try:
        cuda = cuda_driver()
    except TensorRTUnavailable as e:
        raise absent(e, on_jetson, "no CUDA here (not a Jetson)") from None
    import pycuda

    device = cuda.Device(0)
    driver = cuda.get_driver_version()
    data = {
        "pycuda": pycuda.VERSION_TEXT,
        "cuda_driver": f"{driver // 1000}.{driver % 1000 // 10}",
        "gpu": device.name(),
        "compute_capability": "{}.{}".format(*device.compute_capability()),
        "gpu_total_bytes": int(device.total_memory()),
    }
    return (
        f"pycuda {data['pycuda']}, CUDA driver {data['cuda_driver']}, {data['gpu']} (sm {data['compute_capability']})",
        data,
    )


def onnxruntime_providers(on_jetson: bool) -> tuple[str, dict[str, Any]]:
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    if on_jetson and "CUDAExecutionProvider" not in providers:
        raise Failed(
            f"ONNX Runtime {onnxruntime.__version__} has no CUDA provider ({providers}): install the Jetson wheel"
        )
    return f"ONNX Runtime {onnxruntime.__version__}: {', '.join(providers)}", {"providers": providers}


def llama_cpp_backend(on_jetson: bool) -> tuple[str, dict[str, Any]]:
    import llama_cpp

    gpu = llama_cpp.llama_supports_gpu_offload()
    if on_jetson and not gpu:
        raise Failed(
            f"llama-cpp-python {llama_cpp.__version__} was built without CUDA: reinstall it with "
            'CMAKE_ARGS="-DGGML_CUDA=on" (docs/jetson.md)'
        )
    return f"llama-cpp-python {llama_cpp.__version__}: {'GPU offload' if gpu else 'CPU only'}", {"gpu": gpu}


def package_version(module: str, distribution: str) -> str:
    __import__(module)
    return f"{distribution} {importlib.metadata.version(distribution)}"


# -- the unit -------------------------------------------------------------------------------


def memory_reading(source: MemorySource, configured: str) -> tuple[str, dict[str, Any]]:
    if configured not in ("auto", source.name):  # the service falls back to /proc/meminfo, with a warning
        raise Failed(f"{configured} (memory_source) did not start; the service would read {source.name}")
    reading = source.measure()
    if not 0 < reading.available_bytes <= reading.total_bytes:
        raise Failed(f"{source.name} read {reading.available_bytes} B available of {reading.total_bytes} B")
    detail = f"{source.name}: {format_size(reading.available_bytes)} available of {format_size(reading.total_bytes)}"
    return detail, reading.as_dict()


def writable(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".check-") as f:
        f.write(b"edge-asr check")
        f.flush()
    return str(directory)


def manifest(config: Config, specs: list[ModelSpec]) -> str:
    """The manifest's models, into ``specs``."""
    specs += load_manifest(config).values()
    return f"{len(specs)} models in {config.manifest}"


def model_files(spec: ModelSpec, tensorrt: Item) -> tuple[str, dict[str, Any]]:
    """Prepared, and for a model that prefers TensorRT: the engine set that fits this GPU."""
    from edge_asr.prepare.build import is_prepared

    if not spec.present:
        raise Failed(f"missing {', '.join(spec.missing_files)}: run `edge-asr models prepare {spec.id}`")
    if not is_prepared(spec):
        raise Failed(f"prepared by an older recipe: run `edge-asr models prepare {spec.id}`")
    if spec.runtime != "tensorrt":
        return f"prepared ({spec.runtime})", {}
    if tensorrt.status != "pass":
        return "prepared; prefers TensorRT, which is not here: serves on ONNX Runtime", {}
    from edge_asr.trt import TensorRTUnavailable
    from edge_asr.trt.engine_set import DeviceInfo, select_engine_set

    try:
        found = select_engine_set(spec.directory, DeviceInfo.detect())
    except TensorRTUnavailable as e:
        raise Failed(str(e)) from None
    engines = {name: engine.get("device_memory_bytes") for name, engine in found.record["engines"].items()}
    memory = ", ".join(f"{n} {format_size(b)}" if b is not None else n for n, b in engines.items())
    return f"prepared; {found.describe()} fit (device memory: {memory})", {"engines": found.directory.name}


# -- loading each model ---------------------------------------------------------------------


def load_and_run(spec: ModelSpec, config: Config, source: MemorySource, sample: dict[str, Any]) -> tuple[str, dict]:
    """Load ``spec`` in a worker, run its sample, unload; the memory before, loaded and after."""
    from edge_asr.workers.handle import WorkerHandle

    before = source.measure().available_bytes
    began = time.perf_counter()
    worker = WorkerHandle(spec, config)
    try:
        load_s = time.perf_counter() - began
        result = SAMPLES[spec.task](worker, sample)
        serving = source.measure().available_bytes
    finally:
        released = worker.release(UNLOAD_TIMEOUT)
    after = source.measure().available_bytes
    report = worker.load_report
    memory = {"available_before": before, "available_serving": serving, "available_after": after}
    gpu = {**report.get("gpu", {}), **released.get("gpu", {})}
    failed_steps = [s["step"] for s in released.get("steps", []) if "error" in s]
    if failed_steps or "error" in released or released.get("exit") != "exited with status 0":
        why = ", ".join(failed_steps) or released.get("error") or released.get("exit")
        raise Failed(f"{result}; the unload failed: {why}")
    detail = (
        f"{report.get('runtime', '?')} in {load_s:.1f} s; {result}; the worker held "
        f"{format_size(report['rss_loaded'])} loaded, {format_size(released.get('rss_peak', 0))} at its peak; "
        f"available memory {format_size(before - serving)} less while serving, "
        f"{format_size(before - after)} less after the unload (the system's figures move with all a unit runs)"
    )
    if "free_before_load" in gpu:
        taken = gpu["free_before_load"] - gpu["free_after_load"]
        back = gpu.get("free_after_release", gpu["free_after_load"]) - gpu["free_after_load"]
        detail += f"; GPU: {format_size(taken)} taken, {format_size(back)} back before the context's release"
    return detail, {"runtime": report.get("runtime"), "memory": memory, "gpu": gpu, "exit": released.get("exit")}


def _speak(worker: Any, sample: dict[str, Any]) -> str:
    from edge_asr.workers.protocol import Synthesize

    chunks: list[bytes] = []
    result = _result(worker.run(Synthesize(SAMPLE_TEXT)), lambda part: chunks.append(part["audio"]))
    audio = np.frombuffer(b"".join(chunks), np.int16).astype(np.float32) / 32768
    if not len(audio):
        raise Failed("the voice produced no audio")
    sample["speech"], sample["rate"] = audio, result["sample_rate"]
    return f"spoke {len(audio) / result['sample_rate']:.1f} s of the sample"


def _transcribe(worker: Any, sample: dict[str, Any]) -> str:
    """The voice's reading of the sample, transcribed; without one (no voice prepared, or it
    failed), two seconds of silence, which must come back as no text."""
    from edge_asr.workers.protocol import Transcribe

    if "speech" not in sample:
        text = _result(worker.run(Transcribe(np.zeros(32000, np.float32))))["text"]
        if text.strip():
            raise Failed(f"heard {text!r} in silence")
        return "no voice spoke a sample: two seconds of silence, transcribed as silence"
    text = _result(worker.run(Transcribe(_sample_speech(sample))))["text"]
    words = re.findall(r"[a-z]+", SAMPLE_TEXT.lower())
    heard = set(re.findall(r"[a-z]+", text.lower()))
    share = sum(w in heard for w in words) / len(words)
    if share < SAMPLE_HEARD:
        raise Failed(f"heard {text!r} for {SAMPLE_TEXT!r} ({share:.0%} of the words)")
    return f"heard {share:.0%} of the spoken sample"


def _diarize(worker: Any, sample: dict[str, Any]) -> str:
    """The voice's reading of the sample is one speaker; without one, silence is none."""
    from edge_asr.workers.protocol import Diarize

    spoken = "speech" in sample
    audio = _sample_speech(sample) if spoken else np.zeros(32000, np.float32)
    began = time.perf_counter()
    found = _result(worker.run(Diarize(audio)))
    took = time.perf_counter() - began
    if found["speakers"] != (1 if spoken else 0):
        raise Failed(f"found {found['speakers']} speakers in {'one voice' if spoken else 'silence'}")
    return f"found {'one speaker in the spoken sample' if spoken else 'no speaker in silence'} in {took:.2f} s"


def _sample_speech(sample: dict[str, Any]) -> np.ndarray:
    """The voice's reading of the sample at the 16 kHz the speech models take."""
    import soxr

    return soxr.resample(sample["speech"], sample["rate"], 16000).astype(np.float32)


def _chat(worker: Any, sample: dict[str, Any]) -> str:
    """A story, greedy: its speed, beside another LLM's on the same unit, says which runtime is
    the faster here (docs/llm.md)."""
    from edge_asr.workers.protocol import Chat, ChatOptions

    story = [{"role": "user", "content": "Tell a story about a lighthouse keeper."}]
    began, arrived = time.perf_counter(), []
    result = _result(
        worker.run(Chat(story, ChatOptions(max_tokens=64, temperature=0.0))),
        lambda part: arrived.append(time.perf_counter()),
    )
    if not result["text"].strip():
        raise Failed("the model answered nothing")
    speed = (len(arrived) - 1) / (arrived[-1] - arrived[0]) if len(arrived) > 1 else 0.0
    return (
        f"answered {result['completion_tokens']} tokens: the first after {arrived[0] - began:.2f} s, "
        f"then {speed:.0f} tokens a second"
    )


def _result(run: Generator[Any, None, Any], partial: Callable[[Any], Any] = lambda part: None) -> Any:
    """What a worker call returns, each partial result given to ``partial`` as it comes. The call
    is closed however this ends, so the worker is free for its release."""
    with closing(run):
        while True:
            try:
                partial(next(run))
            except StopIteration as done:
                return done.value


SAMPLES: dict[str, Callable[[Any, dict[str, Any]], str]] = {
    "tts": _speak,
    "asr": _transcribe,
    "llm": _chat,
    "diarization": _diarize,
}
