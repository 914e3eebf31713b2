"""The management API under ``/api`` (models, memory, events, draining), ``/healthz`` (liveness:
the process answers) and ``/readyz`` (readiness: it takes one more request now, for a router)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from edge_asr.errors import InvalidRequest
from edge_asr.lifecycle import ModelManager
from edge_asr.server.admission import RequestSlots
from edge_asr.server.bodies import json_body, seconds_arg
from edge_asr.server.current import config, manager, request_slots
from edge_asr.server.errors import error_response

bp = Blueprint("management", __name__)

DRAIN_POLL = 0.1  # seconds between looks at a drain's progress


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok", "unit": config().unit_name})


@bp.get("/readyz")
def readyz() -> Response:
    """200 with the facts while the unit (or ``?model=``) takes one more request now; else a 503
    in OpenAI's error shape, its code the reason, with ``Retry-After`` and the same facts."""
    facts, refused = manager().readiness(request.args.get("model") or None)
    facts["unit"] = config().unit_name
    if refused is None:
        return jsonify(facts)
    return error_response(503, refused.message, "server_error", refused.code, refused.retry_after, **facts)


@bp.get("/api/models")
def models() -> Response:
    return jsonify({"models": manager().statuses(), "unit": config().unit_name})


@bp.get("/api/models/<model_id>")
def model(model_id: str) -> Response:
    return jsonify(manager().status(model_id))


@bp.post("/api/models/<model_id>/load")
def load(model_id: str) -> Response:
    return jsonify(manager().load(model_id))


@bp.post("/api/models/<model_id>/unload")
def unload(model_id: str) -> Response:
    return jsonify(manager().unload(model_id, wait=seconds_arg("wait")))


@bp.patch("/api/models/<model_id>/settings")
def settings(model_id: str) -> Response:
    patch = json_body()
    if not isinstance(patch, dict):
        raise InvalidRequest('the body must be a JSON object of settings, e.g. {"language": "en"}')
    return jsonify({"id": model_id, "settings": manager().update_settings(model_id, patch)})


@bp.post("/api/system/free")
def free() -> Response:
    return jsonify(manager().free())


@bp.post("/api/system/drain")
def drain() -> Response:
    """Drain the unit (``ModelManager.drain``). ``?wait=S`` (at most ``drain_timeout``) returns
    once its grace is over and nothing is under way, so that a restart after it cuts nothing off."""
    models, slots = manager(), request_slots()
    models.drain(True)
    deadline = time.monotonic() + min(seconds_arg("wait") or 0.0, config().drain_timeout)
    while not _drained(state := _drain_state(models, slots)) and models.drained and time.monotonic() < deadline:
        time.sleep(DRAIN_POLL)
    return jsonify(state)


@bp.delete("/api/system/drain")
def undrain() -> Response:
    models = manager()
    models.drain(False)
    return jsonify(_drain_state(models, request_slots()))


def _drain_state(models: ModelManager, slots: RequestSlots) -> dict[str, Any]:
    """``requests``: HTTP requests under way besides the one asking; ``queued``: the models'
    (Wyoming's and live sessions' too)."""
    return {
        "draining": models.drained,
        "refusing": models.refuses_requests(),
        "requests": slots.busy - 1,
        "queued": models.queued(),
    }


def _drained(state: dict[str, Any]) -> bool:
    """Safe to restart: refusing new requests, nothing under way."""
    return state["refusing"] and not state["requests"] and not state["queued"]


@bp.get("/api/system/memory")
def memory() -> Response:
    models = manager()
    info = models.memory_source_info()
    return jsonify(
        {
            "source": info["source"],
            "info": info,
            "current": models.memory_now().as_dict(),
            "spare_worker": models.spare_status(),
            "history": [r.as_dict() for r in models.memory_history(seconds_arg("since") or 0.0)],
        }
    )


@bp.get("/api/events")
def events() -> Response:
    return jsonify({"events": manager().recent_events(seconds_arg("since") or 0.0, request.args.get("model"))})
