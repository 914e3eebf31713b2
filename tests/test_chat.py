"""OpenAI chat completions on the real SmolLM2 model, through the real `openai` SDK: every test
on each LLM runtime (llama.cpp and onnxruntime-genai, the same GGUF)."""

from __future__ import annotations

import time

import openai
import pytest

from tests.service import CHAT_MODELS, Service, wait_for

RUNTIMES = dict(zip(CHAT_MODELS, ("llama.cpp", "onnxruntime-genai"), strict=True))
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and his dog."}]


@pytest.fixture
def client(service: Service) -> openai.OpenAI:
    return service.openai()


@pytest.fixture(params=CHAT_MODELS)
def model(request) -> str:
    return request.param


def test_the_model_runs_on_its_runtime(client, service, model):
    client.chat.completions.create(model=model, messages=QUESTION, max_tokens=1)
    assert service.model(model)["runtime"] == RUNTIMES[model]


def test_answer_and_usage(client, model):
    reply = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=40)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 40
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_text_equals_the_plain_answer(client, model):
    plain = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, seed=1, max_tokens=40)
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=QUESTION,
            temperature=0,
            seed=1,
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    first = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, seed=1, max_tokens=1)
    assert pieces[0] == first.choices[0].message.content, "the first token's text goes at once, alone"


def test_a_client_that_leaves_a_stream_stops_the_generation(client, service, model):
    assert service.post(f"/api/models/{model}/load").ok
    start = time.monotonic()
    whole = client.chat.completions.create(model=model, messages=STORY, temperature=0, max_tokens=400)
    whole_s = time.monotonic() - start
    assert whole.choices[0].finish_reason == "length"  # the story outlasts the limit: leaving early matters

    with client.chat.completions.create(
        model=model, messages=STORY, temperature=0, max_tokens=400, stream=True
    ) as stream:
        first = [chunk for chunk, _ in zip(stream, range(3), strict=False)]
        assert first[-1].choices[0].delta.content
        left = time.monotonic()
    wait_for(lambda: service.model(model)["in_flight"] == 0, whole_s)
    assert time.monotonic() - left < whole_s / 4, "the worker went on generating for a client that had left"

    again = client.chat.completions.create(model=model, messages=STORY, temperature=0, max_tokens=400)
    assert again.choices[0].message.content == whole.choices[0].message.content  # the worker is in step


def test_max_tokens_cuts_with_length(client, model):
    reply = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_completion_tokens=3)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3


def test_stop_sequence(client, model):
    """A stop sequence over two tokens (" is", " Paris"): the answer ends before it, and streamed,
    " is" is held back until " Paris" shows it was the start of the stop sequence, never sent."""
    full = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=40)
    text, stop = full.choices[0].message.content, "is Paris"
    assert stop in text
    ask = {"model": model, "messages": QUESTION, "temperature": 0, "max_tokens": 40, "stop": [stop]}
    reply = client.chat.completions.create(**ask)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == text[: text.index(stop)]
    chunks = client.chat.completions.create(**ask, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text[: text.index(stop)]


def test_a_seed_makes_sampling_repeatable(client, model):
    ask = {"model": model, "messages": STORY, "temperature": 1.0, "max_tokens": 24}
    texts = [client.chat.completions.create(**ask, seed=seed).choices[0].message.content for seed in (7, 7, 8)]
    assert texts[0] == texts[1] != texts[2]


def test_a_prompt_longer_than_the_context_is_a_400(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "word " * 9000}])
    assert "context holds 8192" in e.value.message


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"messages": []}, openai.BadRequestError, "non-empty list"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, openai.BadRequestError, "role must be one of"),
        ({"max_tokens": 0}, openai.BadRequestError, "positive integer"),
        ({"temperature": 7}, openai.BadRequestError, "temperature must be"),
        ({"model": "whisper-tiny-en"}, openai.BadRequestError, "cannot chat"),
        ({"model": "gpt-9"}, openai.NotFoundError, "does not exist"),
    ],
    ids=["empty", "role", "max-tokens", "temperature", "asr-model", "unknown-model"],
)
def test_bad_requests(client, kwargs, error, words):
    """Refused before any runtime sees them (the too-long prompt, which each runtime counts, above)."""
    with pytest.raises(error) as e:
        client.chat.completions.create(**{"model": CHAT_MODELS[0], "messages": QUESTION, **kwargs})
    assert words in e.value.message
