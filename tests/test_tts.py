"""Speech out: ``POST /v1/audio/speech`` on the Piper voice, through the real service and worker;
what it says is heard back by Whisper tiny.en through the same service."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import soundfile

from edge_asr.evaluation import word_error_rate
from tests.service import Service

TTS, ASR = "piper-joe-en", "whisper-tiny-en"
SENTENCES = [
    "The pump in the second row needs a new seal before Friday.",
    "Please check the pressure gauge every morning at eight.",
    "The storage room is cold, so keep the door closed.",
    "We will replace the filters next week.",
    "Call the supervisor if the alarm sounds twice.",
]


def speak(service: Service, text: str, **fields) -> bytes:
    r = service.post("/v1/audio/speech", json={"model": TTS, "input": text, "voice": "joe", **fields})
    assert r.status_code == 200, r.text
    return r.content


def test_what_the_voice_says_whisper_hears(service: Service):
    heard = []
    for sentence in SENTENCES:
        wav = speak(service, sentence)
        assert wav[:4] == b"RIFF" and wav[40:44] == b"\xff\xff\xff\xff"  # streamed: length unknown up front
        r = service.transcribe(wav, model=ASR)
        assert r.ok, r.text
        heard.append(r.json()["text"])
    pooled = word_error_rate(" ".join(SENTENCES), " ".join(heard))
    assert pooled <= 0.10, (pooled, heard)


def test_every_format_decodes_to_speech_of_the_same_length(service: Service):
    """Piper's VITS draws noise at each synthesis (durations vary by a few per cent), so formats are
    compared by length, and speed by the ratio of lengths."""
    text = SENTENCES[0]

    def seconds(fmt: str, **fields) -> float:
        data = speak(service, text, response_format=fmt, **fields)
        if fmt == "pcm":
            return len(np.frombuffer(data, "<i2")) / 22050
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32")
        assert fmt != "wav" or rate == 22050
        return len(audio) / rate

    wav = seconds("wav")
    assert 2.0 < wav < 6.0
    for fmt in ("flac", "mp3", "opus", "pcm"):
        assert abs(seconds(fmt) / wav - 1) < 0.15, fmt
    assert 1.5 < seconds("wav", speed=0.5) / wav < 2.4 and 0.4 < seconds("wav", speed=2.0) / wav < 0.75


def test_sse_streams_a_delta_per_sentence(service: Service):
    text = " ".join(SENTENCES)
    r = service.post("/v1/audio/speech", json={"model": TTS, "input": text, "stream_format": "sse"}, stream=True)
    events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith(b"data: ")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) == len(SENTENCES) and events[-1]["type"] == "speech.audio.done"
    samples = sum(len(base64.b64decode(d["audio"])) // 2 for d in deltas)
    assert samples == events[-1]["samples"] and events[-1]["sample_rate"] == 22050


def test_the_openai_sdk_speaks_and_lists_voices(service: Service):
    client = service.openai()
    audio = client.audio.speech.create(model=TTS, voice="joe", input=SENTENCES[1], response_format="flac")
    samples, rate = soundfile.read(io.BytesIO(audio.content))
    assert rate == 22050 and len(samples) > rate
    voices = service.get("/v1/audio/voices").json()["voices"]
    assert voices == [{"id": "joe", "model": TTS, "language": "en_US", "sample_rate": 22050}]


@pytest.mark.parametrize(
    "body, words",
    [
        ({"input": ""}, "non-empty"),
        ({"input": "   "}, "non-empty"),
        ({"input": "a" * 4097}, "at most 4096"),
        ({"input": 42}, "non-empty string"),
        ({"input": "Hi", "voice": "alloy"}, "voice 'joe' only"),
        ({"input": "Hi", "response_format": "aac"}, "response_format"),
        ({"input": "Hi", "speed": 0.1}, "speed"),
        ({"input": "Hi", "speed": 5}, "speed"),
        ({"input": "Hi", "speed": "fast"}, "speed"),
        ({"input": "Hi", "stream_format": "video"}, "stream_format"),
        ({"input": "Hi", "model": ASR}, "cannot speak"),
    ],
)
def test_bad_synthesis_requests_are_400(service: Service, body, words):
    r = service.post("/v1/audio/speech", json={"model": TTS, **body})
    assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
    assert service.model(TTS)["state"] == "unloaded"  # refused before anything loaded


def test_a_voice_cannot_transcribe_or_chat(service: Service, clips):
    r = service.transcribe(clips["beckett"], model=TTS)
    assert r.status_code == 400 and "cannot transcribe" in r.json()["error"]["message"]
    r = service.post("/v1/chat/completions", json={"model": TTS, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 400 and "cannot chat" in r.json()["error"]["message"]


def test_the_voice_comes_and_goes_like_every_model(service: Service):
    speak(service, SENTENCES[2])
    status = service.model(TTS)
    assert status["state"] == "ready" and status["runtime"] == "onnxruntime" and status["footprint_bytes"] > 0
    unloaded = service.post(f"/api/models/{TTS}/unload").json()
    assert unloaded["unloaded"] and [s["step"] for s in unloaded["worker"]["steps"]][:2] == [
        "destroy voice session",
        "destroy speaker",
    ]
    assert service.workers() == []
