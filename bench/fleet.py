"""Two units behind each router of docs/fleet.md (``tests.router``: HAProxy and the LiteLLM proxy
on their files under ``deploy/``), on loopback:

(a) the router's own overhead on a warm transcription: the same request through the router and
    straight to a unit, in turns (the goal: at most 1.05x);
(b) throughput of two units behind the router against one unit alone: the time for a batch of
    concurrent transcriptions (on this machine both units share its cores, so this shows what the
    router costs and that it spreads the work, not the second unit's hardware).

usage: python -m bench.fleet [--repeats 20] [--batch 9]   (after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from edge_asr.config import load_config
from edge_asr.samples import sample_clips
from tests.router import HAProxy, LiteLLMProxy, Router
from tests.service import ASR, Service


def transcribe(url: str, clip: bytes) -> requests.Response:
    r = requests.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", clip)}, data={"model": ASR})
    assert r.ok, r.text
    return r


def batch(url: str, clip: bytes, size: int) -> tuple[float, list[requests.Response]]:
    start = time.perf_counter()
    with ThreadPoolExecutor(size) as pool:
        answers = list(pool.map(lambda _: transcribe(url, clip), range(size)))
    return time.perf_counter() - start, answers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=9)  # what one unit takes at once: 1 + max_queue
    args = parser.parse_args()
    config = load_config()
    clip = sample_clips(config)["beckett"].read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        units = {name: Service(Path(folder) / name, EDGE_ASR_UNIT_NAME=name) for name in "ab"}
        for svc in units.values():
            svc.start()
        try:
            for url in (units["a"].url, units["b"].url):
                transcribe(url, clip)  # both warm
            for make in (lambda: HAProxy(units, Path(folder) / "haproxy.log"),
                         lambda: LiteLLMProxy(units, Path(folder) / "litellm.log", config)):  # fmt: skip
                router = make()
                try:
                    measure(router, units, clip, args.repeats, args.batch)
                finally:
                    router.close()
        finally:
            for svc in units.values():
                svc.stop()


def measure(router: Router, units: dict[str, Service], clip: bytes, repeats: int, size: int) -> None:
    transcribe(router.url, clip)
    ratios = []
    for _ in range(repeats):
        direct = time.perf_counter()
        transcribe(units["a"].url, clip)
        direct = time.perf_counter() - direct
        routed = time.perf_counter()
        transcribe(router.url, clip)
        ratios.append((time.perf_counter() - routed) / direct)
    print(json.dumps({"bench": f"{router.name}: overhead on a warm transcription (beckett, 10 s)",
                      "routed_vs_direct": round(statistics.median(ratios), 3),
                      "goal_met": statistics.median(ratios) <= 1.05}))  # fmt: skip
    alone, both = [], []
    for _ in range(3):
        alone.append(batch(units["a"].url, clip, size)[0])
        seconds, answers = batch(router.url, clip, size)
        both.append(seconds)
    print(json.dumps({"bench": f"{router.name}: {size} concurrent transcriptions, two units behind it",
                      "one_unit_s": round(statistics.median(alone), 3),
                      "two_units_s": round(statistics.median(both), 3),
                      "throughput_two_vs_one": round(statistics.median(alone) / statistics.median(both), 3),
                      "spread": dict(Counter(router.unit(r) for r in answers))}))  # fmt: skip


if __name__ == "__main__":
    main()
