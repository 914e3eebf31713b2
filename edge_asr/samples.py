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


# Where the Beckett reading's six sentences part (seconds: the middles of its pauses).
BECKETT_PARTS = (1.55, 3.17, 4.54, 6.13, 7.78)


def sample_clips(config: Config) -> dict[str, Path]:
    """Paths of the sample clips by name, downloading them on first use."""
    folder = config.cache_dir / "samples" / PACKAGE.replace("==", "-")
    members = {name: f"moonshine_voice/assets/{name}.wav" for name in CLIPS}
    paths = {name: folder / member for name, member in members.items()}
    if not all(p.is_file() for p in paths.values()):
        extract_wheel(sys.executable, PACKAGE, folder, members.values(), PLATFORM)
    return paths


# pyannote.audio's (MIT) own sample: two people talking, 30 s, and its reference turns (RTTM).
PYANNOTE = "pyannote.audio==3.3.2"
PYANNOTE_SAMPLE = ("pyannote/audio/sample/sample.wav", "pyannote/audio/sample/sample.rttm")


def conversation(config: Config) -> tuple[Path, str]:
    """pyannote.audio's sample conversation: its audio file and its RTTM, fetched on first use."""
    folder = config.cache_dir / "samples" / PYANNOTE.replace("==", "-")
    wav, rttm = (folder / member for member in PYANNOTE_SAMPLE)
    if not wav.is_file() or not rttm.is_file():
        extract_wheel(sys.executable, PYANNOTE, folder, PYANNOTE_SAMPLE)
    return wav, rttm.read_text()


@dataclass(frozen=True)
class Meeting:
    """A recording with known turns, built of two people's real speech: the Dickens reader and the
    second voice of pyannote's conversation ("speaker91"), with a reference clip of each that is
    not in the recording (for known speakers)."""

    audio: np.ndarray
    turns: list[tuple[float, float, str]]  # start, end (seconds), who
    references: dict[str, np.ndarray]


GAP = 0.5  # seconds of silence between two turns
MEETING = (  # who, source, start, end (seconds)
    ("reader", "two_cities", 1.0, 8.5),
    ("guest", "conversation", 14.7, 17.92),
    ("reader", "two_cities", 13.2, 16.9),
    ("guest", "conversation", 21.78, 24.6),
    ("reader", "two_cities", 17.3, 20.6),
)
MEETING_REFERENCES = {"reader": ("two_cities", 32.7, 41.6), "guest": ("conversation", 24.6, 27.85)}


def meeting(config: Config) -> Meeting:
    """The turns of the reader are cut where the reading is heard (``audible_interval``); the
    guest's are turns of the conversation's reference RTTM where nobody else speaks."""
    from edge_asr.audio import decode_audio

    sources = {
        "two_cities": decode_audio(sample_clips(config)["two_cities"]),
        "conversation": decode_audio(conversation(config)[0]),
    }

    def piece(source: str, start: float, end: float) -> np.ndarray:
        cut = sources[source][round(start * 16000) : round(end * 16000)]
        if source == "two_cities":
            heard = audible_interval(cut)
            cut = cut[round(heard[0] * 16000) : round(heard[1] * 16000)]
        return cut

    pieces, turns, at = [], [], 0.0
    gap = np.zeros(round(GAP * 16000), np.float32)
    for who, source, start, end in MEETING:
        cut = piece(source, start, end)
        pieces += [cut, gap]
        turns.append((at, at + len(cut) / 16000, who))
        at += (len(cut) + len(gap)) / 16000
    references = {who: piece(*where) for who, where in MEETING_REFERENCES.items()}
    return Meeting(np.concatenate(pieces[:-1]), turns, references)


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
    sentences: tuple[str, ...] = ()  # what is said, piece by piece, in order


