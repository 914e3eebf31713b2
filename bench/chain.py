"""The whole chain, ``POST /api/pipeline`` with ``speak=true`` (Whisper -> LLM -> voice), with
prefetch (the LLM and the voice load while Whisper transcribes, where they fit) against the same
chain without it (``EDGE_ASR_PREFETCH=0``: each model loads when its step starts), in one script,
under two budgets:

- ``three fit``: ``memory_budget`` holds the three models together; each run starts with none of
  them loaded (``POST /api/system/free``, as after they hibernated), so every step loads its model;
- ``one fits``: the budget holds one model at a time (1.05 x the largest footprint); each step
  evicts the one before, so prefetch finds no room and must change nothing.

Ratios = with prefetch / without (lower is better). Steps are the pipeline's own ``timings``:
``transcribe_s`` (Whisper's load included), ``swap_s`` (waiting for the LLM), ``generate_s``,
``speech_swap_s`` (waiting for the voice), ``speak_s``. Every service has its spare worker on and
ready before a run.

usage: python -m bench.chain [--repeats 3]   (after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_asr.config import load_config
from edge_asr.samples import sample_clips
from tests.service import ASR, LLM, TTS, Service, wait_for

STEPS = ("transcribe_s", "swap_s", "generate_s", "speech_swap_s", "speak_s")


def chain(service: Service, audio: bytes) -> tuple[float, dict[str, Any]]:
    """One pipeline run from nothing loaded: (wall seconds, its reply)."""
    service.post("/api/system/free")
    wait_for(lambda: service.get("/api/system/memory").json()["spare_worker"]["ready"], 60)
    start = time.perf_counter()
    r = service.post(
        "/api/pipeline",
        files={"file": ("clip.wav", audio)},
        data={"instruction": "Summarize this text in one sentence.", "max_tokens": "48", "speak": "true"},
        timeout=600,
    )
    assert r.ok, r.text
    return time.perf_counter() - start, r.json()


def runs(service: Service, audio: bytes, repeats: int) -> tuple[dict[str, float], list[tuple[str, str, str]]]:
    """Median of each step and of the whole over ``repeats`` runs after a warm-up; the last run's moves."""
    chain(service, audio)
    walls, replies = [], []
    for _ in range(repeats):
        wall, reply = chain(service, audio)
        walls.append(wall)
        replies.append(reply)
    medians = {step: statistics.median(r["timings"][step] for r in replies) for step in STEPS}
    medians["total_s"] = statistics.median(walls)
    return medians, [(e["model"], e["to"], e["reason"]) for e in replies[-1]["events"]]


def measure(work: Path, name: str, learnt: str, budget: int, audio: bytes, repeats: int) -> None:
    """The chain with and without prefetch under ``budget``; prints each step and the ratios."""
    results = {}
    for prefetch in ("1", "0"):
        state = work / f"{name}-{prefetch}"
        state.mkdir()
        (state / "footprints.json").write_text(learnt)
        service = Service(state, EDGE_ASR_MEMORY_BUDGET=str(budget), EDGE_ASR_PREFETCH=prefetch).start()
        try:
            results[prefetch] = runs(service, audio, repeats)
        finally:
            service.stop()
    (on, moves_on), (off, _) = results["1"], results["0"]
    print(json.dumps({"budget": name, "budget_mb": budget // 10**6, "moves_with_prefetch": moves_on}))
    for step in (*STEPS, "total_s"):
        print(
            json.dumps(
                {"budget": name, "step": step, "prefetch_s": round(on[step], 3), "without_s": round(off[step], 3)}
            )
        )
    print(
        json.dumps(
            {
                "budget": name,
                "summary": "whole chain, prefetch / without",
                "ratio": round(on["total_s"] / off["total_s"], 3),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    audio = sample_clips(load_config())["two_cities"].read_bytes()
    work = Path(tempfile.mkdtemp())
    learning = Service(work / "learn").start()  # each model's footprint, with its peak in a request
    try:
        chain(learning, audio)
    finally:
        learning.stop()
    learnt = (work / "learn" / "footprints.json").read_text()
    footprints = {k: v for k, v in json.loads(learnt).items() if k in (ASR, LLM, TTS)}
    print(json.dumps({"footprints_mb": {k: round(v / 1e6) for k, v in footprints.items()}}))
    measure(work, "three fit", learnt, int(1.05 * sum(footprints.values())), audio, args.repeats)
    measure(work, "one fits", learnt, int(1.05 * max(footprints.values())), audio, args.repeats)


if __name__ == "__main__":
    main()
