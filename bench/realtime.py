"""Live transcription over the Realtime API, against batch transcription of the same audio.

Each public clip (Beckett, Two Cities, the Endgame dialogue) and a multi-sentence recording (the
clips one after another, 1.5 s apart) is streamed to a real service at real-time pace in 100-ms
appends, with server VAD, by the ``openai`` SDK's realtime client. Per turn:

- the final latency: from ``speech_stopped`` to ``completed`` (the bar, issue 24: <= 0.5x the
  reference), and, stricter, from the moment the turn's last audio (``audio_end_ms``, its
  silence included) was sent to ``completed``, which counts the decode that heard the turn end.
  The reference is the batch transcription (``POST /v1/audio/transcriptions``, the same service,
  model warm) of the same turn's audio, timed in the same run: the ratio is what live
  transcription saves over sending the turn when it ends;
- the first words: from the moment the turn's speech was sent (``audio_start_ms`` plus the
  padding, on the stream's clock) to its first ``delta``.

Medians and p95 over every turn of every round; word error of the turns' transcripts joined
against the batch transcript of the whole recording, and both against the reference text where
the clip has one.

usage: python -m bench.realtime [--rounds 2]   (after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_asr.audio import SAMPLE_RATE, decode_audio
from edge_asr.config import load_config
from edge_asr.evaluation import word_error_rate
from edge_asr.samples import REFERENCES, sample_clips
from tests.realtime_client import (
    DELTA,
    SERVER_VAD,
    TRANSCRIPTION,
    Events,
    group_by_item,
    pcm16,
    quiet,
    session_update,
    stream,
    turns_done,
)
from tests.service import Service, wav

GAP = np.zeros(int(1.5 * SAMPLE_RATE), np.float32)


def live_turns(service: Service, audio: np.ndarray) -> list[dict]:
    """Each turn of ``audio`` streamed at real time: its span, transcript and latencies."""
    with service.openai().realtime.connect(extra_query=TRANSCRIPTION) as connection:
        received = Events(connection)
        connection.send(session_update())
        received.until(lambda e: any(x["type"] == "session.updated" for x in e))
        sent_at = time.monotonic()
        stream(connection, pcm16(audio)).join()
        events = received.until(lambda e: turns_done(e) and quiet(e, 2.0), timeout=120)
    turns = []
    for kinds in group_by_item(events).values():
        by_type = {e["type"].rsplit(".", 1)[-1]: e for e in kinds if e["type"] != DELTA}
        deltas = [e for e in kinds if e["type"] == DELTA]
        start_ms, end_ms = by_type["speech_started"]["audio_start_ms"], by_type["speech_stopped"]["audio_end_ms"]
        spoken_at = sent_at + (start_ms + SERVER_VAD["prefix_padding_ms"]) / 1000
        turns.append(
            {
                "span": (start_ms, end_ms),
                "transcript": by_type["completed"]["transcript"],
                "final_s": by_type["completed"]["at"] - by_type["speech_stopped"]["at"],
                "after_audio_s": by_type["completed"]["at"] - (sent_at + end_ms / 1000),
                "first_words_s": deltas[0]["at"] - spoken_at if deltas else None,
            }
        )
    return turns


def batch_seconds(service: Service, audio: np.ndarray) -> float:
    data = wav(audio)
    start = time.perf_counter()
    assert service.transcribe(data).ok
    return time.perf_counter() - start


def spread(values: list[float]) -> dict[str, float]:
    """Median and 95th percentile (nearest rank)."""
    p95 = sorted(values)[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return {"median": round(statistics.median(values), 3), "p95": round(p95, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    clips = {name: decode_audio(path) for name, path in sample_clips(load_config()).items()}
    recordings = {name: np.concatenate([audio, GAP]) for name, audio in clips.items()}
    recordings["all clips, 1.5 s apart"] = np.concatenate([x for audio in clips.values() for x in (audio, GAP)])
    with tempfile.TemporaryDirectory() as state:
        service = Service(Path(state)).start()
        try:
            assert service.transcribe(wav(clips["beckett"])).ok  # warm
            finals, ratios, after_audio, after_audio_ratios, first_words, errors = [], [], [], [], [], []
            for _ in range(args.rounds):
                for name, audio in recordings.items():
                    turns = live_turns(service, audio)
                    for turn in turns:
                        start_ms, end_ms = turn["span"]
                        piece = audio[int(start_ms * SAMPLE_RATE / 1000) : int(end_ms * SAMPLE_RATE / 1000)]
                        batch = batch_seconds(service, piece)
                        finals.append(turn["final_s"])
                        ratios.append(turn["final_s"] / batch)
                        after_audio.append(turn["after_audio_s"])
                        after_audio_ratios.append(turn["after_audio_s"] / batch)
                        if turn["first_words_s"] is not None and end_ms - start_ms > 2000:
                            first_words.append(turn["first_words_s"])
                    whole = service.transcribe(wav(audio)).json()["text"]
                    live = " ".join(t["transcript"] for t in turns)
                    run = {
                        "recording": name,
                        "turns": len(turns),
                        "wer_live_vs_batch": round(word_error_rate(whole, live), 4),
                    }
                    if name in REFERENCES:  # both against what was said
                        for kind, text in (("live", live), ("batch", whole)):
                            run[f"wer_{kind}"] = round(word_error_rate(REFERENCES[name], text), 4)
                    errors.append(run)
            print(
                json.dumps({"bench": "realtime word error (live turns against the batch transcript)", "runs": errors})
            )
            latency = {
                "final_after_speech_stopped_s": spread(finals),
                "final_vs_batch_of_the_turn": spread(ratios),
                "final_after_the_turns_audio_was_sent_s": spread(after_audio),
                "that_vs_batch_of_the_turn": spread(after_audio_ratios),
                "first_words_after_speech_s (turns > 2 s)": spread(first_words),
            }
            print(json.dumps({"bench": "realtime latency per turn", "turns": len(finals), **latency}))
        finally:
            service.stop()


if __name__ == "__main__":
    main()
