"""The llama.cpp runtime in this process, on the real SmolLM2 GGUF: what a GGUF must hold to be
served (checked before its weights are read), token text that llama-cpp-python's own
detokenizer loses, and how ``answer`` groups tokens into deltas."""

from __future__ import annotations

import shutil
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from edge_asr.config import Config
from edge_asr.llm.answer import DELTA_INTERVAL, answer
from edge_asr.llm.llamacpp import LlamaCppModel, read_gguf
from edge_asr.manifest import get_model
from edge_asr.workers.protocol import Chat, ChatDelta, ChatOptions, ChatResult
from tests.service import LLM

STORY = Chat(
    [{"role": "user", "content": "Write a long story about Tom, a lighthouse keeper, and his dog."}],
    ChatOptions(64, temperature=0),
)


@pytest.fixture(scope="module")
def gguf(config: Config) -> Path:
    spec = get_model(config, LLM)
    return spec.directory / spec.files[0]


@pytest.fixture(scope="module")
def model(gguf: Path) -> Iterator[LlamaCppModel]:
    model = LlamaCppModel(gguf, threads=1, context=256)
    yield model
    model.release()


def test_a_gguf_says_its_context_and_template(gguf):
    facts = read_gguf(gguf)
    assert facts.context_length == 8192 and "<|im_start|>" in facts.chat_template


@pytest.mark.parametrize(
    ("key", "words"),
    [
        (b"tokenizer.chat_template", "carries no chat template (tokenizer.chat_template): it cannot chat"),
        (b"llama.context_length", "does not say the context it was trained for (llama.context_length)"),
    ],
    ids=["no-template", "no-context-length"],
)
def test_a_gguf_without_what_serving_needs_is_refused(gguf, tmp_path, key, words):
    """The key renamed in a copy of the real file (same length: the file stays a valid GGUF)."""
    broken = tmp_path / "broken.gguf"
    shutil.copy(gguf, broken)
    data = bytearray(broken.read_bytes())
    data[data.index(key) + len(key) - 1] = ord("X")  # the key is written once, in the header
    broken.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        read_gguf(broken)


def test_tokens_longer_than_32_bytes_keep_their_text(model):
    """A line of 64 dashes and deep indentation are single tokens of this vocabulary."""
    text = "-" * 64 + "\n" + " " * 32 + "return x"
    tokens = model.llama.tokenize(text.encode(), add_bos=False)
    pieces = [model.token_bytes(t) for t in tokens]
    assert max(len(p) for p in pieces) > 32
    assert b"".join(pieces).decode() == text


def test_a_fast_stream_sends_a_delta_a_frame(model):
    """Read as fast as it comes, a delta goes at most every DELTA_INTERVAL (however late the
    reader sees them); the first comes with the first token."""
    started = time.monotonic()
    deltas, arrivals, result = _read(answer(model, STORY), pause=0)
    took = arrivals[-1] - started
    first_token = "".join(d["delta"] for d in answer(model, Chat(STORY.messages, ChatOptions(1, temperature=0))))
    assert "".join(deltas) == result["text"] and result["finish_reason"] == "length"
    assert deltas[0] == first_token, "the first delta waits for nothing"
    assert result["completion_tokens"] / took > 1.25 / DELTA_INTERVAL, "too slow a machine to tell grouping from none"
    assert len(deltas) <= 2 + took / DELTA_INTERVAL  # the first and the end's come besides the frames


def test_a_slow_stream_sends_a_delta_a_token(model):
    """Read slower than DELTA_INTERVAL, every token's text goes alone, at once (the model makes a
    token only when asked for the next delta)."""
    deltas, _, result = _read(answer(model, STORY), pause=DELTA_INTERVAL * 1.5)
    assert "".join(deltas) == result["text"] and result["finish_reason"] == "length"
    assert len(deltas) == result["completion_tokens"] == 64


def _read(stream: Generator[ChatDelta, None, ChatResult], pause: float) -> tuple[list[str], list[float], ChatResult]:
    """The deltas, when each arrived, and the answer; ``pause`` seconds after each delta."""
    deltas, arrivals = [], []
    while True:
        try:
            deltas.append(next(stream)["delta"])
        except StopIteration as done:
            return deltas, arrivals, done.value
        arrivals.append(time.monotonic())
        time.sleep(pause)
