"""The llama.cpp runtime in this process, on the real SmolLM2 GGUF: what a GGUF must hold to be
served (checked before its weights are read), and token text that llama-cpp-python's own
detokenizer loses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge_asr.config import Config
from edge_asr.llm.llamacpp import LlamaCppModel, read_gguf
from edge_asr.manifest import get_model
from tests.service import LLM


@pytest.fixture(scope="module")
def gguf(config: Config) -> Path:
    spec = get_model(config, LLM)
    return spec.directory / spec.files[0]


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


def test_tokens_longer_than_32_bytes_keep_their_text(gguf):
    """A line of 64 dashes and deep indentation are single tokens of this vocabulary."""
    model = LlamaCppModel(gguf, threads=1, context=256)
    try:
        text = "-" * 64 + "\n" + " " * 32 + "return x"
        tokens = model.llama.tokenize(text.encode(), add_bos=False)
        pieces = [model.token_bytes(t) for t in tokens]
        assert max(len(p) for p in pieces) > 32
        assert b"".join(pieces).decode() == text
    finally:
        model.release()
