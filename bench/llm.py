"""LLM figures, each a ratio against a reference measured in the same run, on SmolLM2-135M from
the same Q4_1 GGUF on both runtimes the service has:

(a) each runtime on its own, called in this process as a user of the library would (llama.cpp
    through llama-cpp-python's chat completion on the GGUF, onnxruntime-genai on the prepared
    int4 folder), each made as the service makes it (context, threads, GPU offload, providers),
    greedy, the same chats: time to first token and tokens per second, the default model's
    runtime (``DEFAULT_MODELS``) against the other;
(b) the service on each of them (openai SDK, HTTP, SSE, worker pipe) against that runtime in
    process, as in (a);
(c) the pipeline (transcribe, then summarise) under a budget that holds one model at a time,
    split into transcribe (which includes waking the speech model) / swap (unloading it and
    loading the LLM) / generate, with the time of all loads and unloads it caused (lifecycle_s),
    against the same pipeline with both models resident.

Each round asks for a story about another keeper (at most 10 rounds after the warm-up). The four
runs of (a) and (b) take turns in each round; a ratio is the median of the rounds' ratios.
usage: python -m bench.llm [--repeats 10]
[--tokens 128] [--threads N]   (after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Generator
from functools import partial
from pathlib import Path

import onnxruntime_genai as og
import openai
from llama_cpp import Llama

from edge_asr.config import Config, load_config
from edge_asr.llm.genai import genai_config
from edge_asr.llm.llamacpp import llama_settings
from edge_asr.manifest import DEFAULT_MODELS, get_model
from edge_asr.runtime.cores import physical_cores
from edge_asr.samples import sample_clips
from tests.service import CHAT_MODELS, Service, wait_for

LLAMA_CPP, GENAI = CHAT_MODELS  # the same model on llama.cpp and on onnxruntime-genai
ASR = "whisper-tiny-en"


# each story runs past 128 tokens on both runtimes (each run asserts that it generated them all)
KEEPERS = ("Tom", "Anna", "Oskar", "Marta", "Jonas", "Ruth", "Pavel", "Ines", "Leon", "Clara", "Hugo")


def story(n: int) -> list[dict[str, str]]:
    who = KEEPERS[n % len(KEEPERS)]
    return [{"role": "user", "content": f"Write a long story about {who}, a lighthouse keeper, and his dog."}]


Run = Callable[[list[dict[str, str]]], Generator[str, None, int]]


def timed(pieces: Generator[str, None, int]) -> dict[str, float]:
    """Time to the first piece of text, and the tokens per second after it. A run yields pieces of
    text (the service sends the tokens of 1/60 s in one; the first alone) and returns how many
    tokens it generated."""
    start = time.perf_counter()
    first, count = None, 0
    while True:
        try:
            next(pieces)
        except StopIteration as done:
            tokens = done.value
            break
        first = first or time.perf_counter()
        count += 1
    end = time.perf_counter()
    return {"ttft_s": first - start, "pieces": count, "per_s": (tokens - 1) / (end - first)}


Figures = list[dict[str, float]]  # a run's, one a story


def interleaved(runs: dict[str, Run], repeats: int, warmed: Callable[[], object]) -> dict[str, Figures]:
    """Each run's figures on each story, the runs taking turns on each, so that the drift of this
    shared machine falls on all alike. The first round warms up (left out); ``warmed`` waits after it."""
    figures: dict[str, Figures] = {name: [] for name in runs}
    for n in range(repeats + 1):
        for name, run in runs.items():
            figures[name].append(timed(run(story(n))))
        if n == 0:
            warmed()
    return {name: rounds[1:] for name, rounds in figures.items()}


def ratio(subject: Figures, reference: Figures, key: str) -> float:
    """The median of the story-by-story ratios: each pair ran close in time, so the machine's drift
    cancels within it (a ratio of medians pairs a fast moment of one with a slow one of the other)."""
    return statistics.median(s[key] / r[key] for s, r in zip(subject, reference, strict=True))


def median(figures: Figures, key: str) -> float:
    return statistics.median(f[key] for f in figures)


def genai_tokens(
    model: og.Model, tokenizer: og.Tokenizer, chat: list[dict[str, str]], tokens: int
) -> Generator[str, None, int]:
    prompt = tokenizer.encode(tokenizer.apply_chat_template(json.dumps(chat), add_generation_prompt=True))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    stream = tokenizer.create_stream()
    generated = 0
    while not generator.is_done():
        generator.generate_next_token()
        generated += 1
        yield stream.decode(generator.get_next_tokens()[0])
    assert generated == tokens, f"the story ended before {tokens} tokens"
    return generated


def llama_tokens(llama: Llama, chat: list[dict[str, str]], tokens: int) -> Generator[str, None, int]:
    llama.reset()  # the whole prompt is read, as the service reads it (edge_asr/llm/llamacpp.py)
    finish = None
    for chunk in llama.create_chat_completion(chat, max_tokens=tokens, temperature=0, stream=True):
        finish = chunk["choices"][0]["finish_reason"] or finish
        if chunk["choices"][0]["delta"].get("content"):
            yield chunk["choices"][0]["delta"]["content"]
    assert finish == "length", f"the story ended before {tokens} tokens"  # its chunks do not count them
    return tokens


def service_tokens(
    client: openai.OpenAI, model: str, chat: list[dict[str, str]], tokens: int
) -> Generator[str, None, int]:
    chunks = client.chat.completions.create(
        model=model,
        messages=chat,
        temperature=0,
        max_tokens=tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    generated = 0
    for chunk in chunks:
        if chunk.usage:
            generated = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content
    assert generated == tokens, f"the story ended before {tokens} tokens"
    return generated


def llama_cpp_direct(config: Config, tokens: int) -> tuple[Run, Callable[[], None]]:
    """llama.cpp made as the service makes it (context, threads, GPU offload, flash attention),
    and how to close it."""
    spec = get_model(config, LLAMA_CPP)
    llama = Llama(str(spec.directory / spec.files[0]), **llama_settings(config.llm_context, config.ort_threads))
    return partial(llama_tokens, llama, tokens=tokens), llama.close


def genai_direct(config: Config, tokens: int) -> Run:
    """onnxruntime-genai with the providers the service gives it."""
    model = og.Model(genai_config(get_model(config, GENAI))[0])
    return partial(genai_tokens, model, og.Tokenizer(model), tokens=tokens)


def report(name: str, subject: Figures, reference: Figures, labels: tuple[str, str], **extra) -> None:
    a, b = labels
    print(
        json.dumps(
            {
                "bench": name,
                f"{a}_ttft_s": round(median(subject, "ttft_s"), 4),
                f"{b}_ttft_s": round(median(reference, "ttft_s"), 4),
                "ttft_ratio": round(ratio(subject, reference, "ttft_s"), 3),
                f"{a}_tokens_per_s": round(median(subject, "per_s"), 1),
                f"{b}_tokens_per_s": round(median(reference, "per_s"), 1),
                "speed_ratio": round(ratio(subject, reference, "per_s"), 3),
                "pieces": [median(subject, "pieces"), median(reference, "pieces")],
                **extra,
            }
        )
    )


def pipeline_split(state: Path, audio: bytes, repeats: int, **env: str) -> dict[str, float]:
    service = Service(state, **env).start()
    used: set[str] = set()  # the models the pipeline loaded: only theirs are footprints (the others have none)
    try:
        timings = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            r = service.post("/api/pipeline", files={"file": ("a.wav", audio)}, data={"max_tokens": "64"}, timeout=600)
            assert r.ok, r.text
            lifecycle = sum(e["duration_s"] for e in r.json()["events"])  # loads and unloads it caused
            used |= {e["model"] for e in r.json()["events"]}
            timings.append(
                r.json()["timings"] | {"end_to_end_s": time.perf_counter() - start, "lifecycle_s": lifecycle}
            )
        service.post("/api/system/free")  # an unload records the footprint at its peak (a 44-s transcription's)
        models = service.get("/api/models").json()["models"]
        footprints = {m["id"]: m["footprint_bytes"] for m in models if m["id"] in used}
    finally:
        service.stop()
    return {key: statistics.median(t[key] for t in timings[1:]) for key in timings[0]} | {"footprints": footprints}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, help="each runtime's CPU threads (default: the configuration's)")
    args = parser.parse_args()
    if args.repeats >= len(KEEPERS):
        parser.error(f"--repeats: at most {len(KEEPERS) - 1} (one story each)")
    config = load_config()
    if args.threads:
        config = dataclasses.replace(config, ort_threads=args.threads)
    default = DEFAULT_MODELS["llm"]
    other = next(m for m in CHAT_MODELS if m != default)
    runtime = {m: get_model(config, m).family for m in CHAT_MODELS}  # the manifest names it

    llama, close_llama = llama_cpp_direct(config, args.tokens)
    with tempfile.TemporaryDirectory() as state:
        service = Service(Path(state), EDGE_ASR_ORT_THREADS=str(config.ort_threads)).start()
        try:
            client = service.openai()
            runs = {("direct", LLAMA_CPP): llama, ("direct", GENAI): genai_direct(config, args.tokens)}
            runs |= {("service", m): partial(service_tokens, client, m, tokens=args.tokens) for m in CHAT_MODELS}

            def spare_ready() -> bool:  # the spare worker a wake used up is made again before the timed rounds
                return service.get("/api/system/memory").json()["spare_worker"]["ready"]

            measured = interleaved(runs, args.repeats, lambda: wait_for(spare_ready, 60))
        finally:
            service.stop()
            close_llama()
    direct = {m: measured["direct", m] for m in CHAT_MODELS}
    ours, theirs = direct[default], direct[other]
    faster = ratio(ours, theirs, "per_s") >= 1 and ratio(ours, theirs, "ttft_s") <= 1
    threads = config.ort_threads or physical_cores()
    report(
        f"{runtime[default]} (the default model's) vs {runtime[other]}, in process, {threads} threads",
        ours,
        theirs,
        ("default", "other"),
        bar_met=faster,
    )
    for model_id in (default, other):
        served = measured["service", model_id]
        report(
            f"service vs {runtime[model_id]} in process ({model_id}), {threads} threads",
            served,
            direct[model_id],
            ("service", "direct"),
            **({"bar_met": ratio(served, direct[model_id], "per_s") >= 0.95} if model_id == default else {}),
        )

    audio = sample_clips(config)["two_cities"].read_bytes()
    with tempfile.TemporaryDirectory() as state:
        resident = pipeline_split(Path(state), audio, args.repeats)
        footprints = resident.pop("footprints")
        budget = int(max(footprints.values()) + min(footprints.values()) / 2)  # either model, never both
        sliced = pipeline_split(Path(state), audio, args.repeats, EDGE_ASR_MEMORY_BUDGET=str(budget))
    sliced.pop("footprints")
    total = sliced["end_to_end_s"]
    print(
        json.dumps(
            {
                "bench": f"pipeline, two_cities (44 s), budget {budget / 1e6:.0f} MB: one model at a time",
                "footprints_mb": {model: round(size / 1e6) for model, size in footprints.items()},
                **{key: round(value, 3) for key, value in sliced.items()},
                "share": {key[:-2]: round(sliced[key] / total, 3) for key in ("transcribe_s", "swap_s", "generate_s")},
                "both_resident_end_to_end_s": round(resident["end_to_end_s"], 3),
                "sliced_vs_resident": round(total / resident["end_to_end_s"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
