"""Public speech clips with known text, for the demo, the tests and the benchmarks.

They come from the ``moonshine-voice`` wheel on PyPI (its assets folder); only the WAV files are
used, so the x86-64 wheel serves every machine. Fetched once into ``<cache_dir>/samples``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_asr.config import Config
from edge_asr.wheels import extract_wheel

PACKAGE = "moonshine-voice==0.1.5"
PLATFORM = "manylinux_2_34_x86_64"
CLIPS = ("beckett", "two_cities", "endgame_nagg_nell")

# What is said in the clips that have a published text.
REFERENCES = {
    "beckett": "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
    "two_cities": (
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
        "it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had "
        "everything before us, we had nothing before us, we were all going direct to Heaven, we were all "
        "going direct the other way -- in short, the period was so far like the present period, that some "
        "of its noisiest authorities insisted on its being received, for good or for evil, in the "
        "superlative degree of comparison only."
    ),
}


def sample_clips(config: Config) -> dict[str, Path]:
    """Paths of the sample clips by name, downloading them on first use."""
    folder = config.cache_dir / "samples" / PACKAGE.replace("==", "-")
    members = {name: f"moonshine_voice/assets/{name}.wav" for name in CLIPS}
    paths = {name: folder / member for name, member in members.items()}
    if not all(p.is_file() for p in paths.values()):
        extract_wheel(sys.executable, PACKAGE, folder, members.values(), PLATFORM)
    return paths


def audible_interval(audio: np.ndarray, rate: int = 16000) -> tuple[float, float]:
    """First and last 10-ms frame above -45 dBFS, well over these recordings' noise floor
    (-60 dBFS): where the reader is heard, in seconds. (A breath after the last word counts: a
    VAD cannot tell it from speech either.)"""
    hop = rate // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 10 ** (-45 / 20))
    return loud[0] / 100, (loud[-1] + 1) / 100


@dataclass(frozen=True)
class Recording:
    audio: np.ndarray  # 16 kHz mono float32
    reference: str  # what is said
    readings: list[tuple[float, float]]  # where each reading is heard, in seconds


def long_recording(speech: dict[str, np.ndarray], seconds: float = 600, seed: int = 10) -> Recording:
    """A recording of at least ``seconds``: the clips with a published text, alternating,
    between silences of 2-9 s (16 kHz mono ``speech`` by clip name)."""
    rng = np.random.default_rng(seed)
    names = sorted(REFERENCES, reverse=True)
    pieces, references, readings, position = [], [], [], 0.0
    while position < seconds:
        name = names[len(references) % len(names)]
        gap = np.zeros(int(rng.uniform(2, 9) * 16000), np.float32)
        start, end = audible_interval(speech[name])
        position += len(gap) / 16000
        readings.append((position + start, position + end))
        position += len(speech[name]) / 16000
        pieces += [gap, speech[name]]
        references.append(REFERENCES[name])
    return Recording(np.concatenate(pieces), " ".join(references), readings)