def sentences(speech: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """Short sentences with their text, cut from the readings: Beckett's six ("Ever tried.", ...)."""
    cuts = [0, *(round(t * 16000) for t in BECKETT_PARTS), len(speech["beckett"])]
    texts = [t.strip() + "." for t in REFERENCES["beckett"].split(".") if t.strip()]
    return [(text, speech["beckett"][a:b]) for text, a, b in zip(texts, cuts[:-1], cuts[1:], strict=True)]


# Sentences for a synthetic recording (espeak-ng voices), short and plain, as a field unit hears them.
SPOKEN = (
    "The pump in the north room is running hot again.",
    "Please check the pressure on line three.",
    "We replaced the filter this morning.",
    "The alarm went off at ten past six.",
    "Nobody was hurt.",
    "Open the valve slowly.",
    "The boiler needs a new gasket before winter.",
    "Call the night shift if the light turns red.",
    "Write the reading in the log book.",
    "The fan on the roof is making a loud noise.",
    "Turn off the main switch before you start.",
    "The tank is almost empty.",
    "Order two more drums of oil.",
    "The door to the store room is stuck.",
    "Keep the area clear of tools.",
    "The meter shows forty two degrees.",
    "Check the belt for cracks.",
    "The heater in the office works fine now.",
    "Bring the spare key to the gate.",
    "The water level dropped overnight.",
    "Tell the manager the truck is late.",
    "Clean the screen on the control panel.",
    "The new sensor arrived yesterday.",
    "That is all for today.",
)
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en-us+m3", "en-gb-x-rp")
# Speech in other languages (espeak-ng's voices of them), with what it says in English. espeak's
# German is hard for Whisper base: "Die Pumpe im Keller ist wieder zu heiß." was heard as Thai
# (p 0.52; faster-whisper on the same weights: English, 0.33); these sentences are heard right.
FOREIGN = {
    "de": (
        "Die Heizung im Büro funktioniert nicht. Wir brauchen einen neuen Filter für die Pumpe.",
        "The heating in the office does not work. We need a new filter for the pump.",
    ),
    "es": (
        "La calefacción de la oficina no funciona. Necesitamos un filtro nuevo para la bomba.",
        "The heating in the office does not work. We need a new filter for the pump.",
    ),
}


def espeak(text: str, voice: str = "en-us") -> np.ndarray:
    """``text`` read by espeak-ng (Debian's ``espeak-ng``) in ``voice`` (a language code or a
    variant, ``espeak-ng --voices``), as 16 kHz mono float32."""
    import subprocess
    import tempfile

    from edge_asr.audio import decode_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(wav), text], check=True)
        return decode_audio(wav)


def espeak_recording(seed: int = 12) -> Recording:
    """``SPOKEN`` read by espeak-ng voices (Debian's ``espeak-ng``), between pauses of 0.5 to 9 s:
    the recording that lost a sentence before the seek (issue 11); about 150 s."""
    rng = np.random.default_rng(seed)
    pauses = [0.5, 9.0, *rng.uniform(0.5, 9.0, len(SPOKEN) - 2)]
    rng.shuffle(pauses)
    pieces, readings, position = [], [], 0.0
    for i, (text, pause) in enumerate(zip(SPOKEN, pauses, strict=True)):
        audio = espeak(text, VOICES[i % len(VOICES)])
        pieces += [np.zeros(int(pause * 16000), np.float32), audio]
        position += pause
        readings.append((position, position + len(audio) / 16000))
        position += len(audio) / 16000
    pieces.append(np.zeros(16000, np.float32))
    return Recording(np.concatenate(pieces), " ".join(SPOKEN), readings, SPOKEN)


def sentence_recording(speech: dict[str, np.ndarray], seed: int = 11) -> Recording:
    """Many short sentences (Beckett's six, twice, in a shuffled order) and the Dickens reading,
    between pauses of 0.5 to 9 s (the shortest and the longest always among them): what a
    transcript must not lose a sentence of."""
    rng = np.random.default_rng(seed)
    short = sentences(speech)
    order = [short[i] for i in rng.permutation(len(short))] + [short[i] for i in rng.permutation(len(short))]
    order.insert(len(order) // 2, (REFERENCES["two_cities"], speech["two_cities"]))
    pauses = [0.5, 9.0, *rng.uniform(0.5, 9.0, len(order) - 2)]
    rng.shuffle(pauses)
    pieces, readings, position = [], [], 0.0
    for (_, audio), pause in zip(order, pauses, strict=True):
        pieces += [np.zeros(int(pause * 16000), np.float32), audio]
        position += pause
        readings.append((position, position + len(audio) / 16000))
        position += len(audio) / 16000
    pieces.append(np.zeros(16000, np.float32))
    texts = tuple(text for text, _ in order)
    return Recording(np.concatenate(pieces), " ".join(texts), readings, texts)


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
