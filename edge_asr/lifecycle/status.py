"""A model as the API shows it: its lifecycle record, settings, footprint and runtime in one
dict, times on the wall clock (the records keep monotonic ones)."""

from __future__ import annotations

from typing import Any

from edge_asr.lifecycle.records import ModelRecord


def model_status(
    rec: ModelRecord, settings: dict[str, Any], footprint: int | None, expires_at: float | None, wall_offset: float
) -> dict[str, Any]:
    """(Under the manager's lock.) ``wall_offset`` turns a time on the manager's clock into a
    wall-clock time, for people and the API."""

    def wall(t: float | None) -> float | None:
        return None if t is None else t + wall_offset

    return {
        "id": rec.spec.id,
        "task": rec.spec.task,
        "family": rec.spec.family,
        "state": rec.state.value,
        "reason": rec.reason,
        "in_flight": rec.in_flight,
        "waiting": rec.waiting,
        "footprint_bytes": footprint,
        "loaded_at": wall(rec.loaded_at),
        "last_used": wall(rec.last_used),
        "expires_at": wall(expires_at),
        "last_unload_reason": rec.last_unload_reason,
        "failures": rec.failures,
        "thrashes": rec.thrashes,
        **runtime_of(rec),
        "worker_pid": rec.worker.pid if rec.worker else None,
        "prepared": rec.spec.present,
        "settings": settings,
    }


def runtime_of(rec: ModelRecord) -> dict[str, Any]:
    """What runs the loaded model and why (TensorRT engines, or ONNX Runtime and why not
    TensorRT), as its worker reported; the preference alone when not loaded."""
    report = rec.worker.load_report if rec.worker else {}
    return {
        "runtime_preferred": rec.spec.runtime,
        "runtime": report.get("runtime"),
        "runtime_reason": report.get("runtime_reason"),
        "providers": report.get("providers", []),
    }
