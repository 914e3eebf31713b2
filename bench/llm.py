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

usage: python -m bench.llm [--repeats 5] [--tokens 128]   (after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
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
from edge_asr.llm.llamacpp import llama_settings
from edge_asr.manifest import DEFAULT_MODELS, get_model
from edge_asr.samples import sample_clips
from tests.service import CHAT_MODELS, Service

LLAMA_CPP, GENAI = CHAT_MODELS  # the same model on llama.cpp and on onnxruntime-genai
RUNTIMES = {LLAMA_CPP: "llama.cpp", GENAI: "onnxruntime-genai"}
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


def median_run(run: Callable[[list[dict[str, str]]], Iterator[str]], repeats: int) -> dict[str, float]:
    runs = [timed(run(story(n))) for n in range(repeats + 1)][1:]  # the first warms up
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


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


def llama_cpp_direct(config: Config, repeats: int, tokens: int) -> dict[str, float]:
    """llama.cpp made as the service makes it (context, threads, GPU offload, flash attention)."""
    spec = get_model(config, LLAMA_CPP)
    llama = Llama(str(spec.directory / spec.files[0]), **llama_settings(config.llm_context, config.ort_threads))
    try:
        return median_run(partial(llama_tokens, llama, tokens=tokens), repeats)
    finally:
        llama.close()


def genai_direct(config: Config, repeats: int, tokens: int) -> dict[str, float]:
    """onnxruntime-genai with the providers the service gives it."""
    model = og.Model(genai_config(get_model(config, GENAI))[0])
    return median_run(partial(genai_tokens, model, og.Tokenizer(model), tokens=tokens), repeats)


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
    args = parser.parse_args()
    if args.repeats >= len(KEEPERS):
        parser.error(f"--repeats: at most {len(KEEPERS) - 1} (one story each)")
    config = load_config()
    default = DEFAULT_MODELS["llm"]
    other = next(m for m in CHAT_MODELS if m != default)

    measure = {LLAMA_CPP: llama_cpp_direct, GENAI: genai_direct}
    direct = {model_id: run(config, args.repeats, args.tokens) for model_id, run in measure.items()}
    faster = direct[default]["per_s"] >= direct[other]["per_s"] and direct[default]["ttft_s"] <= direct[other]["ttft_s"]
    report(
        f"{RUNTIMES[default]} (the default model's) vs {RUNTIMES[other]}, in process",
        direct[default],
        direct[other],
        ("default", "other"),
        bar_met=faster,
    )

    with tempfile.TemporaryDirectory() as state:
        service = Service(Path(state)).start()
        try:
            client = service.openai()
            for model_id in (default, other):
                served = median_run(partial(service_tokens, client, model_id, tokens=args.tokens), args.repeats)
                report(
                    f"service vs {RUNTIMES[model_id]} in process ({model_id})",
                    served,
                    direct[model_id],
                    ("service", "direct"),
                    **({"bar_met": served["per_s"] >= 0.95 * direct[model_id]["per_s"]} if model_id == default else {}),
                )
        finally:
            service.stop()

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
