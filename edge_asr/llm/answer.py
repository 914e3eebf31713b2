"""A chat answer from any LLM runtime, one implementation for all of them.

A runtime (``ChatModel``) only formats and tokenises the conversation and generates: it yields
the text of each token as it comes and returns whether the model ended its turn. The rest is
here: the room the prompt leaves in the context (a prompt that fills it is the client's 400),
stop sequences (text that could still become one is held back, never sent then taken back),
and the usage counts OpenAI's API reports.

A delta carries the text of the tokens generated since the last one, sent at most every
``DELTA_INTERVAL`` (a screen's frame; the first token's text at once): a token stream faster than
that (SmolLM2 on a CPU makes ~200 a second) would cost the service, and its client, a message per
token for nothing a reader sees; a slower one goes a token a delta, as it comes.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from typing import Any, Protocol

from edge_asr.errors import RequestError
from edge_asr.workers.protocol import Chat, ChatDelta, ChatOptions, ChatResult

DELTA_INTERVAL = 1 / 60  # seconds


class ChatModel(Protocol):
    context_length: int  # tokens: the prompt and the answer together

    def encode_chat(self, messages: list[dict[str, str]]) -> Sequence[int]:
        """The conversation in the model's chat template, ready for its answer, as tokens."""
        ...

    def generate(self, prompt: Sequence[int], limit: int, options: ChatOptions) -> Generator[str, None, bool]:
        """Yields the text of each token generated (at most ``limit``; "" while a character is
        incomplete); returns True when the model ended its turn (the end token is counted
        generated, not yielded). Closing it stops the generation."""
        ...

    def describe(self) -> dict[str, Any]: ...

    def release(self) -> dict[str, Any]: ...


def answer(model: ChatModel, request: Chat) -> Generator[ChatDelta, None, ChatResult]:
    """Yields ``{"delta": text}`` as text is generated; returns the answer with its usage."""
    options = request.options
    prompt = model.encode_chat(request.messages)
    room = model.context_length - len(prompt)
    if room < 1:
        raise RequestError(f"the prompt is {len(prompt)} tokens; this model's context holds {model.context_length}")
    tokens = model.generate(prompt, min(options.max_tokens or room, room), options)
    stops = options.stop or []
    held = max((len(s) - 1 for s in stops), default=0)  # what could be the start of a stop sequence
    text, sent, produced, finish, due = "", 0, 0, "length", 0.0  # due: when the next delta may go
    try:
        while True:
            try:
                text += next(tokens)
            except StopIteration as end:
                if end.value:
                    produced, finish = produced + 1, "stop"
                break
            produced += 1
            if hits := [text.index(s) for s in stops if s in text]:
                text, finish = text[: min(hits)], "stop"
                break
            if len(text) - held > sent and (now := time.monotonic()) >= due:
                due = now + DELTA_INTERVAL
                yield {"delta": text[sent : len(text) - held]}
                sent = len(text) - held
    finally:
        tokens.close()  # ends the runtime's generation before the last delta
    if len(text) > sent:
        yield {"delta": text[sent:]}
    return {"text": text, "finish_reason": finish, "prompt_tokens": len(prompt), "completion_tokens": produced}
