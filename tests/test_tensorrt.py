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
from pathlib import Path

import numpy as np
import pytest

from edge_asr.config import Config
from edge_asr.errors import Unrecoverable
from edge_asr.manifest import get_model
from edge_asr.trt import engine_set
from edge_asr.trt.build import BuildError, build_engines, profile_shapes
from edge_asr.trt.cuda import size_class
from edge_asr.trt.engine_set import ENGINE_JSON
from edge_asr.units import format_size
from edge_asr.whisper.graphs import OnnxWhisperGraphs, open_graphs
from edge_asr.whisper.model import WhisperModel
from edge_asr.whisper.transcribe import transcribe
from tests.conftest import FAKES, linked_models
from tests.service import Service

REPO_ROOT = Path(__file__).resolve().parent.parent

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
    """The prepared Whisper and VAD in a models folder of the test's own, so engines are built
    beside them without touching the shared cache."""
    return linked_models(config, tmp_path, ["whisper-tiny-en", "silero-vad"])


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
    # The decoder's two profiles: single-token steps of up to 5 beams; one sequence's prompt.
    steps, prompt = record["engines"]["decoder.engine"]["profiles"]
    for profile in (steps, prompt):
        assert set(profile) == {"tokens", "self_k", "self_v"} | {f"cross_{kv}_{i}" for i in range(4) for kv in "kv"}
        assert profile["cross_k_0"]["max"] == [1, 6, 64, 1500]  # one window
    assert steps["tokens"] == {"min": [1, 1], "opt": [5, 1], "max": [5, 1]}
    assert steps["self_k"] == {"min": [4, 1, 1, 384], "opt": [4, 5, 112, 384], "max": [4, 5, 447, 384]}
    assert prompt["tokens"] == {"min": [1, 1], "opt": [1, 3], "max": [1, 448]}
    assert prompt["self_k"] == {"min": [4, 1, 0, 384], "opt": [4, 1, 0, 384], "max": [4, 1, 447, 384]}
    (encoder,) = record["engines"]["encoder.engine"]["profiles"]
    assert encoder["mel"]["max"] == [1, 80, 3000]
    # Each engine's execution context memory, read from the built engine (the fake's: 8 MiB).
    assert {e["device_memory_bytes"] for e in record["engines"].values()} == {8 << 20}
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
    listed = subprocess.run(
        [sys.executable, "-m", "edge_asr", "engines", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGE_ASR_MODELS_DIR": str(models.models_path), "PYTHONPATH": str(FAKES)},
        timeout=120,
    )
    lines = listed.stdout.splitlines()
    assert lines[0] == "this unit: Orin (compute capability 8.7) with TensorRT 10.3.0", listed.stderr
    built_for = "built for Orin (compute capability 8.7) with TensorRT 10.3.0: fits"
    assert " ".join(lines[1].split()) == f"whisper-tiny-en engines {record['fingerprint']} (fp32), {built_for}"
    built_dir = Path(built.stdout.strip())
    for line, name in zip(lines[2:], ("encoder.engine", "decoder.engine"), strict=True):
        size = format_size((built_dir / name).stat().st_size)
        assert " ".join(line.split()) == f"{name}: {size}, 8.39 MB of device memory when loaded"


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


def test_out_of_gpu_memory_while_a_buffer_grows_leaves_no_freed_address_behind(gpu, models: Config, vad, speech):
    """Fault injection: the device fills up (another process on a unit's shared memory) just as
    beam search needs larger buffers than greedy decoding made. The request fails; the next one,
    with room again, decodes right, and the release frees every buffer once and runs every step."""
    build_engines(models, ["whisper-tiny-en"])
    model = WhisperModel.open(get_model(models, "whisper-tiny-en"), models)
    greedy = transcribe(model, vad, speech["beckett"], beam_size=1).text
    full = gpu.PRIMARY_CONTEXT_BYTES * gpu.retained_contexts() + gpu.allocated_bytes()
    os.environ["FAKE_CUDA_TOTAL"] = str(full + 4096)  # (monkeypatch would restore it after the gpu fixture)
    mark = len(gpu.JOURNAL)
    try:
        with pytest.raises(gpu.MemoryError):
            transcribe(model, vad, speech["beckett"], beam_size=5)
    finally:
        del os.environ["FAKE_CUDA_TOTAL"]
    assert "free" in journal_since(gpu, mark)  # it failed while growing: a smaller buffer was freed first
    assert transcribe(model, vad, speech["beckett"], beam_size=5).text.startswith("Ever tried. Ever failed.")
    assert transcribe(model, vad, speech["beckett"], beam_size=1).text == greedy
    report = model.release()
    assert [s["step"] for s in report["steps"]] == RELEASE_ORDER and not [s for s in report["steps"] if "error" in s]
    assert gpu.VIOLATIONS == [] and gpu.allocated_bytes() == 0 and gpu.retained_contexts() == 0


def test_the_decoder_runs_each_call_in_the_profile_shaped_like_it(gpu, models: Config, vad, speech):
    build_engines(models, ["whisper-tiny-en"])
    model = WhisperModel.open(get_model(models, "whisper-tiny-en"), models)
    decoder = model.graphs.session["decoder"]
    profiles = []
    select = decoder.context.set_optimization_profile_async
    decoder.context.set_optimization_profile_async = lambda i, stream: profiles.append(i) or select(i, stream)
    decode, calls = model.graphs.decode, []

    def traced(tokens, *rest):
        result = decode(tokens, *rest)
        calls.append((tokens.shape, decoder.profile))  # the profile the call ran in
        return result

    model.graphs.decode = traced
    transcribe(model, vad, speech["beckett"], beam_size=5)
    # The prompt (one sequence, no cache yet) in profile 1; the beams' steps in profile 0; one
    # switch each way per window, not one per step.
    assert calls[0] == ((1, 1), 1) and calls[1:] == [((5, 1), 0)] * (len(calls) - 1) and len(calls) > 20
    assert profiles == [1, 0] and model.graphs.max_batch == 5
    model.release()


def test_engines_built_for_fewer_beams_serve_with_the_beam_they_hold(gpu, models: Config, vad, speech, caplog):
    """Decided: a request asking for a wider beam than the engines were built for is served with
    the widest they take, with a warning and the beam in the transcript; not refused, not moved to
    ONNX Runtime (docs/jetson.md)."""
    build_engines(models, ["whisper-tiny-en"], max_batch=2)
    spec = get_model(models, "whisper-tiny-en")
    model = WhisperModel.open(spec, models)
    assert model.graphs.max_batch == 2
    got = transcribe(model, vad, speech["beckett"], beam_size=5)
    assert "the engines take 2 sequences a step: beam 5 asked, 2 used" in caplog.text
    on_onnxruntime = WhisperModel(spec.directory, OnnxWhisperGraphs(spec.directory, decoder="decoder.onnx"))
    expected = transcribe(on_onnxruntime, vad, speech["beckett"], beam_size=2)
    assert got.beam_size == expected.beam_size == 2 and got.text == expected.text and len(got.text) > 40
    model.release()
    on_onnxruntime.release()
    assert gpu.VIOLATIONS == []


def test_a_sticky_cuda_error_is_unrecoverable(gpu, models: Config, vad, speech, tmp_path, monkeypatch):
    """An illegal address in a kernel breaks the context for good: the next calls fail too, so
    the failure is raised as Unrecoverable (the worker exits on it), not as an ordinary error."""
    build_engines(models, ["whisper-tiny-en"])
    model = WhisperModel.open(get_model(models, "whisper-tiny-en"), models)
    fault = tmp_path / "fault"
    fault.touch()
    monkeypatch.setenv("FAKE_CUDA_FAULT", str(fault))
    with pytest.raises(Unrecoverable, match=r"the GPU context is broken: LaunchError: .* illegal memory access"):
        transcribe(model, vad, speech["beckett"])
    assert not fault.exists()


def test_an_input_outside_the_profile_is_a_clear_error(gpu, models: Config):
    from edge_asr.trt.engine import EngineError, TensorRTSession

    (built,) = build_engines(models, ["whisper-tiny-en"])
    session = TensorRTSession(built, ["encoder.engine"])
    with session.active(), pytest.raises(EngineError, match=r"shapes mel \(2, 80, 3000\) are outside the engine's"):
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


def tensorrt_service(tmp_path: Path, models: Config, **env: str) -> Service:
    """The service, started with the fakes and Whisper's engines built."""
    build_engines(models, ["whisper-tiny-en"])
    return Service(
        tmp_path / "state", PYTHONPATH=str(FAKES), EDGE_ASR_MODELS_DIR=str(models.models_path), **env
    ).start()


def test_the_service_runs_whisper_on_tensorrt_and_unloads_it_cleanly(gpu, tmp_path, models: Config, clips):
    journal = tmp_path / "cuda-journal.jsonl"
    service = tensorrt_service(tmp_path, models, FAKE_CUDA_JOURNAL=str(journal))
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


def test_a_worker_whose_gpu_context_broke_exits_and_the_next_request_gets_a_fresh_one(
    gpu, tmp_path, models: Config, clips
):
    fault = tmp_path / "fault"
    service = tensorrt_service(tmp_path, models, FAKE_CUDA_FAULT=str(fault))
    try:
        assert service.transcribe(clips["beckett"], response_format="text").ok
        broken_pid = service.model()["worker_pid"]
        fault.touch()  # the worker's next kernel hits an illegal address
        failed = service.transcribe(clips["beckett"], response_format="text")
        error = failed.json()["error"]
        assert failed.status_code == 503 and error["code"] == "worker_crashed", failed.text
        assert "exited after an unrecoverable GPU error (status 3" in error["message"]
        assert not fault.exists() and service.model()["state"] == "failed"
        again = service.transcribe(clips["beckett"], response_format="text")
        assert again.ok and again.text.startswith("Ever tried. Ever failed.")
        assert service.model()["worker_pid"] != broken_pid and service.model()["runtime"] == "tensorrt"
        reasons = [e["reason"] for e in service.get("/api/events").json()["events"]]
        crashes = [r for r in reasons if r.startswith("crashed:")]  # noticed by the request or the monitor
        assert len(crashes) == 1 and "exited after an unrecoverable GPU error (status 3" in crashes[0], reasons
    finally:
        service.stop()
