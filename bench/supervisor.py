"""The supervisor's figures, each a ratio against a reference measured in the same run:

(a) reaction to memory pressure: from the first tegrastats reading below the low watermark to
    the idle model's unload being done (its memory back), against the same unload asked through
    the API; tegrastats is the fake that replays recorded lines (tests/fakes/tegrastats): this
    machine is not a Jetson;
(b) the supervisor's own CPU cost per reading: its loop's CPU time per tick (from /metrics), and
    the whole idle service process's CPU time per reading and as a share of one core (the
    tegrastats reader thread and parsing included; the fake tegrastats process itself is not
    counted), for the tegrastats source and for /proc/meminfo.

usage: python -m bench.supervisor [--repeats 10] [--idle 20]   (after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edge_asr.config import load_config
from edge_asr.samples import sample_clips
from tests.service import Service, wait_for
from tests.test_supervisor import INTERVAL_MS, RECORDED, pressure_env, replay, under_pressure

ASR = "whisper-tiny-en"


def cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, to the nanosecond (schedstat; /proc/PID/stat counts
    10-ms ticks, too coarse for this)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def supervisor_counters(svc: Service) -> tuple[float, float]:
    """The supervisor loop's own CPU seconds and ticks, from /metrics."""
    samples = {s.name: s.value for f in text_string_to_metric_families(svc.get("/metrics").text) for s in f.samples}
    return samples["edge_asr_supervisor_cpu_seconds_total"], samples["edge_asr_supervisor_ticks_total"]


def service(state: Path, feed: Path, source: str) -> Service:
    return Service(state, **pressure_env(feed, source)).start()


def reaction(svc: Service, feed: Path, audio: bytes, repeats: int) -> dict[str, float]:
    reactions, api_unloads = [], []
    for _ in range(repeats):
        assert svc.transcribe(audio).ok
        since = time.time()
        replay(feed, [under_pressure(line, 300) for line in RECORDED])
        wait_for(lambda: svc.model()["state"] == "unloaded", 10, 0.01)
        event = svc.get("/api/events", params={"model": ASR, "since": since}).json()["events"][-1]
        assert event["reason"] == "pressure"
        history = svc.get("/api/system/memory", params={"since": since}).json()["history"]
        first_low = min(r["time"] for r in history if r["available_bytes"] < 2**30 and r["source"] == "tegrastats")
        reactions.append(event["time"] - first_low)
        replay(feed, RECORDED)
        time.sleep(2 * INTERVAL_MS / 1000)
        assert svc.transcribe(audio).ok
        assert svc.post(f"/api/models/{ASR}/unload").json()["unloaded"]
        api_unloads.append(svc.get("/api/events", params={"model": ASR}).json()["events"][-1]["duration_s"])
    return {"reaction_s": statistics.median(reactions), "api_unload_s": statistics.median(api_unloads)}


def idle_cost(svc: Service, seconds: float) -> dict[str, float]:
    assert svc.process is not None
    loop_cpu, ticks = supervisor_counters(svc)
    start_cpu, start = cpu_seconds(svc.process.pid), time.monotonic()
    time.sleep(seconds)
    cpu, wall = cpu_seconds(svc.process.pid) - start_cpu, time.monotonic() - start
    loop_cpu_after, ticks_after = supervisor_counters(svc)
    readings = wall / (INTERVAL_MS / 1000)
    return {
        "supervisor_loop_ms_per_tick": 1000 * (loop_cpu_after - loop_cpu) / (ticks_after - ticks),
        "process_ms_per_reading": 1000 * cpu / readings,
        "process_share_of_a_core": cpu / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    audio = sample_clips(load_config())["beckett"].read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        feed = Path(tmp) / "lines.txt"
        replay(feed, RECORDED)
        svc = service(Path(tmp) / "tegrastats", feed, "tegrastats")
        try:
            figures = reaction(svc, feed, audio, args.repeats)
            tegrastats_cost = idle_cost(svc, args.idle)
        finally:
            svc.stop()
        svc = service(Path(tmp) / "meminfo", feed, "meminfo")
        try:
            meminfo_cost = idle_cost(svc, args.idle)
        finally:
            svc.stop()
    print(
        json.dumps(
            {
                "bench": f"pressure reaction, tegrastats every {INTERVAL_MS} ms (median of {args.repeats})",
                "reaction_s": round(figures["reaction_s"], 3),
                "api_unload_s": round(figures["api_unload_s"], 3),
                "reaction_vs_api_unload": round(figures["reaction_s"] / figures["api_unload_s"], 2),
                "reaction_minus_unload_vs_interval": round(
                    (figures["reaction_s"] - figures["api_unload_s"]) / (INTERVAL_MS / 1000), 2
                ),
            }
        )
    )
    for name, cost in (("tegrastats", tegrastats_cost), ("meminfo", meminfo_cost)):
        print(
            json.dumps(
                {
                    "bench": f"idle cost per reading, {name} source, interval {INTERVAL_MS} ms",
                    **{key: round(value, 4) for key, value in cost.items()},
                }
            )
        )


if __name__ == "__main__":
    main()
