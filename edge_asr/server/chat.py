"""OpenAI's ``POST /v1/chat/completions`` on the manifest's LLMs, streamed or not."""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from typing import Any

from flask import Blueprint, Response, jsonify

from edge_asr.errors import InvalidRequest, ServiceError
from edge_asr.lifecycle import result
from edge_asr.server.bodies import json_body
from edge_asr.server.current import manager
from edge_asr.server.sse import error_event, event, relay, stream_response
from edge_asr.settings import request_keep_alive
from edge_asr.workers.protocol import ChatDelta, ChatOptions, ChatResult

bp = Blueprint("chat", __name__, url_prefix="/v1")
ROLES = ("system", "user", "assistant")
MAX_STOP_SEQUENCES = 4


def _number(body: dict, key: str, low: float, high: float, default: float) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidRequest(f"{key} must be a number from {low} to {high}, not {value!r}")
    return float(value)


def _messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list of {role, content}")
    plain = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, list):  # OpenAI's content parts: only text ones are understood
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise InvalidRequest(f"messages[{i}].content: only text parts are supported")
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise InvalidRequest(f"messages[{i}].content must be a string")
        plain.append({"role": message["role"], "content": content})
    return plain


def _request(body: dict) -> tuple[list[dict[str, str]], ChatOptions]:
    """The messages and the options, checked in the order the fields are documented."""
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise InvalidRequest(f"max_tokens must be a positive integer, not {max_tokens!r}")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    if stop is not None and (
        not isinstance(stop, list) or len(stop) > MAX_STOP_SEQUENCES or not all(isinstance(s, str) and s for s in stop)
    ):
        raise InvalidRequest(f"stop must be a string or a list of at most {MAX_STOP_SEQUENCES} non-empty strings")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequest("seed must be an integer")
    return _messages(body), ChatOptions(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 2, 1.0),
        top_p=_number(body, "top_p", 0.0001, 1, 1.0),
        seed=seed,
        stop=stop,
    )


@bp.post("/chat/completions")
def chat_completions() -> Response:
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    model_id = body.get("model")
    if not isinstance(model_id, str):
        raise InvalidRequest("model is required")
    if manager().spec(model_id).task != "llm":
        raise InvalidRequest(f"the model {model_id!r} is a {manager().spec(model_id).task} model; it cannot chat")
    messages, options = _request(body)
    keep_alive = request_keep_alive(body.get("keep_alive"))
    stream = body.get("stream") is True
    include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
    reply = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_id}

    with ExitStack() as holds:
        lease = holds.enter_context(manager().lease(model_id, keep_alive))
        answering = lease.chat(messages, options)
        if stream:
            return stream_response(_chunks(answering, reply, include_usage), holds.pop_all())
        answer = result(answering)
    return jsonify(
        {
            **reply,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer["text"]},
                    "finish_reason": answer["finish_reason"],
                }
            ],
            "usage": _usage(answer),
        }
    )


def _usage(answer: ChatResult) -> dict[str, int]:
    prompt, completion = answer["prompt_tokens"], answer["completion_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chunks(
    answering: Generator[ChatDelta, None, ChatResult], reply: dict[str, Any], include_usage: bool
) -> Iterator[str]:
    """``chat.completion.chunk`` events as text is generated: the role first, then content deltas, a
    last chunk with the finish reason, the usage if asked for, and ``[DONE]``."""

    def chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None else []
        return event({**reply, "object": "chat.completion.chunk", "choices": choices, **extra})

    try:
        yield chunk({"role": "assistant", "content": ""})
        answer = yield from relay(answering, lambda part: [chunk({"content": part["delta"]})])
        yield chunk({}, answer["finish_reason"])
        if include_usage:
            yield chunk(None, usage=_usage(answer))
        yield event("[DONE]")
    except ServiceError as e:
        yield error_event(e)
