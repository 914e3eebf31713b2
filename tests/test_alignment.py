"""Word alignment (``edge_asr.whisper.alignment``): the DTW against the reference's own loop, the
timing of attention that is known, and, on the real model, where a reading's last word ends."""

from __future__ import annotations

import numpy as np
import pytest

from edge_asr.vad import VadOptions
from edge_asr.whisper.alignment import POSITIONS_PER_SECOND, dtw, end_of_last_word, token_starts
from edge_asr.whisper.graphs import OnnxWhisperGraphs
from edge_asr.whisper.model import WhisperModel
from edge_asr.whisper.transcribe import last_word_end, split_window


def reference_dtw(cost: np.ndarray) -> np.ndarray:
    """openai/whisper ``timing.py``: ``dtw_cpu`` and ``backtrace``, cell by cell."""
    rows, columns = cost.shape
    total = np.full((rows + 1, columns + 1), np.inf)
    trace = -np.ones((rows + 1, columns + 1))
    total[0, 0] = 0
    for j in range(1, columns + 1):
        for i in range(1, rows + 1):
            c0, c1, c2 = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            total[i, j] = cost[i - 1, j - 1] + c
            trace[i, j] = t
    trace[0, :], trace[:, 0] = 2, 1
    i, j, path = rows, columns, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        i, j = (i - 1, j - 1) if trace[i, j] == 0 else (i - 1, j) if trace[i, j] == 1 else (i, j - 1)
    return np.array(path[::-1]).T


@pytest.mark.parametrize("seed", range(5))
def test_dtw_finds_the_reference_path(seed):
    rng = np.random.default_rng(seed)
    cost = rng.standard_normal((int(rng.integers(2, 30)), int(rng.integers(30, 200))))
    row, column = dtw(cost)
    expected_row, expected_column = reference_dtw(cost)
    assert row.tolist() == expected_row.tolist() and column.tolist() == expected_column.tolist()


def test_tokens_start_where_their_attention_is():
    qk = np.zeros((2, 4, 1500), np.float32)  # 3 tokens and <|endoftext|>, two heads
    for row in range(4):
        qk[:, row, 40 * row : 40 * row + 40] = 8.0  # row k looks at 0.8k .. 0.8k + 0.8 s
    starts = token_starts(qk, positions=200)
    np.testing.assert_allclose(starts, [0.0, 0.8, 1.6, 2.4], atol=2 / POSITIONS_PER_SECOND)
    assert token_starts(qk, positions=200, first=20)[0] == 20 / POSITIONS_PER_SECOND  # nothing before first
    # the word ends where its last letters end: not after the full stop
    assert end_of_last_word(starts, [" Fail", " better", "."]) == starts[2]
    assert end_of_last_word(starts, [" Fail", " again", " better"]) == starts[3]


def test_a_readings_last_word_ends_where_its_speech_does(whisper: WhisperModel, vad, speech):
    audio = speech["beckett"]  # "... Fail again. Fail better." and a second of room tone after it
    encoded = whisper.encode(audio)
    result = whisper.decode(encoded, whisper.tokenizer.prompt("en"), beam_size=5)
    found, _ = split_window(result.tokens, whisper.timestamp_begin, len(audio) / 16000)
    end = last_word_end(whisper, encoded, found, len(audio), "en", "transcribe")
    speech_end = vad.speech_spans(audio)[-1].end / 16000 - VadOptions().speech_pad_ms / 1000  # measured: 8.9 s
    assert end is not None and abs(end - speech_end) < 0.3, (end, speech_end)  # measured: 8.72 s


def test_graphs_without_the_alignment_output_give_none(whisper_spec, whisper: WhisperModel, speech):
    fp32 = WhisperModel(whisper_spec.directory, OnnxWhisperGraphs(whisper_spec.directory, decoder="decoder.onnx"))
    assert fp32.cross_attention(fp32.encode(speech["beckett"]), [1, 2], "en", "transcribe") is None
    qk = whisper.cross_attention(whisper.encode(speech["beckett"]), [1, 2], "en", "transcribe")
    assert qk.shape == (8, 3, 1500)  # tiny.en's 8 alignment heads; rows for 2 tokens and <|endoftext|>
