"""When live transcription may commit a word: LocalAgreement-2, as whisper_streaming commits text
(Macháček et al., 2023). The speech so far is decoded again as it grows; the words two successive
decodes agree on, from the start, are committed: sent to the client and never taken back. Later
decodes are forced to start with the committed words (``TranscriptionOptions.prefix``), so only
what follows them is decoded again.

Words are compared as a listener would (case and punctuation aside), so "Turn off" and "turn off,"
agree; a committed word keeps the newer decode's spelling.
"""

from __future__ import annotations

import string

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _normal(word: str) -> str:
    return word.lower().translate(_PUNCTUATION)


def agreed(previous: list[str], current: list[str]) -> int:
    """How many words ``previous`` and ``current`` agree on, from the first."""
    count = 0
    for a, b in zip(previous, current, strict=False):
        if _normal(a) != _normal(b):
            break
        count += 1
    return count


class LocalAgreement:
    """The committed words of one stream of speech, and the last decode's words after them."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self._pending: list[str] = []  # the last decode's words after the committed ones

    @property
    def text(self) -> str:
        return " ".join(self.committed)

    def update(self, hypothesis: str) -> list[str]:
        """Take a new decode's whole text (it starts with the committed words, which were forced);
        the words it newly commits: those after the committed words it shares with the last
        decode."""
        words = hypothesis.split()
        if not self._continues(words):  # not forced (a decode that found no speech)
            return []
        after = words[len(self.committed) :]
        count = agreed(self._pending, after)
        self.committed += after[:count]
        self._pending = after[count:]
        return after[:count]

    def final(self, text: str) -> tuple[str, list[str]]:
        """The whole transcript, given the final decode's text, and its words after the committed
        ones. The committed words stay even where the final decode lost them (a window it judged
        silent): they were sent."""
        words = text.split()
        if not self._continues(words):
            return self.text, []
        return text, words[len(self.committed) :]

    def _continues(self, words: list[str]) -> bool:
        """Whether ``words`` start with the committed ones."""
        return agreed(self.committed, words) == len(self.committed)
