"""A 10-minute recording, built from public-domain speech and silences, through the service:
accuracy, bounded worker memory, and timestamps where the speech is."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from edge_asr.audio import SAMPLE_RATE
from edge_asr.evaluation import word_error_rate
from edge_asr.samples import REFERENCES
from tests.service import Service


def speech_interval(audio: np.ndarray) -> tuple[float, float]:
    """First and last 10-ms frame above -45 dBFS, well over these recordings' noise floor
    (-60 dBFS): where the reader is heard. (A breath at -40 dBFS after the last word counts: a VAD
    cannot tell it from speech either.)"""
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 10 ** (-45 / 20))
    return loud[0] / 100, (loud[-1] + 1) / 100


@pytest.fixture(scope="module")
def recording(speech):
    """~10 minutes: the two readings with a text, alternating, between silences of 2-9 s."""
    rng = np.random.default_rng(10)
    pieces, references, intervals, position = [], [], [], 0.0
    names = ["two_cities", "beckett"]
    while position < 600:
        name = names[len(references) % 2]
        gap = np.zeros(int(rng.uniform(2, 9) * SAMPLE_RATE), np.float32)
        start, end = speech_interval(speech[name])
        position += len(gap) / SAMPLE_RATE
        intervals.append((position + start, position + end))
        position += len(speech[name]) / SAMPLE_RATE
        pieces += [gap, speech[name]]
        references.append(REFERENCES[name])
    buf = io.BytesIO()
    soundfile.write(buf, np.concatenate(pieces), SAMPLE_RATE, format="FLAC")
    return {"flac": buf.getvalue(), "reference": " ".join(references), "intervals": intervals, "seconds": position}


def test_a_10_minute_recording(service: Service, recording, speech):
    # reference: the worker's peak on a 28-s clip, on a fresh worker
    clip = io.BytesIO()
    soundfile.write(clip, speech["endgame_nagg_nell"], SAMPLE_RATE, format="WAV")
    assert service.transcribe(clip.getvalue()).ok
    peak_30s = service.post("/api/models/whisper-tiny-en/unload").json()["worker"]["rss_peak"]

    r = service.transcribe(recording["flac"], response_format="verbose_json", timeout=600)
    assert r.ok, r.text
    result = r.json()
    peak_long = service.post("/api/models/whisper-tiny-en/unload").json()["worker"]["rss_peak"]
    assert recording["seconds"] >= 600 and result["duration"] == pytest.approx(recording["seconds"], abs=0.01)
    assert word_error_rate(recording["reference"], result["text"]) < 0.10
    assert peak_long < 1.5 * peak_30s, (peak_long, peak_30s)

    segments = result["segments"]
    times = [t for s in segments for t in (s["start"], s["end"])]
    assert times == sorted(times)
    intervals = recording["intervals"]
    for s in segments:  # every segment lies on some speech, give or take a second
        assert any(start - 1 <= s["start"] and s["end"] <= end + 1 for start, end in intervals), s
    for start, _ in intervals:  # every reading's first words are found within a second
        assert min(abs(s["start"] - start) for s in segments) < 1.0, start
