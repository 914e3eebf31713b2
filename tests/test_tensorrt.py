"""TensorRT engines: build_engines.py, the runtime on pycuda, the ordered destruction, and the
fallback to ONNX Runtime — on the real prepared Whisper model, with the named fakes of
``tensorrt`` and ``pycuda`` (``tests/fakes``; no GPU here) whose engines compute with ONNX Runtime,
so what runs through the TensorRT path is real decoding. The same code against the real TensorRT
bindings: ``test_tensorrt_bindings.py``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_asr.config import Config
from edge_asr.manifest import get_model
from edge_asr.trt import engine_set
from edge_asr.trt.build import BuildError, build_engines, profile_shapes
from edge_asr.trt.cuda import size_class
from edge_asr.trt.engine_set import ENGINE_JSON
from edge_asr.whisper.graphs import OnnxWhisperGraphs, open_graphs
from edge_asr.whisper.model import WhisperModel
from edge_asr.whisper.transcribe import transcribe
from tests.service import Service

REPO_ROOT = Path(__file__).resolve().parent.parent

FAKES = Path(__file__).parent / "fakes"
RELEASE_ORDER = [
    "synchronize stream",
    "free device and host buffers",
    "delete execution contexts",
    "delete engines",
    "delete runtime",
    "destroy stream",
    "read free GPU memory",
    "pop and detach the CUDA context",
]


@pytest.fixture
def models(tmp_path: Path, config: Config) -> Config:
    """A configuration whose models folder holds the prepared Whisper and VAD as hard links, so
    engines are built beside them without touching the shared cache."""
    for model in ("whisper-tiny-en", "silero-vad"):
        source = config.models_path / model
        for file in source.iterdir():
            if file.is_file():
                (tmp_path / "models" / model).mkdir(parents=True, exist_ok=True)
                os.link(file, tmp_path / "models" / model / file.name)
    return replace(config, models_dir=tmp_path / "models")


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch):
    """The fake pycuda driver, with the fake tensorrt importable, for one test (fresh state)."""
    monkeypatch.syspath_prepend(str(FAKES))
    import pycuda.driver as cuda

    yield cuda
    for name in ("tensorrt", "pycuda.driver", "pycuda"):
        sys.modules.pop(name, None)


def whisper_dir(models: Config) -> Path:
    return models.models_path / "whisper-tiny-en"


def journal_since(cuda, mark: int) -> list[str]:
    return [entry[0] for entry in cuda.JOURNAL[mark:]]


# -- plain functions -------------------------------------------------------------------------


def test_size_classes_are_powers_of_two_of_at_least_4_kib():
    assert [size_class(n) for n in (0, 1, 4096, 4097, 1_000_000)] == [4096, 4096, 4096, 8192, 1 << 20]


def test_profile_shapes_fill_dynamic_axes_from_the_recipe():
    assert profile_shapes("self_k", (4, -1, -1, 384), {1: (1, 1, 5), 2: (0, 112, 447)}) == (
        (4, 1, 0, 384),
        (4, 1, 112, 384),
        (4, 5, 447, 384),
    )
    with pytest.raises(BuildError, match="dynamic axis 0 the recipe gives no range for"):
        profile_shapes("mel", (-1, 80, 3000), {})


# -- build_engines.py ------------------------------------------------------------------------


def test_build_records_what_the_engines_were_built_from_and_for(gpu, models: Config):
    (built,) = build_engines(models, ["whisper-tiny-en"])
    record = json.loads((built / ENGINE_JSON).read_text())
    assert built.parent == whisper_dir(models) / "engines" and built.name == record["fingerprint"]
    assert record["device"] == {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
    assert record["precision"] == "fp16" and record["workspace_bytes"] == 1 << 30
    for name in ("encoder.onnx", "decoder.onnx"):
        digest = hashlib.sha256((whisper_dir(models) / name).read_bytes()).hexdigest()
        assert record["onnx"][name]["sha256"] == digest
    decoder = record["engines"]["decoder.engine"]["profiles"]
    assert set(decoder) == {"tokens", "self_k", "self_v"} | {f"cross_{kv}_{i}" for i in range(4) for kv in "kv"}
    assert decoder["self_k"] == {"min": [4, 1, 0, 384], "opt": [4, 1, 112, 384], "max": [4, 5, 447, 384]}
    assert decoder["tokens"]["max"] == [5, 448] and decoder["cross_k_0"]["max"] == [1, 6, 64, 1500]  # one window
    assert record["engines"]["encoder.engine"]["profiles"]["mel"]["max"] == [1, 80, 3000]
    assert sorted(p.name for p in built.iterdir()) == ["decoder.engine", "encoder.engine", ENGINE_JSON]
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no temporary folder left
    # The timing cache is kept (per TensorRT version and GPU) and fed to the next build.
    cache = models.models_path / ".tensorrt" / "timing-trt10.3.0-sm87.cache"
    assert set(json.loads(cache.read_text())) == {"encoder.onnx", "decoder.onnx"}
    # Up to date: nothing is rebuilt; --force rebuilds in place; another precision is another set.
    assert build_engines(models, ["whisper-tiny-en"]) == [built]
    assert json.loads((built / ENGINE_JSON).read_text())["built_at"] == record["built_at"]
    assert build_engines(models, ["whisper-tiny-en"], force=True) == [built]
    assert json.loads((built / ENGINE_JSON).read_text())["built_at"] > record["built_at"]
    (fp32,) = build_engines(models, None, precision="fp32")  # default: the models preferring TensorRT
    assert fp32 != built and json.loads((fp32 / ENGINE_JSON).read_text())["precision"] == "fp32"


def test_only_whisper_has_engines(gpu, config: Config):
    with pytest.raises(BuildError, match="has no TensorRT engines: only Whisper models do"):
        build_engines(config, ["smollm2-135m-instruct"])


def run_build_engines(models: Config, *args: str, fakes: bool, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "EDGE_ASR_MODELS_DIR": str(models.models_path), **env}
    if fakes:
        environ["PYTHONPATH"] = str(FAKES)
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "build_engines.py"), *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_build_engines_py_without_tensorrt_or_gpu_says_why_and_writes_nothing(models: Config):
    helped = run_build_engines(models, "--help", fakes=False)
    assert helped.returncode == 0 and "Usage: build_engines.py [OPTIONS] [MODEL_IDS]" in helped.stdout
    assert all(option in helped.stdout for option in ("--precision [fp16|fp32]", "--workspace", "--force"))
    before = tree(models.models_path)
    no_tensorrt = run_build_engines(models, fakes=False)
    assert no_tensorrt.returncode == 1 and "Traceback" not in no_tensorrt.stderr
    assert "TensorRT's Python bindings are not installed" in no_tensorrt.stderr and "JetPack" in no_tensorrt.stderr
    no_gpu = run_build_engines(models, "whisper-tiny-en", fakes=True, FAKE_CUDA_DEVICES="0")
    assert no_gpu.returncode == 1 and "Error: no CUDA GPU found" in no_gpu.stderr
    assert tree(models.models_path) == before
    built = run_build_engines(models, "--precision", "fp32", "--workspace", "256MiB", fakes=True)
    assert built.returncode == 0, built.stderr
    assert "[whisper-tiny-en] 2/2 decoder.engine from decoder.onnx (fp32) done" in built.stderr
    record = json.loads((Path(built.stdout.strip()) / ENGINE_JSON).read_text())
    assert record["precision"] == "fp32" and record["workspace_bytes"] == 256 << 20


# -- the runtime ------------------------------------------------------------------------------


def test_the_same_decoding_runs_on_tensorrt(gpu, models: Config, vad, speech):
    build_engines(models, ["whisper-tiny-en"])
    spec = get_model(models, "whisper-tiny-en")
    on_tensorrt = WhisperModel.open(spec, models)
    assert on_tensorrt.graphs.runtime == "tensorrt"
    assert on_tensorrt.graphs.reason.startswith("engines ") and "built for Orin" in on_tensorrt.graphs.reason
    on_onnxruntime = WhisperModel(spec.directory, OnnxWhisperGraphs(spec.directory, decoder="decoder.onnx"))
    for clip in ("beckett", "two_cities"):
        expected = transcribe(on_onnxruntime, vad, speech[clip])
        got = transcribe(on_tensorrt, vad, speech[clip])
        assert [(s.tokens, s.start, s.end) for s in got.segments] == [
            (s.tokens, s.start, s.end) for s in expected.segments
        ]
        assert got.text == expected.text and len(got.text) > 40
    # Buffers are reused: once their size classes are reached, decoding allocates nothing.
    steps = []
    decode = on_tensorrt.graphs.decode
    on_tensorrt.graphs.decode = lambda *args: steps.append(1) or decode(*args)
    mark = len(gpu.JOURNAL)
    for clip in ("beckett", "two_cities"):
        transcribe(on_tensorrt, vad, speech[clip])
    assert len(steps) > 150 and journal_since(gpu, mark).count("mem_alloc") == 0
    on_tensorrt.release()
    on_onnxruntime.release()


def test_release_destroys_in_order_and_gives_every_byte_back_over_many_cycles(gpu, models: Config, vad, speech):
    build_engines(models, ["whisper-tiny-en"])
    spec = get_model(models, "whisper-tiny-en")
    for _ in range(10):
        model = WhisperModel.open(spec, models)
        assert transcribe(model, vad, speech["beckett"]).text.startswith("Ever tried")
        release_mark = len(gpu.JOURNAL)
        report = model.release()
        assert [s["step"] for s in report["steps"]] == RELEASE_ORDER
        gpu_memory = report["gpu"]
        assert gpu_memory["free_after_load"] < gpu_memory["free_before_load"] - 100e6  # the engines' weights
        assert gpu_memory["free_after_release"] == gpu_memory["free_before_load"]
        journal = journal_since(gpu, release_mark)
        destroyed = [e for e in journal if e.startswith(("delete", "destroy"))]
        contexts, engines = ["delete execution context"] * 2, ["delete engine"] * 2
        assert destroyed == [*contexts, *engines, "delete runtime", "destroy stream"]
        assert journal[:2] == ["push", "synchronize"] and journal[-2:] == ["pop", "detach"]
        buffers = journal[2 : journal.index("delete execution context")]  # every buffer, device and host
        assert len(buffers) >= 16 and set(buffers) == {"free", "free_host"}
        assert gpu.VIOLATIONS == [] and gpu.allocated_bytes() == 0 and gpu.retained_contexts() == 0


def test_a_load_that_fails_half_way_releases_what_it_made_and_falls_back(gpu, models: Config):
    (built,) = build_engines(models, ["whisper-tiny-en"])
    spec = get_model(models, "whisper-tiny-en")
    (built / "decoder.engine").write_bytes(b"\x00garbage")  # written by another TensorRT, say
    mark = len(gpu.JOURNAL)
    graphs = open_graphs(spec, models)
    assert graphs.runtime == "onnxruntime" and graphs.providers == ["CPUExecutionProvider"]
    assert (
        graphs.reason.startswith("TensorRT not used: TensorRT could not deserialise")
        and "decoder.engine" in graphs.reason
    )
    journal = journal_since(gpu, mark)
    assert [e for e in journal if e.startswith("delete")] == [
        "delete execution context",
        "delete engine",
        "delete runtime",
    ]
    assert journal[-2:] == ["pop", "detach"]
    assert gpu.VIOLATIONS == [] and gpu.allocated_bytes() == 0 and gpu.retained_contexts() == 0
    graphs.release()


def test_out_of_gpu_memory_while_loading_releases_and_falls_back(gpu, models: Config, monkeypatch):
    build_engines(models, ["whisper-tiny-en"])
    # Room for the context, both engines' weights (the fake's are the ONNX files' sizes) and the
    # encoder's activations (8 MiB); not the decoder's.
    weights = sum((whisper_dir(models) / f).stat().st_size for f in ("encoder.onnx", "decoder.onnx"))
    monkeypatch.setenv("FAKE_CUDA_TOTAL", str(gpu.PRIMARY_CONTEXT_BYTES + weights + (12 << 20)))
    graphs = open_graphs(get_model(models, "whisper-tiny-en"), models)
    assert graphs.runtime == "onnxruntime"
    assert "could not create an execution context for decoder.engine (out of GPU memory?)" in graphs.reason
    assert gpu.VIOLATIONS == [] and gpu.allocated_bytes() == 0 and gpu.retained_contexts() == 0
    graphs.release()


def test_engines_built_for_another_device_or_other_onnx_are_refused(gpu, models: Config, monkeypatch):
    spec = get_model(models, "whisper-tiny-en")
    assert open_graphs(spec, models).reason == (
        "TensorRT not used: no TensorRT engines built for whisper-tiny-en: run `python build_engines.py`"
    )
    (built,) = build_engines(models, ["whisper-tiny-en"])
    monkeypatch.setenv("FAKE_CUDA_NAME", "Xavier")
    monkeypatch.setenv("FAKE_CUDA_CC", "7.2")
    graphs = open_graphs(spec, models)
    assert graphs.runtime == "onnxruntime"
    assert (
        f"{built.name}: built for Orin (compute capability 8.7) with TensorRT 10.3.0; this unit has Xavier "
        "(compute capability 7.2) with TensorRT 10.3.0" in graphs.reason
    )
    monkeypatch.delenv("FAKE_CUDA_NAME")
    monkeypatch.delenv("FAKE_CUDA_CC")
    hashed = []
    digest = engine_set.file_digest
    monkeypatch.setattr(engine_set, "file_digest", lambda path: hashed.append(path.name) or digest(path))
    decoder = whisper_dir(models) / "decoder.onnx"
    shutil.copy2(decoder, decoder.with_suffix(".copy"))  # a file of its own: the shared cache's stays untouched
    decoder.with_suffix(".copy").replace(decoder)
    os.utime(decoder)  # touched, same content: hashed again, still fits
    fits = open_graphs(spec, models)
    assert hashed == ["decoder.onnx"]
    assert fits.runtime == "tensorrt"
    fits.release()
    record = json.loads((built / ENGINE_JSON).read_text())
    record["onnx"]["decoder.onnx"] |= {"sha256": "0" * 64, "size": 1}  # as if the model was re-exported since
    (built / ENGINE_JSON).write_text(json.dumps(record))
    graphs = open_graphs(spec, models)
    assert graphs.runtime == "onnxruntime" and "decoder.onnx changed since the build" in graphs.reason
    assert gpu.retained_contexts() == 0


def test_an_input_outside_the_profile_is_a_clear_error(gpu, models: Config):
    from edge_asr.trt.engine import EngineError, TensorRTSession

    (built,) = build_engines(models, ["whisper-tiny-en"])
    session = TensorRTSession(built, ["encoder.engine"])
    with session.active(), pytest.raises(EngineError, match=r"input mel of shape \(2, 80, 3000\) is outside"):
        session["encoder"].run({"mel": np.zeros((2, 80, 3000), np.float32)})
    session.release()
    assert gpu.VIOLATIONS == [] and gpu.allocated_bytes() == 0


def test_tensorrt_8_builds_with_explicit_batch_and_feeds_int32_tokens(monkeypatch, models: Config, vad, speech):
    """TensorRT 8's ONNX parser needs EXPLICIT_BATCH and turns int64 inputs into int32: the fake
    in 8.6 mode does both, so the version branch and the token conversion run for real."""
    monkeypatch.setenv("FAKE_TENSORRT_VERSION", "8.6.1")
    monkeypatch.syspath_prepend(str(FAKES))
    try:
        build_engines(models, ["whisper-tiny-en"])
        model = WhisperModel.open(get_model(models, "whisper-tiny-en"), models)
        assert "TensorRT 8.6.1" in model.graphs.reason
        assert model.graphs.session["decoder"].dtypes["tokens"] == np.int32
        assert transcribe(model, vad, speech["beckett"]).text.startswith("Ever tried. Ever failed.")
        model.release()
    finally:
        for name in ("tensorrt", "pycuda.driver", "pycuda"):
            sys.modules.pop(name, None)


# -- in the service ---------------------------------------------------------------------------


def test_the_service_runs_whisper_on_tensorrt_and_unloads_it_cleanly(gpu, tmp_path, models: Config, clips):
    build_engines(models, ["whisper-tiny-en"])
    journal = tmp_path / "cuda-journal.jsonl"
    service = Service(
        tmp_path / "state",
        PYTHONPATH=str(FAKES),
        EDGE_ASR_MODELS_DIR=str(models.models_path),
        FAKE_CUDA_JOURNAL=str(journal),
    ).start()
    try:
        response = service.transcribe(clips["beckett"], response_format="text")
        assert response.ok and response.text.startswith("Ever tried. Ever failed."), response.text
        loaded = service.model()
        assert loaded["runtime"] == "tensorrt" and loaded["providers"] == []
        assert loaded["runtime_reason"].startswith("engines ") and "with TensorRT 10.3.0" in loaded["runtime_reason"]
        unloaded = service.post("/api/models/whisper-tiny-en/unload").json()
        assert [s["step"] for s in unloaded["worker"]["steps"]] == RELEASE_ORDER
        assert unloaded["worker"]["exit"] == "exited with status 0"
        load_event, unload_event = service.get("/api/events").json()["events"]
        assert (
            load_event["runtime"] == "tensorrt"
            and load_event["gpu"]["free_after_load"] < load_event["gpu"]["free_before_load"]
        )
        gpu_memory = unload_event["worker"]["gpu"]
        assert gpu_memory["free_after_release"] == gpu_memory["free_before_load"]
        entries = [json.loads(line) for line in journal.read_text().splitlines()]
        assert {pid for pid, *_ in entries} == {loaded["worker_pid"]}
        assert [e[1] for e in entries][-2:] == ["pop", "detach"]
        assert not [e for e in entries if e[1] == "violation"]
    finally:
        service.stop()
