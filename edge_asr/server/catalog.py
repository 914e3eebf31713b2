"""OpenAI's ``GET /v1/models``: the models this unit serves, whether loaded or not."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from edge_asr.server.current import manager

bp = Blueprint("catalog", __name__, url_prefix="/v1")


@bp.get("/models")
def list_models() -> Response:
    return jsonify(
        {
            "object": "list",
            "data": [
                {"id": s.id, "object": "model", "created": 0, "owned_by": "edge-asr", "task": s.task}
                for s in manager().specs()
            ],
        }
    )
