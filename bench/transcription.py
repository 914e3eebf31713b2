"""Transcription speed and accuracy: edge-asr end to end through its HTTP service against
faster-whisper (CTranslate2) on the same Whisper weights (``--model``: tiny.en by default, or
whisper-base) and recordings, at greedy and at beam 5, in one script. Same decoding on both sides:
Silero VAD, segment timestamps, temperature fallback (best of 5), no conditioning on previous
text, fp32, the same thread count; English given for the English recordings.

Recordings: the public readings, a 10-minute recording of them between 2-9 s silences, and 24
short sentences read by espeak-ng voices between 0.5-9 s pauses (``edge_asr.samples``; needs
Debian's espeak-ng, which ``scripts/bench.sh`` installs); for a multilingual model also German and
Spanish sentences (``samples.FOREIGN``), whose language both sides detect.

``--profile`` instead splits edge-asr's time on the 10-minute recording, in process: VAD,
encoder, decoder steps, and the rest (search, logit rules, features).

usage: python -m bench.transcription [--model whisper-base] [--repeats 2] [--minutes 10] [--profile]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from faster_whisper import WhisperModel as FasterWhisper

from bench._peers import ct2_weights
from bench._timing import median_time
from edge_asr.audio import SAMPLE_RATE, decode_audio
from edge_asr.config import load_config
from edge_asr.evaluation import word_error_rate
from edge_asr.manifest import get_model
from edge_asr.runtime.onnx import share_one_thread_pool
from edge_asr.samples import FOREIGN, REFERENCES, espeak, espeak_recording, long_recording, sample_clips
from edge_asr.vad import SileroVad
from edge_asr.whisper.graphs import OnnxWhisperGraphs
from edge_asr.whisper.model import WhisperModel
from edge_asr.whisper.transcribe import transcribe
from tests.service import Service

BEAMS = (1, 5)


def timed(fn: Callable[[], str], repeats: int) -> tuple[float, str]:
    """Median wall time of ``repeats`` calls after one warm-up, and the text."""
    text = fn()
    return median_time(fn, repeats), text


Clip = tuple[Path, str | None, str | None]  # audio file, reference text or None, language or None (detect)


def recordings(config: Any, minutes: float, work: Path, multilingual: bool) -> dict[str, Clip]:
    """Name -> clip."""
    clips = sample_clips(config)
    speech = {name: decode_audio(path) for name, path in clips.items()}
    found: dict[str, Clip] = {name: (path, REFERENCES.get(name), "en") for name, path in clips.items()}
    made: dict[str, tuple[np.ndarray, str, str | None]] = {}
    long = long_recording(speech, minutes * 60)
    made[f"recording_{minutes:g}min"] = (long.audio, long.reference, "en")
    if shutil.which("espeak-ng"):
        sentences = espeak_recording()
        made["espeak_24_sentences"] = (sentences.audio, sentences.reference, "en")
        if multilingual:
            made |= {f"espeak_{code}": (espeak(text, code), text, None) for code, (text, _) in FOREIGN.items()}
    else:
        print("espeak-ng not installed: the espeak recordings are skipped", file=sys.stderr)
    for name, (audio, reference, language) in made.items():
        soundfile.write(work / f"{name}.flac", audio, SAMPLE_RATE)
        found[name] = (work / f"{name}.flac", reference, language)
    return found


def compare(args: argparse.Namespace, config: Any, theirs: FasterWhisper, threads: int) -> None:
    work = Path(tempfile.mkdtemp())
    files = recordings(config, args.minutes, work, theirs.model.is_multilingual)
    service = Service(work / "state", EDGE_ASR_ORT_THREADS=str(threads)).start()
    try:
        for beam in BEAMS:
            totals = dict.fromkeys(("audio", "service", "faster_whisper"), 0.0)
            for name, (path, reference, language) in files.items():
                data = path.read_bytes()
                seconds = len(decode_audio(data)) / SAMPLE_RATE
                given = {"language": language} if language else {}

                def via_service(data: bytes = data, beam: int = beam, given: dict = given) -> str:
                    response = service.transcribe(data, args.model, beam_size=str(beam), timeout=1800, **given)
                    assert response.ok, response.text
                    return response.json()["text"]

                def via_faster_whisper(path: Path = path, beam: int = beam, language: str | None = language) -> str:
                    segments, _ = theirs.transcribe(
                        str(path), beam_size=beam, language=language, vad_filter=True, condition_on_previous_text=False
                    )
                    return " ".join(s.text.strip() for s in segments)

                service_s, service_text = timed(via_service, args.repeats)
                theirs_s, theirs_text = timed(via_faster_whisper, args.repeats)
                row: dict[str, Any] = {
                    "beam_size": beam,
                    "clip": name,
                    "audio_s": round(seconds, 1),
                    "service_rtf": round(service_s / seconds, 4),
                    "faster_whisper_rtf": round(theirs_s / seconds, 4),
                    "service/faster_whisper": round(service_s / theirs_s, 3),
                }
                if reference:
                    row["service_wer"] = round(word_error_rate(reference, service_text, language), 4)
                    row["faster_whisper_wer"] = round(word_error_rate(reference, theirs_text, language), 4)
                print(json.dumps(row), flush=True)
                for key, value in (("audio", seconds), ("service", service_s), ("faster_whisper", theirs_s)):
                    totals[key] += value
            summary = {
                "summary": "wall time ratio, lower is faster",
                "beam_size": beam,
                "threads": threads,
                "service/faster_whisper": round(totals["service"] / totals["faster_whisper"], 3),
                "service_rtf": round(totals["service"] / totals["audio"], 4),
                "faster_whisper_rtf": round(totals["faster_whisper"] / totals["audio"], 4),
            }
            print(json.dumps(summary), flush=True)
    finally:
        service.stop()


def profile(config: Any, model_id: str, minutes: float, threads: int) -> None:
    """Where edge-asr's time goes on the long recording, at each beam size, in process (its CPU
    threads as a worker's: one pool)."""
    share_one_thread_pool(threads)
    spec, vad_spec = get_model(config, model_id), get_model(config, "silero-vad")
    model = WhisperModel(spec.directory, OnnxWhisperGraphs(spec.directory, threads=threads))
    vad = SileroVad(vad_spec.directory / vad_spec.files[0])
    speech = {name: decode_audio(path) for name, path in sample_clips(config).items()}
    audio = long_recording(speech, minutes * 60).audio
    spent: dict[str, float] = {}
    calls: dict[str, int] = {}

    def timing(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
                calls[name] = calls.get(name, 0) + 1

        return wrapped

    graphs = model.graphs
    graphs.encode = timing("encoder", graphs.encode)  # type: ignore[method-assign]
    graphs.decode = timing("decoder steps", graphs.decode)  # type: ignore[method-assign]
    graphs.reorder = timing("cache reorder", graphs.reorder)  # type: ignore[method-assign]
    vad.speech_spans = timing("VAD", vad.speech_spans)  # type: ignore[method-assign]
    transcribe(model, vad, audio[: 30 * SAMPLE_RATE])  # warm-up
    for beam in BEAMS:
        spent.clear()
        calls.clear()
        start = time.perf_counter()
        transcribe(model, vad, audio, language="en", beam_size=beam)
        total = time.perf_counter() - start
        parts = {name: round(seconds, 2) for name, seconds in spent.items()}
        parts["rest (search, logit rules, features)"] = round(total - sum(spent.values()), 2)
        print(json.dumps({"beam_size": beam, "total_s": round(total, 2), "seconds": parts, "calls": calls}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="whisper-tiny-en", help="a Whisper model of the manifest")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10, help="length of the long recording")
    parser.add_argument("--profile", action="store_true", help="where edge-asr's time goes instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = load_config()
    threads = os.cpu_count() or 1
    if args.profile:
        profile(config, args.model, args.minutes, threads)
        return
    spec = get_model(config, args.model)
    theirs = FasterWhisper(str(ct2_weights(config, spec)), device="cpu", compute_type="float32", cpu_threads=threads)
    compare(args, config, theirs, threads)


if __name__ == "__main__":
    main()
