"""``edge-asr check`` as the person installing a unit runs it: a real subprocess on the real
prepared models, loading each in a real worker; on the TensorRT fakes, the engines' items too."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import llama_cpp

from edge_asr.config import Config
from edge_asr.trt.build import build_engines
from tests.conftest import FAKES, linked_models

VERSIONS = ["python", "jetpack", "tensorrt", "pycuda", "onnxruntime", "onnxruntime-genai", "llama.cpp", "piper"]
UNIT = ["memory source", "state directory", "manifest"]


def check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_asr", "check", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )


def model_ids(config: Config) -> list[str]:
    from edge_asr.manifest import load_manifest

    return list(load_manifest(config))


def test_check_passes_here_and_names_every_item(config: Config):
    done = check("--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    items = {item["name"]: item for item in result["items"]}
    llms = ("smollm2-135m-instruct", "smollm2-135m-instruct-onnx")
    diarization = "diarization-pyannote-campplus"
    loads = [f"load {m}" for m in ("piper-joe-en", "whisper-tiny-en", "whisper-base", *llms, diarization)]
    assert list(items) == [*VERSIONS, *UNIT, *(f"model {m}" for m in model_ids(config)), *loads]
    assert result["ok"] and {i["status"] for i in result["items"]} == {"pass", "skip"}
    # Off a Jetson: what cannot be checked here is said, not passed.
    assert [n for n, i in items.items() if i["status"] == "skip"] == ["jetpack", "tensorrt", "pycuda"]
    assert items["tensorrt"]["detail"].startswith("not installed (not a Jetson)")
    assert "CPUExecutionProvider" in items["onnxruntime"]["data"]["providers"]
    assert items["memory source"]["data"]["available_bytes"] > 0
    assert "prefers TensorRT, which is not here" in items["model whisper-tiny-en"]["detail"]
    # Each model loaded, served its sample (the voice's reading, transcribed) and unloaded.
    for name in loads:
        data = items[name]["data"]
        assert data["exit"] == "exited with status 0" and set(data["memory"]) == {
            "available_before",
            "available_serving",
            "available_after",
        }
    assert "heard" in items["load whisper-tiny-en"]["detail"]
    assert "found one speaker in the spoken sample" in items[f"load {diarization}"]["detail"]
    # Each LLM runtime says its speed, so a unit can tell which is faster on it (docs/llm.md).
    for model, runtime in zip(llms, ("llama.cpp", "onnxruntime-genai"), strict=True):
        assert items[f"load {model}"]["data"]["runtime"] == runtime
        detail = items[f"load {model}"]["detail"]
        speed = re.search(r"answered 64 tokens: the first after [\d.]+ s, then (\d+) tokens a second", detail)
        assert speed and int(speed[1]) > 10, detail
    offload = llama_cpp.llama_supports_gpu_offload()
    assert items["llama.cpp"]["detail"].endswith("GPU offload" if offload else "CPU only")
    assert items["llama.cpp"]["data"] == {"gpu": offload}


def test_quick_loads_nothing_and_a_failure_exits_1(tmp_path: Path):
    quick = check("--quick")
    lines = quick.stdout.splitlines()
    assert quick.returncode == 0 and not any(line[6:].startswith("load ") for line in lines)
    assert lines[0].startswith("PASS  python") and lines[-1].endswith("failed, 3 not checkable here")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    failed = check("--quick", EDGE_ASR_STATE_DIR=str(blocked / "state"))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    (state,) = [line for line in failed.stdout.splitlines() if "state directory" in line]
    assert state.startswith("FAIL  state directory") and "Not a directory" in state
    # A configured memory source that cannot start is a failure, though the service falls back.
    no_tegrastats = check("--quick", EDGE_ASR_MEMORY_SOURCE="tegrastats", EDGE_ASR_TEGRASTATS="/nonexistent")
    (memory,) = [line for line in no_tegrastats.stdout.splitlines() if "memory source" in line]
    assert no_tegrastats.returncode == 1 and memory.startswith("FAIL  memory source  ") and "meminfo" in memory


def test_with_tensorrt_the_engines_are_checked_and_whisper_runs_on_them(gpu, config: Config, tmp_path: Path):
    """On the TensorRT fakes, with four models of the manifest not prepared (a unit half set up),
    the voice among them: the speech model transcribes silence instead of its reading."""
    models = linked_models(config, tmp_path, ["whisper-tiny-en", "silero-vad"])
    build_engines(models, ["whisper-tiny-en"])
    done = check("--json", PYTHONPATH=str(FAKES), EDGE_ASR_MODELS_DIR=str(models.models_path))
    assert done.returncode == 1
    items = {item["name"]: item for item in json.loads(done.stdout)["items"]}
    for missing in ("whisper-base", "smollm2-135m-instruct", "smollm2-135m-instruct-onnx", "piper-joe-en"):
        assert items[f"model {missing}"]["status"] == "fail" and f"load {missing}" not in items
        assert items[f"model {missing}"]["detail"].endswith(f"run `edge-asr models prepare {missing}`")
    assert items["tensorrt"] == {"name": "tensorrt", "status": "pass", "detail": "TensorRT 10.3.0", "data": {}}
    assert items["pycuda"]["status"] == "pass" and items["pycuda"]["data"]["cuda_driver"] == "12.6"
    assert (
        "fit (device memory: encoder.engine 8.39 MB, decoder.engine 8.39 MB)"
        in items["model whisper-tiny-en"]["detail"]
    )
    loaded = items["load whisper-tiny-en"]
    assert loaded["status"] == "pass" and loaded["data"]["runtime"] == "tensorrt", loaded
    gpu_memory = loaded["data"]["gpu"]
    assert gpu_memory["free_after_load"] < gpu_memory["free_before_load"] == gpu_memory["free_after_release"]
    assert "GPU:" in loaded["detail"] and "two seconds of silence, transcribed as silence" in loaded["detail"]
