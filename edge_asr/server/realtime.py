"""``GET /v1/realtime?intent=transcription``: the Realtime API's WebSocket upgrade.

The upgrade is checked as any request is (origins, host, API key: ``front`` sends it through the
app); this route adds its own checks (the intent, the model, a free session) and answers 101 with
the session it opened, which ``front`` then runs. Browsers, which cannot set headers on a
WebSocket, send the key as the subprotocol ``openai-insecure-api-key.<key>`` (``auth``), as they
do with OpenAI; the subprotocol the server answers with is ``realtime`` when offered.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from edge_asr.errors import InvalidRequest
from edge_asr.server.current import realtime_sessions
from edge_asr.server.front import SESSION_KEY

bp = Blueprint("realtime", __name__, url_prefix="/v1")
SUBPROTOCOL = "realtime"


@bp.route("/realtime", websocket=True)  # matched by upgrades only
def upgrade() -> Response:
    if SESSION_KEY not in request.environ:
        raise InvalidRequest("/v1/realtime is a WebSocket: connect to ws://<unit>/v1/realtime?intent=transcription")
    if request.args.get("intent") != "transcription":
        raise InvalidRequest("this unit serves transcription sessions only: connect with ?intent=transcription")
    request.environ[SESSION_KEY] = realtime_sessions().open(request.args.get("model"))
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    return Response(status=101, headers={"Sec-WebSocket-Protocol": SUBPROTOCOL} if SUBPROTOCOL in offered else {})
