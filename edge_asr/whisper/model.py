"""A Whisper model prepared by ``edge-asr models prepare`` (see
``edge_asr/prepare/convert/whisper_to_onnx.py`` for the graphs' contract) and the decoding of one
window of at most 30 s: greedy, or sampling at a temperature, with or without timestamps. The
graphs run on ONNX Runtime or TensorRT (``graphs.py``); the decoding is the same on both."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_asr.config import Config
from edge_asr.manifest import ModelSpec
from edge_asr.whisper.decoding import NEG_INF, apply_timestamp_rules, log_softmax
from edge_asr.whisper.features import log_mel_spectrogram
from edge_asr.whisper.graphs import OnnxWhisperGraphs, WhisperGraphs, open_graphs
from edge_asr.whisper.search import BeamSearch, Sampling
from edge_asr.whisper.tokenizer import WhisperTokenizer

SECONDS_PER_TIMESTAMP = 0.02


@dataclass(frozen=True)
class WindowResult:
    tokens: list[int]  # what was sampled: text and timestamp tokens, without <|endoftext|>
    avg_logprob: float
    no_speech_prob: float  # probability of <|nospeech|> at the start: silence if high
    temperature: float


class WhisperModel:
    def __init__(self, directory: Path, graphs: WhisperGraphs | None = None):
        """The model in ``directory`` on ``graphs`` (default: ONNX Runtime on the CPU)."""
        meta = json.loads((directory / "whisper.json").read_text())
        self.n_mels: int = meta["n_mels"]
        self.n_text_ctx: int = meta["n_text_ctx"]
        # The reference implementation samples at most half the text context per window.
        self.max_new_tokens: int = self.n_text_ctx // 2
        self.tokenizer = WhisperTokenizer(directory / "tokenizer.json", meta["tokens"], meta["languages"])
        self.graphs = graphs or OnnxWhisperGraphs(directory)
        special = meta["tokens"]
        self.eot, self.timestamp_begin = special["eot"], special["timestamp_begin"]
        self.no_speech = special["no_speech"]
        vocab = meta["vocab_size"]
        # Never sampled: the listed tokens and the specials between <|endoftext|> and the timestamps.
        suppress = np.zeros(vocab, bool)
        suppress[meta["suppress_tokens"]] = True
        suppress[self.eot + 1 : self.timestamp_begin] = True
        self._suppress = np.flatnonzero(suppress)
        suppress[meta["begin_suppress_tokens"]] = True
        self._suppress_begin = np.flatnonzero(suppress)
        self._encoded: tuple[np.ndarray, Any] | None = None  # the last live window and its encoding

    @classmethod
    def open(cls, spec: ModelSpec, config: Config) -> WhisperModel:
        """``spec`` on the runtime its manifest entry prefers (TensorRT falls back to ONNX Runtime)."""
        graphs = open_graphs(spec, config)
        try:
            return cls(spec.directory, graphs)
        except BaseException:
            graphs.release()
            raise

    def encode(self, audio: np.ndarray, reuse: bool = False) -> Any:
        """The cross-attention keys and values of one window (at most 30 s) of audio.

        ``reuse``: live transcription decodes the same speech again as it grows, and its final
        decode often sees the very window its last partial decode has just encoded (the encoder
        is most of a short command's cost); so with ``reuse`` the window and its encoding are
        kept, and the same window next time is not encoded again. Other requests never reuse:
        the same file sent twice is encoded twice, as it would be anywhere."""
        if reuse and self._encoded is not None and np.array_equal(self._encoded[0], audio):
            return self._encoded[1]
        encoded = self.graphs.encode(log_mel_spectrogram(audio, self.n_mels)[None])
        self._encoded = (audio.copy(), encoded) if reuse else None
        return encoded

    def detect_language(self, encoded: Any) -> tuple[str, float]:
        """The window's language and its probability, as the reference implementation detects it:
        the decoder's distribution over the language tokens right after ``<|startoftranscript|>``."""
        codes, ids = zip(*self.tokenizer.languages.items(), strict=True)
        logits, _ = self.graphs.decode(np.array([[self.tokenizer.special["sot"]]], np.int64), None, encoded)
        logprobs = log_softmax(logits[0, list(ids)].astype(np.float64))
        best = int(np.argmax(logprobs))
        return codes[best], float(np.exp(logprobs[best]))

    def decode(
        self,
        encoded: Any,
        prompt: list[int],
        temperature: float = 0.0,
        timestamps: bool = True,
        beam_size: int = 1,
        best_of: int = 1,
        patience: float = 1.0,
        length_penalty: float | None = None,
        rng: np.random.Generator | None = None,
        prefix: list[int] | None = None,
    ) -> WindowResult:
        """Decode one encoded window after ``prompt`` (from ``tokenizer.prompt``): beam search at
        temperature 0 when ``beam_size`` > 1, else greedy; at a temperature above 0, the best of
        ``best_of`` samples. The sequences go through the decoder as one batch.

        ``prefix``: tokens every sequence is forced to start with (text already known, as the
        reference's ``prefix`` option): read in the prompt's pass, not decoded; the result's
        tokens include them."""
        prefix = prefix or []
        cache = None

        def step(tokens: list[list[int]]) -> np.ndarray:
            nonlocal cache
            logits, cache = self.graphs.decode(np.array(tokens, np.int64), cache, encoded)
            return logits

        # Up to <|startoftranscript|> first: its logits give the probability of <|nospeech|>.
        sot = prompt.index(self.tokenizer.special["sot"]) + 1
        logits = step([prompt[:sot]])
        no_speech_prob = float(np.exp(log_softmax(logits[0].astype(np.float64))[self.no_speech]))
        if prompt[sot:] or prefix:
            logits = step([[*prompt[sot:], *prefix]])
        search: Sampling | BeamSearch
        if temperature == 0 and beam_size > 1:
            search = BeamSearch(beam_size, patience, self.eot)
        else:
            search = Sampling(best_of if temperature > 0 else 1, temperature, self.eot, rng or np.random.default_rng(0))
        if search.width > 1:  # every row starts from the prompt
            cache = self.graphs.reorder(cache, [0] * search.width)
            logits = np.repeat(logits, search.width, axis=0)
        sampled: list[list[int]] = [list(prefix) for _ in range(search.width)]
        for i in range(min(self.max_new_tokens - len(prefix), self.n_text_ctx - len(prompt) - len(prefix))):
            scores = np.asarray(logits, np.float32)  # each step's logits are a new array: masked in place
            scores[:, self._suppress_begin if i == 0 and not prefix else self._suppress] = NEG_INF
            if timestamps:
                logprobs = apply_timestamp_rules(scores, sampled, self.eot, self.timestamp_begin)
            else:
                scores[:, self.timestamp_begin :] = NEG_INF
                logprobs = log_softmax(scores)
            chosen = search.step(sampled, scores, logprobs)
            sampled = [[*sampled[row], token] for row, token in zip(chosen.sources, chosen.tokens, strict=True)]
            if not sampled:
                break
            if chosen.sources != list(range(len(logits))):
                cache = self.graphs.reorder(cache, chosen.sources)
            logits = step([[token] for token in chosen.tokens])
        tokens, total = search.best(sampled, length_penalty)
        return WindowResult(tokens, total / (len(tokens) - len(prefix) + 1), no_speech_prob, temperature)

    def cross_attention(self, encoded: Any, text_tokens: list[int], language: str, task: str) -> np.ndarray | None:
        """The alignment heads' cross-attention logits ``[heads, rows, 1500]`` of the rows that
        predict ``text_tokens`` and <|endoftext|> after them, the text read without timestamps as
        the reference aligns it; None when the graphs give none (``graphs.align``)."""
        prompt = self.tokenizer.prompt(language, None, timestamps=False, task=task)
        qk = self.graphs.align(np.array([[*prompt, *text_tokens, self.eot]], np.int64), encoded)
        return None if qk is None else qk[:, len(prompt) - 1 : -1]

    def release(self) -> dict[str, Any]:
        """Destroy the graphs, in their runtime's order; the steps, timed."""
        self._encoded = None  # on TensorRT, views of buffers the release frees
        return self.graphs.release()
