"""Prometheus metrics. Gauges are read from their owners at scrape time (the manager's records,
the memory source, the supervisor), so no state is copied; counters and histograms of loads and
unloads are fed by the lifecycle event log, request latency by the HTTP layer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_asr.lifecycle import ModelManager, State
from edge_asr.supervisor import Supervisor

LIFECYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, manager: ModelManager, supervisor: Supervisor, unit: str):
        self.registry = CollectorRegistry()
        self.registry.register(_StateCollector(manager, supervisor))
        # which unit of a fleet this is: edge_asr_unit_info{unit="..."} 1, joined on the scrape's instance
        Info("edge_asr_unit", "This unit", registry=self.registry).info({"unit": unit})
        self.loads = Counter("edge_asr_model_loads", "Model loads", ["model", "reason"], registry=self.registry)
        self.unloads = Counter(
            "edge_asr_model_unloads",
            "Model unloads by reason (idle, pressure, user, evicted-for:..., free, shutdown)",
            ["model", "reason"],
            registry=self.registry,
        )
        self.failures = Counter(
            "edge_asr_model_failures", "Failed loads and crashes", ["model"], registry=self.registry
        )
        self.languages = Counter(
            "edge_asr_languages_detected", "Languages detected in speech", ["model", "language"], registry=self.registry
        )
        self.load_seconds = Histogram(
            "edge_asr_model_load_seconds", "Load duration", ["model"], buckets=LIFECYCLE_BUCKETS, registry=self.registry
        )
        self.unload_seconds = Histogram(
            "edge_asr_model_unload_seconds",
            "Unload duration",
            ["model"],
            buckets=LIFECYCLE_BUCKETS,
            registry=self.registry,
        )
        self.reclaimed = Counter(
            "edge_asr_model_reclaimed_bytes", "Memory that came back at unloads", ["model"], registry=self.registry
        )
        self.residue = Histogram(
            "edge_asr_model_residue_bytes",
            "What a worker held minus what came back once memory settled, per unload",
            ["model"],
            buckets=(-64e6, -16e6, 0, 4e6, 16e6, 64e6, 256e6),
            registry=self.registry,
        )
        self.requests = Histogram(
            "edge_asr_request_duration_seconds",
            "Time to the response's first byte, by endpoint (an HTTP path, or 'wyoming <event>') and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        manager.on_event(self.observe_event)

    def observe_event(self, event: dict[str, Any]) -> None:
        model, reason = event["model"], event["reason"]
        if event["from"] == event["to"]:  # not a move: what a model found serving, or its unload's residue
            if reason == "language detected":
                self.languages.labels(model, event["language"]).inc()
            elif reason == "memory settled":
                self.residue.labels(model).observe(event["residue_bytes"])
        elif event["to"] == State.READY.value:
            self.loads.labels(model, reason).inc()
            self.load_seconds.labels(model).observe(event["duration_s"])
        elif event["to"] == State.UNLOADED.value:
            self.unloads.labels(model, reason).inc()
            self.unload_seconds.labels(model).observe(event["duration_s"])
            self.reclaimed.labels(model).inc(max(0, event["reclaimed_bytes"]))
        elif event["to"] == State.FAILED.value:
            self.failures.labels(model).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, manager: ModelManager, supervisor: Supervisor):
        self.manager, self.supervisor = manager, supervisor

    def collect(self) -> Iterator[Metric]:
        reading = self.manager.memory_now()
        source = reading.source
        for name, value, text in (
            ("memory_total_bytes", reading.total_bytes, "Memory in all"),
            ("memory_available_bytes", reading.available_bytes, "Memory available"),
            ("memory_used_bytes", reading.used_bytes, "Memory in use"),
            ("swap_total_bytes", reading.swap_total_bytes, "Swap in all"),
            ("swap_used_bytes", reading.swap_used_bytes, "Swap in use"),
            ("memory_gpu_shared_bytes", reading.gpu_shared_bytes, "GPU allocations in shared memory (NvMap)"),
        ):
            if value is not None:
                family = GaugeMetricFamily(
                    f"edge_asr_{name}", f"{text}, as the memory source reads it", labels=["source"]
                )
                family.add_metric([source], value)
                yield family
        states = GaugeMetricFamily(
            "edge_asr_model_state", "1 for the state each model is in", labels=["model", "state"]
        )
        in_flight = GaugeMetricFamily("edge_asr_model_in_flight", "Requests holding the model", labels=["model"])
        footprint = GaugeMetricFamily("edge_asr_model_footprint_bytes", "Measured footprint", labels=["model"])
        thrash = CounterMetricFamily(
            "edge_asr_model_thrash", "Reloads soon after a pressure hibernation", labels=["model"]
        )
        for status in self.manager.statuses():
            model = status["id"]
            for state in State:
                states.add_metric([model, state.value], float(status["state"] == state.value))
            in_flight.add_metric([model], status["in_flight"])
            if status["footprint_bytes"] is not None:
                footprint.add_metric([model], status["footprint_bytes"])
            thrash.add_metric([model], status["thrashes"])
        yield from (states, in_flight, footprint, thrash)
        spare = self.manager.spare_status()
        yield GaugeMetricFamily(
            "edge_asr_spare_worker_bytes",
            "The spare worker's footprint while one is ready (a wake's process), else 0",
            value=spare["footprint_bytes"] if spare["ready"] else 0,
        )
        yield CounterMetricFamily("edge_asr_supervisor_ticks", "Supervisor checks", value=self.supervisor.ticks)
        yield CounterMetricFamily(
            "edge_asr_supervisor_cpu_seconds", "CPU time of the supervisor loop", value=self.supervisor.cpu_seconds
        )
        yield CounterMetricFamily(
            "edge_asr_pressure_hibernations",
            "Models hibernated under memory pressure",
            value=self.supervisor.pressure_hibernations,
        )
        loop_errors = CounterMetricFamily(
            "edge_asr_loop_errors",
            "Failed iterations of the lifecycle's own threads (logged; the loop went on)",
            labels=["loop"],
        )
        for loop in (self.supervisor.errors, *self.manager.loops()):
            loop_errors.add_metric([loop.loop], loop.count)
        yield loop_errors
        info = self.manager.memory_source_info()
        for key in ("skipped_lines", "restarts"):
            if key in info:
                yield CounterMetricFamily(
                    f"edge_asr_tegrastats_{key}", f"tegrastats {key.replace('_', ' ')}", value=info[key]
                )
