"""Chaos: the service under a crowd of clients while an injector breaks what it can.

Clients (threads) loop over random operations: transcriptions (short, long, streamed, bad audio),
chats, pipelines, loads, unloads, frees and settings writes. Meanwhile an injector kills (SIGKILL)
and freezes (SIGSTOP) workers, kills the spare worker, flips memory pressure through the fake
tegrastats and fills the state directory (a small tmpfs: run as root). Counted and printed as JSON:
requests by operation and outcome, and the invariants: no 500, no request past its bound, no zombie,
no model stuck in loading/unloading past its bound, the spare worker back once all is freed, the
settings as the last acknowledged write left them, and, once everything is freed, the memory
processes hold (the kernel's anonymous and shared pages, page tables and unreclaimable slab) back
within 16 MB of where it started. MemAvailable is reported but not judged: it also moves with the
page cache and with what the rest of the machine (or its hypervisor) takes — a CI run once lost 194
MiB of it while those accounts grew by 20 MiB.

usage: python -m bench.chaos [--seconds 600] [--clients 16] [--seed 0]   (root; after `source scripts/env.sh`)
Exits 1 when an invariant broke. tests/test_chaos.py runs it for a short while in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import requests
import soundfile

from edge_asr.audio import decode_audio
from edge_asr.config import load_config
from edge_asr.memory import trim_heap
from edge_asr.samples import sample_clips
from tests.fakes.tegrastats_feed import RECORDED, pressure_env, replay, under_pressure
from tests.service import Service, children, fill, settled_available, wait_for

ASR, LLM = "whisper-tiny-en", "smollm2-135m-instruct"
MODELS = (ASR, LLM)
STALL_S, WAIT_S, LOAD_S, UNLOAD_S = 4, 10, 30, 5
REQUEST_BOUND_S = 2 * WAIT_S + LOAD_S + STALL_S + 30  # audio and lock waits, a load it does, a stall, the work
STUCK_BOUND_S = LOAD_S + UNLOAD_S * len(MODELS) + WAIT_S  # a load with its evictions


def wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, samples, 16000, format="WAV")
    return buf.getvalue()


class Chaos:
    def __init__(self, root: Path, clients: int, seed: int, memory_tolerance_mib: float):
        self.root, self.clients, self.rng = root, clients, random.Random(seed)
        self.memory_tolerance = memory_tolerance_mib * 2**20
        clips = sample_clips(load_config())
        speech = {name: decode_audio(path) for name, path in clips.items()}
        self.short = clips["beckett"].read_bytes()
        self.long = wav(np.concatenate([speech["two_cities"]] * 2))
        self.outcomes: Counter[str] = Counter()
        self.broken: list[str] = []  # invariant violations, described
        self.acknowledged: dict[str, int] = {}  # the priority the last 200 PATCH set, per model
        self.settings_lock = threading.Lock()  # PATCHes in a row, so their order is their acks' order
        self.stuck_since: dict[str, float] = {}
        self.longest_stuck = 0.0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.state = root / "state"
        self.feed = root / "tegrastats-lines.txt"

    # -- the service ---------------------------------------------------------------------------

    def start(self) -> Service:
        self.state.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(self.state)], check=True)
        replay(self.feed, RECORDED)
        env = {
            **pressure_env(self.feed),
            "EDGE_ASR_STALL_TIMEOUT": str(STALL_S),
            "EDGE_ASR_WAIT_TIMEOUT": str(WAIT_S),
            "EDGE_ASR_LOAD_TIMEOUT": str(LOAD_S),
            "EDGE_ASR_UNLOAD_TIMEOUT": str(UNLOAD_S),
            "EDGE_ASR_FAILURE_BACKOFF": "1",
            "EDGE_ASR_KEEP_ALIVE": "20s",
        }
        self.service = Service(self.state, **env).start()
        return self.service

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.state)], check=False)

    # -- clients -------------------------------------------------------------------------------

    def request(self, op: str, method: str, path: str, allowed: set[int], **kw) -> requests.Response | None:
        start = time.monotonic()
        try:
            r = requests.request(method, self.service.url + path, timeout=REQUEST_BOUND_S + 30, **kw)
            if kw.get("stream"):
                for _ in r.iter_lines():
                    pass
        except requests.RequestException as e:
            self.violation(f"{op}: no answer ({type(e).__name__})")
            return None
        took = time.monotonic() - start
        code = r.status_code
        with self.lock:
            self.outcomes[f"{op} {code}"] += 1
        if took > REQUEST_BOUND_S:
            self.violation(f"{op}: answered {code} after {took:.0f} s (bound {REQUEST_BOUND_S} s)")
        if code not in allowed:
            self.violation(f"{op}: {code} {r.text[:200]}")
        if code == 503:
            if "Retry-After" not in r.headers:
                self.violation(f"{op}: 503 without Retry-After")
            else:  # as a well-behaved client does (the OpenAI SDKs do)
                self.stop.wait(min(float(r.headers["Retry-After"]), 3.0))
        return r

    def violation(self, what: str) -> None:
        with self.lock:
            self.broken.append(what)

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        busy = {200, 503}  # 503: queue full, worker crashed or stalled, backing off: retry later
        while not self.stop.is_set():
            op = rng.choice(
                ["short", "short", "long", "stream", "bad", "chat", "chat", "pipeline", "load", "unload", "free", "set"]
            )
            model = rng.choice(MODELS)
            if op in ("short", "long", "stream"):
                data = {"model": ASR, "beam_size": rng.choice(["1", "5"]), "stream": str(op == "stream").lower()}
                audio = self.long if op == "long" else self.short
                self.request(
                    op,
                    "POST",
                    "/v1/audio/transcriptions",
                    busy,
                    files={"file": ("a.wav", audio)},
                    data=data,
                    stream=op == "stream",
                )
            elif op == "bad":
                noise = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 5000)))
                self.request(op, "POST", "/v1/audio/transcriptions", {400, 503}, files={"file": ("a.wav", noise)})
            elif op == "chat":
                body = {"model": LLM, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}
                self.request(op, "POST", "/v1/chat/completions", busy, json=body)
            elif op == "pipeline":
                self.request(
                    op, "POST", "/api/pipeline", busy, files={"file": ("a.wav", self.short)}, data={"max_tokens": "8"}
                )
            elif op == "load":
                self.request(op, "POST", f"/api/models/{model}/load", busy)
            elif op == "unload":
                self.request(op, "POST", f"/api/models/{model}/unload?wait={rng.choice([0, 5])}", {200, 409, 503})
            elif op == "free":
                self.request(op, "POST", "/api/system/free", busy)
            else:
                priority = rng.randint(-5, 5)
                with self.settings_lock:
                    r = self.request(
                        op, "PATCH", f"/api/models/{model}/settings", {200, 503, 507}, json={"priority": priority}
                    )
                    if r is not None and r.status_code == 200:
                        self.acknowledged[model] = priority

    # -- the injector and the watch ------------------------------------------------------------

    def inject(self) -> None:
        while not self.stop.wait(self.rng.uniform(1.0, 3.0)):
            try:
                self.inject_one()
            except Exception as e:  # a run whose injector stopped would prove nothing
                self.violation(f"the injector failed: {e!r}")
        replay(self.feed, RECORDED)

    def inject_one(self) -> None:
        action = self.rng.choice(["kill", "freeze", "pressure", "disk"])
        workers = self.service.workers()
        spare = self.service.spare_pid()
        if action == "kill" and spare is not None:
            workers.append(spare)  # the spare worker dies too (it is re-made)
        with self.lock:
            self.outcomes[f"inject {action}"] += 1
        if action in ("kill", "freeze") and workers:
            pid = self.rng.choice(workers)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if action == "kill" else signal.SIGSTOP)
        elif action == "pressure":
            replay(self.feed, [under_pressure(line, 300) for line in RECORDED])
            self.stop.wait(2)
            replay(self.feed, RECORDED)
        elif action == "disk":
            filler = fill(self.state)
            self.stop.wait(self.rng.uniform(2, 6))
            filler.unlink(missing_ok=True)

    def watch(self) -> None:
        while not self.stop.wait(0.5):
            try:
                models = self.service.get("/api/models", timeout=5).json()["models"]
            except requests.RequestException as e:
                self.violation(f"/api/models: no answer ({type(e).__name__})")
                continue
            now = time.monotonic()
            for m in models:
                if m["state"] in ("loading", "unloading"):
                    since = self.stuck_since.setdefault(m["id"], now)
                    self.longest_stuck = max(self.longest_stuck, now - since)
                    if now - since > STUCK_BOUND_S:
                        self.violation(f"{m['id']} {m['state']} for {now - since:.0f} s")
                else:
                    self.stuck_since.pop(m["id"], None)

    # -- the run -------------------------------------------------------------------------------

    def run(self, seconds: float, warmup: float) -> dict:
        """A calm warm-up (every operation, no injector), everything freed: the start's memory
        includes what a busy service keeps (bounded caches, this process's clients); then the storm."""
        service = self.start()
        try:
            self.storm(warmup, inject=False)
            self.free_all(service)
            self.outcomes.clear()
            baseline, front_start, own_start = settled_available(), rss(service.process.pid), rss(os.getpid())
            self.state_start = shutil.disk_usage(self.state).used
            self.meminfo_start = meminfo_kib()
            self.storm(seconds, inject=True)
            return self.settle(service, baseline, front_start, own_start)
        finally:
            if service.process and service.process.poll() is None:
                service.stop()
            self.unmount()

    def storm(self, seconds: float, inject: bool) -> None:
        threads = [threading.Thread(target=self.client, args=(i,)) for i in range(self.clients)]
        threads += [threading.Thread(target=self.watch)] + ([threading.Thread(target=self.inject)] if inject else [])
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        self.stop.set()
        for thread in threads:
            thread.join(REQUEST_BOUND_S + 60)
        self.stop.clear()

    def free_all(self, service: Service) -> None:
        """Every model unloaded (or failed), waiting out loads in flight."""
        for pid in service.workers():
            os.kill(pid, signal.SIGCONT)  # a frozen idle worker is killed at its unload; spare it the wait
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            freed = service.post("/api/system/free")
            states = {m["id"]: m["state"] for m in service.get("/api/models").json()["models"]}
            if freed.ok and set(states.values()) <= {"unloaded", "failed"}:
                break
            time.sleep(1)
        else:
            self.violation(f"the models would not all unload: {states}")
        if not wait_for(lambda: service.spare()["ready"], 60, raises=False):
            self.violation(f"the spare worker did not come back: {service.spare()}")

    def settle(self, service: Service, baseline: int, front_start: int, own_start: int) -> dict:
        """After the storm: every worker gone, no zombie, settings as acknowledged, memory back."""
        self.free_all(service)
        zombies = [p for p in children(service.process.pid) if _state(p) == "Z"]
        if zombies:
            self.violation(f"zombies: {zombies}")
        if service.workers():
            models = service.get("/api/models").json()["models"]
            left = {m["id"]: (m["state"], m["worker_pid"], m["reason"]) for m in models}
            procs = {p: _state(p) for p in service.workers()}
            self.violation(f"workers left after free: {procs}; models: {left}")
        stored = {m: service.model(m)["settings"]["priority"] for m in self.acknowledged}
        if stored != self.acknowledged:
            self.violation(f"settings {stored} != the last acknowledged {self.acknowledged}")
        gc.collect()
        trim_heap()  # this process's own clients allocated too; what it still holds is not the service's
        end = settled_available()
        own_growth = rss(os.getpid()) - own_start
        state_growth = shutil.disk_usage(self.state).used - self.state_start  # a tmpfs: shared memory (the events)
        accounts = meminfo_kib()
        held_growth = sum(accounts[key] - self.meminfo_start[key] for key in HELD) * 1024
        service_loss = held_growth - own_growth - state_growth
        if service_loss > self.memory_tolerance:
            self.violation(f"the service holds {service_loss / 2**20:.0f} MiB more than at the start")
        codes = Counter()
        for key, n in self.outcomes.items():
            codes[key.rsplit(" ", 1)[1]] += n
        return {
            "bench": "chaos",
            "clients": self.clients,
            "outcomes": dict(sorted(self.outcomes.items())),
            "statuses": dict(sorted(codes.items())),
            "http_500": codes.get("500", 0),
            "longest_in_loading_or_unloading_s": round(self.longest_stuck, 1),
            "available_end_vs_start_mib": round((end - baseline) / 2**20, 1),
            "bench_process_growth_mib": round(own_growth / 2**20, 1),
            "state_tmpfs_growth_mib": round(state_growth / 2**20, 1),
            "meminfo_change_mib": {
                key: round((value - self.meminfo_start[key]) / 1024, 1) for key, value in accounts.items()
            },
            "service_memory_not_returned_mib": round(service_loss / 2**20, 1),
            "front_rss_start_mib": round(front_start / 2**20, 1),
            "front_rss_end_mib": round(rss(service.process.pid) / 2**20, 1),
            "violations": self.broken,
        }


HELD = ("AnonPages", "Shmem", "PageTables", "SUnreclaim")  # what processes (and the kernel for them) hold


def meminfo_kib() -> dict[str, int]:
    """The kernel's accounts that say where memory went (/proc/meminfo, kB)."""
    keys = ("MemFree", "MemAvailable", "Cached", "AnonPages", "Shmem", "SReclaimable", "SUnreclaim", "PageTables")
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {key: int(fields[key].split()[0]) for key in keys}


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--warmup", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--memory-tolerance-mib", type=float, default=16, help="memory the service may keep at the end (16 MiB)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-asr-chaos-") as root:
        chaos = Chaos(Path(root), args.clients, args.seed, args.memory_tolerance_mib)
        result = chaos.run(args.seconds, args.warmup)
        if result["violations"]:
            kept = Path(tempfile.gettempdir()) / "edge-asr-chaos-service.log"
            kept.write_bytes(chaos.service.log.read_bytes())
            result["service_log"] = str(kept)
    print(json.dumps(result, indent=1))
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
