"""Transcripts in OpenAI's response formats: json, text, srt, vtt, verbose_json, diarized_json.

A transcript here is the dict a speech runner returns: ``text``, ``duration``, ``segments``
(each ``id, start, end, text, tokens, temperature, avg_logprob, compression_ratio,
no_speech_prob``, and ``speaker`` where the request asked for speakers), ``language`` (a code),
``language_probability`` (None unless detected) and ``beam_size`` (the beam the windows were
decoded with)."""

from __future__ import annotations

import json
from typing import Any

from edge_asr.whisper.languages import LANGUAGE_NAMES

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
DIARIZED_FORMATS = ("diarized_json", "verbose_json", "srt", "vtt")  # those that show each segment's speaker
MIME_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "diarized_json": "application/json",
    "text": "text/plain",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
}


def _clock(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(transcript: dict[str, Any]) -> str:
    """SubRip; a speaker, where known, leads the text in brackets (``[A] ...``)."""
    blocks = []
    for i, s in enumerate(transcript["segments"], 1):
        text = f"[{s['speaker']}] {s['text']}" if s.get("speaker") else s["text"]
        blocks.append(f"{i}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{text}\n")
    return "\n".join(blocks)


def vtt(transcript: dict[str, Any]) -> str:
    """WebVTT; a speaker, where known, as WebVTT's voice span (``<v A>...``)."""
    blocks = []
    for s in transcript["segments"]:
        text = f"<v {s['speaker']}>{s['text']}" if s.get("speaker") else s["text"]
        blocks.append(f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{text}\n")
    return "WEBVTT\n\n" + "\n".join(blocks)


def diarized_json(transcript: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``diarized_json``: the text and its segments, each with its speaker."""
    segments = [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{i}",
            "start": s["start"],
            "end": s["end"],
            "text": s["text"],
            "speaker": s["speaker"],
        }
        for i, s in enumerate(transcript["segments"])
    ]
    return {
        "task": "transcribe",
        "duration": round(transcript["duration"], 3),
        "text": transcript["text"],
        "segments": segments,
        "usage": usage(transcript),
    }


def usage(transcript: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's usage of a transcription: the audio's seconds, rounded."""
    return {"type": "duration", "seconds": round(transcript["duration"] + 0.5)}


def verbose_json(transcript: dict[str, Any], task: str) -> dict[str, Any]:
    """OpenAI's verbose form. Extensions: ``language_probability`` (as faster-whisper reports it)
    says how sure the detection was, and is absent when the language was given; ``beam_size`` is
    the beam the windows were decoded with (less than asked where TensorRT engines built with a
    smaller ``--max-batch`` hold no more)."""
    segments = [{"seek": 0, **s} for s in transcript["segments"]]
    language = transcript["language"]
    detected = transcript["language_probability"]
    return {
        "task": task,
        "language": LANGUAGE_NAMES.get(language, language),
        **({"language_probability": round(detected, 4)} if detected is not None else {}),
        "duration": round(transcript["duration"], 3),
        "text": transcript["text"],
        "segments": segments,
        "beam_size": transcript["beam_size"],
    }


def render(transcript: dict[str, Any], response_format: str, task: str = "transcribe") -> str:
    """The response body for ``response_format`` (one of ``RESPONSE_FORMATS``)."""
    if response_format == "text":
        return transcript["text"] + "\n"
    if response_format == "srt":
        return srt(transcript)
    if response_format == "vtt":
        return vtt(transcript)
    if response_format == "verbose_json":
        return json.dumps(verbose_json(transcript, task))
    if response_format == "diarized_json":
        return json.dumps(diarized_json(transcript))
    return json.dumps({"text": transcript["text"], "usage": usage(transcript)})
