"""A Whisper model prepared by ``edge-asr models prepare`` (see
``edge_asr/prepare/convert/whisper_to_onnx.py`` for the graphs' contract), decoded greedily."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_asr.runtime.onnx import CPU, open_session
from edge_asr.whisper.features import log_mel_spectrogram
from edge_asr.whisper.tokenizer import WhisperTokenizer


class WhisperModel:
    def __init__(self, directory: Path, providers: Sequence[str] = (CPU,), threads: int = 0, gpu_mem_limit: int = 0):
        meta = json.loads((directory / "whisper.json").read_text())
        self.n_mels: int = meta["n_mels"]
        self.n_layers: int = meta["n_layers"]
        self.d_model: int = meta["d_model"]
        self.n_text_ctx: int = meta["n_text_ctx"]
        # The reference implementation samples at most half the text context per window.
        self.max_new_tokens: int = self.n_text_ctx // 2
        self.tokenizer = WhisperTokenizer(directory / "tokenizer.json", meta["tokens"], meta["languages"])
        self.encoder = open_session(directory / "encoder.onnx", providers, threads, gpu_mem_limit)
        self.decoder = open_session(directory / "decoder.onnx", providers, threads, gpu_mem_limit)
        vocab = meta["vocab_size"]
        # In text-only decoding every special and timestamp token is suppressed except <|endoftext|>.
        self._suppress = np.zeros(vocab, bool)
        self._suppress[meta["suppress_tokens"]] = True
        self._suppress[self.tokenizer.eot + 1 :] = True
        self._suppress_begin = self._suppress.copy()
        self._suppress_begin[meta["begin_suppress_tokens"]] = True

    @property
    def providers(self) -> list[str]:
        return self.encoder.get_providers()

    def decode_window(self, audio: np.ndarray, language: str | None = None, prompt: str | None = None) -> list[int]:
        """Greedy decoding of one window of at most 30 s; returns the text tokens."""
        mel = log_mel_spectrogram(audio, self.n_mels)[None]
        cross_k, cross_v = self.encoder.run(None, {"mel": mel})
        self_k = self_v = np.zeros((self.n_layers, 1, 0, self.d_model), np.float32)
        tokens = np.array([self.tokenizer.prompt(language, prompt, self.max_new_tokens - 1)], np.int64)
        out: list[int] = []
        for step in range(min(self.max_new_tokens, self.n_text_ctx - tokens.shape[1])):
            logits, self_k, self_v = self.decoder.run(
                None,
                {
                    "tokens": tokens,
                    "self_k": self_k,
                    "self_v": self_v,
                    "cross_k": cross_k,
                    "cross_v": cross_v,
                },
            )
            scores = logits[0]
            scores[self._suppress_begin if step == 0 else self._suppress] = -np.inf
            token = int(scores.argmax())
            if token == self.tokenizer.eot:
                break
            out.append(token)
            tokens = np.array([[token]], np.int64)
        return out

    def close(self) -> None:
        """Destroy the sessions, decoder then encoder (the runtime's memory goes with them)."""
        del self.decoder
        del self.encoder
