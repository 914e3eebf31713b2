"""Fixtures on the real prepared models and real speech (see README: `bash scripts/test.sh`
prepares the models before pytest starts)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_asr.audio import decode_audio
from edge_asr.config import Config, load_config
from edge_asr.manifest import ModelSpec, get_model
from edge_asr.samples import sample_clips
from edge_asr.vad import SileroVad
from edge_asr.whisper.model import WhisperModel
from tests.service import ASR, LLM, TTS

# Run inside the environments with the real TensorRT bindings, by test_tensorrt_bindings.py.
collect_ignore = ["tensorrt_api"]
FAKES = Path(__file__).parent / "fakes"  # tensorrt, pycuda, tegrastats, jtop: for hardware absent here


@pytest.fixture(scope="session")
def config() -> Config:
    return load_config()


@pytest.fixture(scope="session")
def whisper_spec(config: Config) -> ModelSpec:
    spec = get_model(config, "whisper-tiny-en")
    assert spec.present, f"missing {spec.missing_files} in {spec.directory}: run `edge-asr models prepare` first"
    return spec


@pytest.fixture(scope="session")
def whisper(whisper_spec: ModelSpec) -> WhisperModel:
    return WhisperModel(whisper_spec.directory)


@pytest.fixture(scope="session")
def vad(config: Config) -> SileroVad:
    spec = get_model(config, "silero-vad")
    assert spec.present, "run `edge-asr models prepare` first"
    return SileroVad(spec.directory / spec.files[0])


@pytest.fixture(scope="session")
def clips(config: Config) -> dict[str, Path]:
    return sample_clips(config)


@pytest.fixture(scope="session")
def speech(clips: dict[str, Path]) -> dict[str, np.ndarray]:
    """The sample clips decoded to 16 kHz mono."""
    return {name: decode_audio(path) for name, path in clips.items()}


@pytest.fixture
def service(tmp_path, whisper_spec):
    """A fresh service process with its own state directory (models from the shared cache)."""
    from tests.service import Service

    svc = Service(tmp_path / "state").start()
    yield svc
    if svc.process.poll() is None:
        svc.stop()


@pytest.fixture(scope="session")
def learned_footprints(tmp_path_factory, whisper_spec, clips) -> Path:
    """A footprints file with the speech model, the LLM and the voice measured, learnt once."""
    from tests.service import Service

    svc = Service(tmp_path_factory.mktemp("learn") / "state").start()
    try:
        assert svc.transcribe(clips["beckett"]).ok
        assert svc.post(
            "/v1/chat/completions",
            json={"model": LLM, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        ).ok
        assert svc.post("/v1/audio/speech", json={"model": TTS, "input": "Ever tried. Ever failed."}).ok
        svc.post("/api/system/free")
    finally:
        svc.stop()
    return svc.state_dir / "footprints.json"


@pytest.fixture
def budget_service(tmp_path, learned_footprints):
    """A fresh service whose memory budget holds any one model but not the speech model with the
    LLM (``footprints`` and ``budget`` are kept on it for the tests)."""
    from tests.service import Service

    measured = json.loads(learned_footprints.read_text())
    footprints = {model: measured[model] for model in (ASR, LLM, TTS)}
    budget = int(1.05 * max(footprints.values()))
    assert budget < footprints[ASR] + footprints[LLM], footprints  # the two do not fit together
    state = tmp_path / "budget"
    state.mkdir()
    (state / "footprints.json").write_text(learned_footprints.read_text())
    svc = Service(state, EDGE_ASR_MEMORY_BUDGET=str(budget)).start()
    svc.footprints, svc.budget = footprints, budget
    yield svc
    svc.stop()


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch):
    """The fake pycuda driver, with the fake tensorrt importable, for one test (fresh state)."""
    monkeypatch.syspath_prepend(str(FAKES))
    import pycuda.driver as cuda

    yield cuda
    for name in ("tensorrt", "pycuda.driver", "pycuda"):
        sys.modules.pop(name, None)


def linked_models(config: Config, folder: Path, model_ids: list[str]) -> Config:
    """A configuration whose models folder (under ``folder``) holds ``model_ids``' prepared files
    as hard links: a test can add engines or remove a model without touching the shared cache."""
    for model in model_ids:
        source = config.models_path / model
        (folder / "models" / model).mkdir(parents=True, exist_ok=True)
        for file in source.iterdir():
            if file.is_file():
                os.link(file, folder / "models" / model / file.name)
    return replace(config, models_dir=folder / "models")
