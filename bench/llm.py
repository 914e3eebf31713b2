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

Each run asks for a story about another keeper (at most 7 repeats after the warm-up).

The four runs of (a) and (b) take turns on each story. usage: python -m bench.llm [--repeats 5]
[--tokens 128] [--threads N]   (after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import onnxruntime_genai as og
import openai
from llama_cpp import Llama

from edge_asr.config import Config, load_config
from edge_asr.llm.genai import genai_config
from edge_asr.llm.llamacpp import llama_settings, physical_cores
from edge_asr.manifest import DEFAULT_MODELS, get_model
from edge_asr.samples import sample_clips
from tests.service import CHAT_MODELS, Service, wait_for

LLAMA_CPP, GENAI = CHAT_MODELS  # the same model on llama.cpp and on onnxruntime-genai
ASR = "whisper-tiny-en"


KEEPERS = ("Tom", "Anna", "Ewan", "Marta", "Jonas", "Ruth", "Pavel", "Ines")  # each story runs past 128 tokens


def story(n: int) -> list[dict[str, str]]:
    who = KEEPERS[n % len(KEEPERS)]
    return [{"role": "user", "content": f"Write a long story about {who}, a lighthouse keeper, and his dog."}]


def timed(pieces: Iterator[str]) -> dict[str, float]:
    """Time to the first piece of text, and the pieces per second after it."""
    start = time.perf_counter()
    first, count = None, 0
    for _ in pieces:
        first = first or time.perf_counter()
        count += 1
    end = time.perf_counter()
    return {"ttft_s": first - start, "pieces": count, "per_s": (count - 1) / (end - first)}


Run = Callable[[list[dict[str, str]]], Iterator[str]]


def interleaved(runs: dict[str, Run], repeats: int, warmed: Callable[[], object]) -> dict[str, dict[str, float]]:
    """The medians of each run's figures, the runs taking turns on each story, so that the drift of
    this shared machine falls on all alike. The first round warms up; ``warmed`` waits after it."""
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for n in range(repeats + 1):
        for name, run in runs.items():
            figures[name].append(timed(run(story(n))))
        if n == 0:
            warmed()
    return {name: {key: statistics.median(r[key] for r in rs[1:]) for key in rs[0]} for name, rs in figures.items()}


def genai_tokens(model: og.Model, tokenizer: og.Tokenizer, chat: list[dict[str, str]], tokens: int) -> Iterator[str]:
    prompt = tokenizer.encode(tokenizer.apply_chat_template(json.dumps(chat), add_generation_prompt=True))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    stream = tokenizer.create_stream()
    while not generator.is_done():
        generator.generate_next_token()
        yield stream.decode(generator.get_next_tokens()[0])


def llama_tokens(llama: Llama, chat: list[dict[str, str]], tokens: int) -> Iterator[str]:
    llama.reset()  # the whole prompt is read, as the service reads it (edge_asr/llm/llamacpp.py)
    for chunk in llama.create_chat_completion(chat, max_tokens=tokens, temperature=0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            yield chunk["choices"][0]["delta"]["content"]


def service_tokens(client: openai.OpenAI, model: str, chat: list[dict[str, str]], tokens: int) -> Iterator[str]:
    chunks = client.chat.completions.create(model=model, messages=chat, temperature=0, max_tokens=tokens, stream=True)
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


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


def report(name: str, subject: dict, reference: dict, labels: tuple[str, str], **extra) -> None:
    a, b = labels
    print(
        json.dumps(
            {
                "bench": name,
                f"{a}_ttft_s": round(subject["ttft_s"], 4),
                f"{b}_ttft_s": round(reference["ttft_s"], 4),
                "ttft_ratio": round(subject["ttft_s"] / reference["ttft_s"], 3),
                f"{a}_tokens_per_s": round(subject["per_s"], 1),
                f"{b}_tokens_per_s": round(reference["per_s"], 1),
                "speed_ratio": round(subject["per_s"] / reference["per_s"], 3),
                "pieces": [subject["pieces"], reference["pieces"]],
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
    parser.add_argument("--repeats", type=int, default=5)
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
    faster = direct[default]["per_s"] >= direct[other]["per_s"] and direct[default]["ttft_s"] <= direct[other]["ttft_s"]
    threads = config.ort_threads or physical_cores()
    report(
        f"{runtime[default]} (the default model's) vs {runtime[other]}, in process, {threads} threads",
        direct[default],
        direct[other],
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
            **({"bar_met": served["per_s"] >= 0.95 * direct[model_id]["per_s"]} if model_id == default else {}),
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
