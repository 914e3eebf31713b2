"""Public speech clips with known text, for the demo, the tests and the benchmarks.

They come from the ``moonshine-voice`` wheel on PyPI (its assets folder); only the WAV files are
used, so the x86-64 wheel serves every machine. Fetched once into ``<cache_dir>/samples``.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
