"""The `edge-asr` command as a user runs it: a real subprocess on the real prepared models."""

from __future__ import annotations

import json
import subprocess
import sys

from edge_asr.evaluation import word_error_rate
from edge_asr.samples import REFERENCES


def edge_asr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_asr", *args], capture_output=True, text=True, timeout=300)


def test_transcribe_prints_the_text(clips):
    done = edge_asr("transcribe", str(clips["beckett"]))
    assert done.returncode == 0, done.stderr
    assert word_error_rate(REFERENCES["beckett"], done.stdout) < 0.05


def test_transcribe_verbose_json_and_srt(clips):
    done = edge_asr("transcribe", str(clips["beckett"]), "--format", "verbose_json")
    result = json.loads(done.stdout)
    assert result["language"] == "english" and abs(result["duration"] - 9.963) < 0.001
    assert word_error_rate(REFERENCES["beckett"], result["text"]) < 0.05
    assert result["segments"][0]["start"] < 0.5
    srt = edge_asr("transcribe", str(clips["beckett"]), "--format", "srt").stdout
    assert srt.startswith("1\n00:00:00,") and "Fail better." in srt


def test_non_audio_file_is_a_clear_error(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio\n" * 50)
    done = edge_asr("transcribe", str(notes))
    assert done.returncode == 1
    assert "Error: not a readable audio file" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_and_wrong_task_models_are_clear_errors(clips):
    done = edge_asr("transcribe", str(clips["beckett"]), "--model", "nope")
    assert done.returncode == 1 and "the model 'nope' does not exist" in done.stderr
    done = edge_asr("transcribe", str(clips["beckett"]), "--model", "smollm2-135m-instruct")
    assert done.returncode == 1 and "is a llm model, not a speech model" in done.stderr


def test_models_list_shows_each_prepared_with_its_family():
    done = edge_asr("models", "list")
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()}
    assert rows["whisper-tiny-en"][2:4] == ["whisper", "prepared"]
    assert rows["smollm2-135m-instruct"][2:4] == ["llama.cpp", "prepared"]
    assert rows["smollm2-135m-instruct-onnx"][2:4] == ["onnxruntime-genai", "prepared"]
