"""The model manifest: which models exist, what they are, where their files are.

The built-in manifest (``engines/models.toml``) is overlaid by the user's
(``<models_dir>/manifest.toml``), which ``edge-asr models import`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from edge_asr.config import Config, tomllib
from edge_asr.errors import ModelNotFound
from edge_asr.fsutil import atomic_write_text

TASKS = ("asr", "llm", "tts", "diarization", "vad")  # vad models serve inside speech models' workers
RUNTIMES = ("onnxruntime", "tensorrt")  # tensorrt: engines from build_engines.py, else ONNX Runtime
DEFAULT_MODELS = {
    "asr": "whisper-tiny-en",
    "llm": "smollm2-135m-instruct",
    "tts": "piper-joe-en",
    "diarization": "diarization-pyannote-campplus",
}  # when none is named


@dataclass(frozen=True)
class ModelSpec:
    id: str
    task: str
    family: str
    directory: Path
    files: tuple[str, ...]
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    runtime: str = "onnxruntime"  # the preferred runtime (RUNTIMES)
    keep_alive: str | None = None  # None: the configuration's keep_alive
    priority: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] | None = None
    vad: str | None = None  # id of the VAD model a speech model cuts long audio with

    @property
    def missing_files(self) -> list[str]:
        return [f for f in self.files if not (self.directory / f).is_file()]

    @property
    def present(self) -> bool:
        return not self.missing_files


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with open(path, "rb") as f:
        return tomllib.load(f).get("models", {})


def _spec(model_id: str, entry: dict[str, Any], models_path: Path, source: Path) -> ModelSpec:
    try:
        task = entry["task"]
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        runtime = entry.get("runtime", ModelSpec.runtime)
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
        return ModelSpec(
            id=model_id,
            task=task,
            family=entry["family"],
            directory=models_path / model_id,
            files=tuple(entry["files"]),
            providers=tuple(entry.get("providers", ModelSpec.providers)),
            runtime=runtime,
            keep_alive=str(entry["keep_alive"]) if "keep_alive" in entry else None,
            priority=int(entry.get("priority", 0)),
            settings=dict(entry.get("settings", {})),
            prepare=entry.get("prepare"),
            vad=entry.get("vad"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: model {model_id!r} is malformed: {e}") from e


def load_manifest(config: Config) -> dict[str, ModelSpec]:
    """All models by id, built-in first, the user's imports overriding."""
    models: dict[str, ModelSpec] = {}
    for source in (config.manifest, config.user_manifest):
        for model_id, entry in _read_toml(source).items():
            models[model_id] = _spec(model_id, entry, config.models_path, source)
    return models


def get_model(config: Config, model_id: str) -> ModelSpec:
    try:
        return load_manifest(config)[model_id]
    except KeyError:
        raise ModelNotFound(f"the model {model_id[:200]!r} does not exist") from None


def register_user_model(config: Config, model_id: str, entry: dict[str, Any]) -> None:
    """Add or replace one model in the user manifest (written atomically)."""
    models = _read_toml(config.user_manifest)
    models[model_id] = entry
    _spec(model_id, entry, config.models_path, config.user_manifest)  # validate before writing
    text = "# Written by `edge-asr models import`; overlays engines/models.toml.\n\n"
    atomic_write_text(config.user_manifest, text + tomli_w.dumps({"models": models}))
