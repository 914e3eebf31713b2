"""What the front makes of a diarization's turns: each speaker's label (a known speaker's name where
the voices match, else ``A``, ``B``, ... as OpenAI labels them), the speaker of each transcript
segment, and RTTM, the diarization community's text format."""

from __future__ import annotations

import string
from typing import Any

import numpy as np

from edge_asr.workers.protocol import DiarizationResult, SpeakerTurn

# The cosine similarity of two CAM++ voices above which they are taken for the same person. On the
# sample recordings the same person in two clips scored 0.74-0.95, the Dickens reader against the
# others 0.29-0.45, but the two people of pyannote's conversation 0.67-0.75: a known voice takes
# the speaker it matches best, so with both of two similar people known each gets their own name.
SAME_VOICE = 0.5


def speaker_labels(
    found: DiarizationResult, known: dict[str, list[float]], same_voice: float = SAME_VOICE
) -> list[str]:
    """A label for each speaker found (in the order of their first turns): the name of the known
    voice theirs matches best, where that match is above ``same_voice`` (two voices the clustering
    kept apart may both take one name: the known voice says they are one person); the others
    ``A``, ``B``, ... in order, skipping the known names."""
    names = list(known)
    labels: list[str | None] = [None] * found["speakers"]
    if names and len(found["voices"]) == found["speakers"] > 0:  # voices embedded (asked for with known ones)
        similarity = np.asarray(found["voices"]) @ np.asarray([known[n] for n in names]).T
        for voice, best in enumerate(similarity.argmax(axis=1)):
            if similarity[voice, best] > same_voice:
                labels[voice] = names[best]
    letters = (label for label in _letters() if label not in known)
    return [label if label is not None else next(letters) for label in labels]


def _letters() -> list[str]:
    single = list(string.ascii_uppercase)
    return single + [a + b for a in single for b in single]


def with_speakers(segments: list[dict[str, Any]], turns: list[SpeakerTurn], labels: list[str]) -> list[dict[str, Any]]:
    """Each transcript segment with the speaker whose turns overlap it most; one no turn overlaps
    (speech the diarization dropped as too short) takes the nearest turn's speaker, and where the
    diarization heard nobody, all are ``A``. Segments are not split: Whisper's segments have no
    word times to split them at."""
    found = []
    for segment in segments:
        overlap = np.zeros(len(labels))
        for turn in turns:
            shared = min(segment["end"], turn["end"]) - max(segment["start"], turn["start"])
            overlap[turn["speaker"]] += max(0.0, shared)
        if overlap.any():
            speaker = int(np.argmax(overlap))
        elif turns:
            middle = (segment["start"] + segment["end"]) / 2
            speaker = min(turns, key=lambda t: min(abs(t["start"] - middle), abs(t["end"] - middle)))["speaker"]
        else:
            speaker = None
        found.append({**segment, "speaker": labels[speaker] if speaker is not None else "A"})
    return found


def who_said_what(segments: list[dict[str, Any]]) -> str:
    """A transcript as a line a turn, ``speaker: text``, for an LLM to read (one speaker's
    consecutive segments joined)."""
    lines: list[list[str]] = []
    for segment in segments:
        if lines and lines[-1][0] == segment["speaker"]:
            lines[-1].append(segment["text"].strip())
        else:
            lines.append([segment["speaker"], segment["text"].strip()])
    return "\n".join(f"{who}: {' '.join(texts)}" for who, *texts in lines)


def diarization_json(found: DiarizationResult, labels: list[str]) -> dict[str, Any]:
    """speaches' ``/v1/audio/diarization`` answer: the duration and the turns."""
    turns = [{"start": t["start"], "end": t["end"], "speaker": labels[t["speaker"]]} for t in found["turns"]]
    return {"duration": round(found["duration"], 3), "segments": turns}


def rttm(found: DiarizationResult, labels: list[str], recording: str) -> str:
    """One ``SPEAKER`` line a turn (NIST's Rich Transcription Time Marked format)."""

    def field(text: str) -> str:  # RTTM's fields are parted by spaces
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "_"

    lines = []
    for t in found["turns"]:
        timing = f"{t['start']:.3f} {t['end'] - t['start']:.3f}"
        lines.append(f"SPEAKER {field(recording)} 1 {timing} <NA> <NA> {field(labels[t['speaker']])} <NA> <NA>\n")
    return "".join(lines)
