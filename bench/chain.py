"""The whole chain, ``POST /api/pipeline`` with ``speak=true`` (Whisper -> LLM -> voice), split into
its steps, under a memory budget that holds one model but not Whisper with the LLM, against the
same chain with every model resident (no budget), in one script. Ratios = budget / resident: what
taking turns in memory costs.

Steps (the pipeline's own ``timings``): ``transcribe_s`` (with a budget, Whisper's load included:
the last run left the LLM and the voice in memory), ``swap_s`` (Whisper out, the LLM in),
``generate_s``, ``speech_swap_s`` (the voice in), ``speak_s``.

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
from tests.service import Service

ASR, LLM, TTS = "whisper-tiny-en", "smollm2-135m-instruct", "piper-joe-en"
STEPS = ("transcribe_s", "swap_s", "generate_s", "speech_swap_s", "speak_s")


def chain(service: Service, audio: bytes) -> tuple[float, dict[str, Any]]:
    """One pipeline run: (wall seconds, its reply)."""
    start = time.perf_counter()
    r = service.post(
        "/api/pipeline",
        files={"file": ("clip.wav", audio)},
        data={"instruction": "Summarize this text in one sentence.", "max_tokens": "48", "speak": "true"},
        timeout=600,
    )
    assert r.ok, r.text
    return time.perf_counter() - start, r.json()


def runs(service: Service, audio: bytes, repeats: int) -> tuple[dict[str, float], list[list[tuple[str, str, str]]]]:
    """Median of each step and of the whole over ``repeats`` runs after a warm-up; each run's moves."""
    chain(service, audio)
    walls, replies = [], []
    for _ in range(repeats):
        wall, reply = chain(service, audio)
        walls.append(wall)
        replies.append(reply)
    medians = {step: statistics.median(r["timings"][step] for r in replies) for step in STEPS}
    medians["total_s"] = statistics.median(walls)
    moves = [[(e["model"], e["to"], e["reason"]) for e in r["events"]] for r in replies]
    return medians, moves


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    audio = sample_clips(load_config())["two_cities"].read_bytes()
    work = Path(tempfile.mkdtemp())

    resident_service = Service(work / "resident").start()
    try:
        resident, _ = runs(resident_service, audio, args.repeats)
    finally:
        resident_service.stop()
    learnt = (work / "resident" / "footprints.json").read_text()  # with each model's peak in a request
    footprints = {k: v for k, v in json.loads(learnt).items() if k in (ASR, LLM, TTS)}

    budget = int(1.05 * max(footprints.values()))
    state = work / "budget"
    state.mkdir()
    (state / "footprints.json").write_text(learnt)
    budget_service = Service(state, EDGE_ASR_MEMORY_BUDGET=str(budget)).start()
    try:
        turns, moves = runs(budget_service, audio, args.repeats)
    finally:
        budget_service.stop()

    footprints_mb = {k: round(v / 1e6) for k, v in footprints.items()}
    print(json.dumps({"footprints_mb": footprints_mb, "budget_mb": budget // 10**6}))
    print(json.dumps({"moves_per_run_under_budget": moves[-1]}))
    for step in (*STEPS, "total_s"):
        row = {"step": step, "resident_s": round(resident[step], 3), "budget_s": round(turns[step], 3)}
        print(json.dumps(row))
    print(
        json.dumps(
            {
                "summary": "whole chain, budget / resident (lower is better)",
                "budget/resident": round(turns["total_s"] / resident["total_s"], 3),
                "swaps_s": round(turns["swap_s"] + turns["speech_swap_s"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
