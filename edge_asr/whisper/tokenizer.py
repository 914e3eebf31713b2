"""Whisper's byte-level BPE through the ``tokenizers`` library, plus the special-token table that
the exporter wrote into ``whisper.json``."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from edge_asr.errors import RequestError


class WhisperTokenizer:
    def __init__(self, tokenizer_json: Path, special: dict[str, int], languages: dict[str, int]):
        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.special = special
        self.languages = languages
        self.eot = special["eot"]

    @property
    def multilingual(self) -> bool:
        return bool(self.languages)

    def prompt(
        self,
        language: str | None = None,
        previous_text: str | None = None,
        timestamps: bool = True,
        max_previous: int = 223,
        task: str = "transcribe",
    ) -> list[int]:
        """The decoder's start sequence.

        English-only models take ``<|startoftranscript|>`` and only transcribe English;
        multilingual ones also the language (English when None) and the task (``transcribe``, or
        ``translate``: to English); without timestamps, ``<|notimestamps|>`` ends it.
        ``previous_text`` (the user's prompt or hotwords) goes before, after ``<|startofprev|>``,
        as in the reference implementation: it biases spelling and vocabulary. Only its last
        ``max_previous`` tokens are kept.
        """
        if task not in ("transcribe", "translate"):
            raise RequestError(f"task must be transcribe or translate, not {task!r}")
        tokens = []
        if previous_text and previous_text.strip():
            tokens = [self.special["sot_prev"], *self.text_tokens(previous_text)[-max_previous:]]
        tokens.append(self.special["sot"])
        if self.languages:
            code = language or "en"
            if code not in self.languages:
                raise RequestError(f"unsupported language {code!r}")
            tokens += [self.languages[code], self.special[task]]
        elif language not in (None, "en"):
            raise RequestError(f"this model is English-only; language {language!r} is not available")
        elif task == "translate":
            raise RequestError("this model is English-only; it cannot translate")
        return tokens if timestamps else [*tokens, self.special["no_timestamps"]]

    def text_tokens(self, text: str) -> list[int]:
        """The tokens of ``text`` as Whisper writes it: after a space."""
        return self._tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        """Text of the tokens below ``<|endoftext|>`` (specials and timestamps are dropped)."""
        return self._tokenizer.decode([t for t in tokens if t < self.eot])
