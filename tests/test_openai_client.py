"""The real `openai` SDK against the service: every response format, and streaming."""

from __future__ import annotations

import json

import openai
import pytest

from edge_asr.evaluation import word_error_rate
from edge_asr.samples import REFERENCES


@pytest.fixture
def client(service) -> openai.OpenAI:
    return service.openai()


def test_json(client, clips):
    with open(clips["beckett"], "rb") as f:
        result = client.audio.transcriptions.create(model="whisper-tiny-en", file=f)
    assert word_error_rate(REFERENCES["beckett"], result.text) < 0.05


def test_text(client, clips):
    with open(clips["beckett"], "rb") as f:
        text = client.audio.transcriptions.create(model="whisper-tiny-en", file=f, response_format="text")
    assert isinstance(text, str) and word_error_rate(REFERENCES["beckett"], text) < 0.05


def test_verbose_json_with_segment_timestamps(client, clips):
    with open(clips["two_cities"], "rb") as f:
        result = client.audio.transcriptions.create(
            model="whisper-tiny-en", file=f, response_format="verbose_json", timestamp_granularities=["segment"]
        )
    assert result.language == "english" and abs(result.duration - 44.374) < 0.01
    assert word_error_rate(REFERENCES["two_cities"], result.text) < 0.05
    assert len(result.segments) >= 6
    assert [s.id for s in result.segments] == list(range(len(result.segments)))
    assert all(0 <= s.start < s.end <= result.duration for s in result.segments)
    assert all(s.avg_logprob < 0 and 0 <= s.no_speech_prob <= 1 for s in result.segments)


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles(client, clips, fmt):
    with open(clips["two_cities"], "rb") as f:
        body = client.audio.transcriptions.create(model="whisper-tiny-en", file=f, response_format=fmt)
    blocks = [b for b in body.strip().split("\n\n") if "-->" in b]
    assert len(blocks) >= 6
    if fmt == "vtt":
        assert body.startswith("WEBVTT\n\n00:00:0")
    else:
        assert body.startswith("1\n00:00:0") and ",0" in body.split("\n")[1]
    spoken = " ".join(b.split("\n", 2)[-1] if fmt == "srt" else b.split("\n", 1)[1] for b in blocks)
    assert word_error_rate(REFERENCES["two_cities"], spoken) < 0.05


def test_stream(client, clips):
    with open(clips["two_cities"], "rb") as f:
        stream = client.audio.transcriptions.create(model="whisper-tiny-en", file=f, stream=True)
        events = list(stream)
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    (done,) = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) >= 6 and events[-1] is done
    assert "".join(d.delta for d in deltas) == done.text
    assert word_error_rate(REFERENCES["two_cities"], done.text) < 0.05


def test_stream_matches_the_plain_answer(client, clips):
    with open(clips["beckett"], "rb") as f:
        plain = client.audio.transcriptions.create(model="whisper-tiny-en", file=f).text
    with open(clips["beckett"], "rb") as f:
        streamed = [e for e in client.audio.transcriptions.create(model="whisper-tiny-en", file=f, stream=True)]
    assert streamed[-1].text == plain


def test_errors_raise_the_sdk_exceptions(client, clips):
    with open(clips["beckett"], "rb") as f, pytest.raises(openai.NotFoundError) as e:
        client.audio.transcriptions.create(model="whisper-large-v9", file=f)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="whisper-tiny-en", file=("notes.txt", b"not audio at all" * 40))
    assert "not a readable audio file" in json.dumps(e.value.body)
