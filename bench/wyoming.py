"""Home Assistant's Wyoming protocol: edge-asr against what people run for it today, measured by
the peers' own benchmark tool, ``wyoming-bench`` (pinned), in one run:

- speech to text: edge-asr's Wyoming server against ``wyoming-faster-whisper`` on the same
  Whisper tiny.en weights (the CTranslate2 model edge-asr converts; beam 5, float32, 2 CPU
  threads on both sides), on a corpus of spoken home and plant-room commands this script builds
  (espeak-ng voices, 16 kHz WAV with their texts, wyoming-bench's corpus format). Audio sent at
  once (wyoming-bench's non-streaming mode) on both; at real-time pace (its streaming mode,
  ``--chunk-delay`` one chunk's duration) on edge-asr, which streams transcripts.
  wyoming-faster-whisper advertises no streaming and wyoming-bench runs it without, so the
  bars compare edge-asr's time from the end of the audio to its final transcript (streaming
  total minus the time the paced audio took to send) with the time wyoming-faster-whisper needs
  for the whole command sent at once;
- text to speech: edge-asr against ``wyoming-piper`` with the same voice file (joe, medium),
  text sent whole and streamed a sentence at a time: the time to the first audio.

The bars (issue 23): WER no worse; at real-time pace the final transcript follows the end of the
audio in <= 0.5x wyoming-faster-whisper's whole-command time; audio sent at once, <= 0.8x its
time; first audio <= 1.1x wyoming-piper's, streamed and not. Medians over every sample and
round; ratios = edge-asr / peer.

usage: python -m bench.wyoming [--rounds 2]   (after `source scripts/env.sh`; the peers' venvs
are made on first use, in the cache directory)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile

from bench._peers import ct2_weights
from edge_asr.audio import SAMPLE_RATE
from edge_asr.config import load_config
from edge_asr.manifest import get_model
from edge_asr.samples import VOICES, espeak
from tests.peers import PEER_ENV, peer_python
from tests.service import Service, free_ports

PEERS = {
    "wyoming-bench": ["wyoming-bench==2026.10.0"],
    "wyoming-faster-whisper": ["wyoming-faster-whisper==3.8.1"],
    "wyoming-piper": ["wyoming-piper==2.5.2"],
}
COMMANDS = (
    "Turn off the lights in the pump room.",
    "Close the valve on the cooling line.",
    "What is the temperature in the boiler room?",
    "Start the ventilation fan.",
    "Set the heating to low for the night.",
    "Is the back door locked?",
    "Open the shutters in the workshop.",
    "Switch on the lights in the hallway.",
    "How much water is left in the tank?",
    "Stop the compressor.",
    "Turn the radio down a little.",
    "Remind me to check the filters tomorrow morning.",
    "Lock the front gate.",
    "What is the pressure on the main line?",
    "Dim the lights in the kitchen.",
    "Turn on the pump in the cellar.",
)
CHUNK_SAMPLES = 1024
TRAILING_SILENCE = 0.5  # wyoming-bench's default: sent after each recording
THREADS = 2
VOICE_FILE = "en_US-joe-medium"
STT_LINE = re.compile(r"^\[(\w+)\] r\d+ \S+ total=(\d+)ms ttft=\S+ WER=\S+ audio=([\d.]+)s$")
TTS_LINE = re.compile(r"^\[(\w+)\] r\d+ sent=\d+ ttft=(\d+)ms total=\d+ms")
MODE_HEADER = re.compile(r"^\[(\w+)\] ok=(\d+) fail=(\d+)$")
ACCURACY = re.compile(r"^\s+Accuracy\s+WER=([\d.]+)%")


def build_corpus(directory: Path) -> float:
    """The commands read by espeak-ng voices in turn, as wyoming-bench's corpus; their mean length."""
    seconds = []
    for i, text in enumerate(COMMANDS):
        audio = espeak(text, VOICES[i % len(VOICES)])
        soundfile.write(directory / f"command_{i:02d}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
        (directory / f"command_{i:02d}.txt").write_text(text)
        seconds.append(len(audio) / SAMPLE_RATE)
    return statistics.mean(seconds)


def wait_until_served(port: int, process: subprocess.Popen | None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


def wyoming_bench(python: Path, *args: str) -> str:
    """Run the wyoming-bench command (installed beside ``python``); its report, also shown."""
    command = [str(python.parent / "wyoming-bench"), *args]
    done = subprocess.run(command, env=PEER_ENV, capture_output=True, text=True, check=True)
    print(done.stdout, file=sys.stderr)
    return done.stdout


def stt_figures(report: str) -> dict[str, dict]:
    """By mode: each measurement's (total s, audio s) and the mode's word error rate."""
    modes: dict[str, dict] = {}
    current = None
    for line in report.splitlines():
        if found := STT_LINE.match(line):
            mode = modes.setdefault(found[1], {"runs": []})
            mode["runs"].append((int(found[2]) / 1000, float(found[3])))
        elif found := MODE_HEADER.match(line):
            current = found[1]
            modes.setdefault(current, {"runs": []})["failed"] = int(found[3])
        elif (found := ACCURACY.match(line)) and current is not None:
            modes[current]["wer"] = float(found[1]) / 100
    return modes


def tts_first_audio(report: str) -> dict[str, float]:
    """By mode: the median time to the first audio, seconds."""
    firsts: dict[str, list[float]] = {}
    for line in report.splitlines():
        if found := TTS_LINE.match(line):
            firsts.setdefault(found[1], []).append(int(found[2]) / 1000)
    return {mode: statistics.median(times) for mode, times in firsts.items()}


def sending_time(audio_s: float, delay: float) -> float:
    """How long wyoming-bench takes to send a recording paced at ``delay`` a chunk (its trailing
    silence included; the sleeps' own overshoot is not subtracted, to edge-asr's cost)."""
    return math.ceil((audio_s + TRAILING_SILENCE) * SAMPLE_RATE / CHUNK_SAMPLES) * delay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    config = load_config()
    bench = peer_python(config, "wyoming-bench", PEERS["wyoming-bench"])
    whisper_python = peer_python(config, "wyoming-faster-whisper", PEERS["wyoming-faster-whisper"])
    piper_python = peer_python(config, "wyoming-piper", PEERS["wyoming-piper"])
    weights = ct2_weights(config, get_model(config, "whisper-tiny-en"))
    voice = get_model(config, "piper-joe-en")
    work = Path(tempfile.mkdtemp())
    corpus = work / "corpus"
    corpus.mkdir()
    mean_audio = build_corpus(corpus)
    delay = CHUNK_SAMPLES / SAMPLE_RATE  # real time
    rounds = ["--rounds", str(args.rounds), "--warmup", "1", "-v", "--timeout", "120"]

    whisper_port, piper_port = free_ports(2)
    whisper = [
        *(str(whisper_python), "-m", "wyoming_faster_whisper", "--uri", f"tcp://127.0.0.1:{whisper_port}"),
        *("--model", str(weights), "--data-dir", str(work), "--device", "cpu", "--compute-type", "float32"),
        *("--beam-size", "5", "--cpu-threads", str(THREADS), "--language", "en"),
    ]
    piper = [
        *(str(piper_python), "-m", "wyoming_piper", "--uri", f"tcp://127.0.0.1:{piper_port}"),
        *("--voice", VOICE_FILE, "--data-dir", str(voice.directory), "--download-dir", str(work)),
    ]
    with contextlib.ExitStack() as running:  # whatever fails, every server is stopped and the work removed
        running.callback(shutil.rmtree, work, ignore_errors=True)
        ours = Service(work / "state", EDGE_ASR_ORT_THREADS=str(THREADS)).start()
        running.callback(ours.stop)
        peers = [running.enter_context(subprocess.Popen(command, env=PEER_ENV)) for command in (whisper, piper)]
        for process in peers:
            running.callback(process.terminate)
        for port, process in ((whisper_port, peers[0]), (piper_port, peers[1]), (ours.wyoming_port, None)):
            wait_until_served(port, process)
        corpus_args = ["--corpus", str(corpus), "--chunk-samples", str(CHUNK_SAMPLES), *rounds]
        stt_ours = stt_figures(
            wyoming_bench(bench, "stt", f"127.0.0.1:{ours.wyoming_port}", *corpus_args, "--chunk-delay", str(delay))
        )
        stt_theirs = stt_figures(
            wyoming_bench(bench, "stt", f"127.0.0.1:{whisper_port}", *corpus_args, "--mode", "non_streaming")
        )
        tts_ours = tts_first_audio(wyoming_bench(bench, "tts", f"127.0.0.1:{ours.wyoming_port}", *rounds))
        tts_theirs = tts_first_audio(wyoming_bench(bench, "tts", f"127.0.0.1:{piper_port}", *rounds))

    at_once = statistics.median(total for total, _ in stt_ours["non_streaming"]["runs"])
    theirs = statistics.median(total for total, _ in stt_theirs["non_streaming"]["runs"])
    paced = stt_ours["streaming"]["runs"]
    after_audio = statistics.median(total - sending_time(audio, delay) for total, audio in paced)
    failed = sum(mode.get("failed", 0) for mode in (*stt_ours.values(), *stt_theirs.values()))
    figures = {
        "bench": "wyoming",
        "commands": len(COMMANDS),
        "mean_command_s": round(mean_audio, 2),
        "rounds": args.rounds,
        "failed": failed,
        "wer_edge_asr_at_once": stt_ours["non_streaming"]["wer"],
        "wer_edge_asr_real_time": stt_ours["streaming"]["wer"],
        "wer_wyoming_faster_whisper": stt_theirs["non_streaming"]["wer"],
        "wyoming_faster_whisper_whole_command_s": round(theirs, 3),
        "edge_asr_at_once_s": round(at_once, 3),
        "edge_asr_after_audio_real_time_s": round(after_audio, 3),
        "at_once_ratio": round(at_once / theirs, 3),
        "real_time_after_audio_ratio": round(after_audio / theirs, 3),
        "first_audio_s": {"edge_asr": tts_ours, "wyoming_piper": tts_theirs},
        "first_audio_ratio": {mode: round(tts_ours[mode] / tts_theirs[mode], 3) for mode in tts_theirs},
    }
    wer_ok = (
        max(figures["wer_edge_asr_at_once"], figures["wer_edge_asr_real_time"]) <= figures["wer_wyoming_faster_whisper"]
    )
    figures["bars_met"] = {
        "wer_no_worse": wer_ok,
        "real_time_after_audio_le_0.5": figures["real_time_after_audio_ratio"] <= 0.5,
        "at_once_le_0.8": figures["at_once_ratio"] <= 0.8,
        "first_audio_le_1.1": all(r <= 1.1 for r in figures["first_audio_ratio"].values()),
        "no_failures": failed == 0,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
