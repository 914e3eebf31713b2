"""The HTTP service: a Flask app factory with blueprints ``catalog`` (the models),
``transcription``, ``chat``, ``tts`` and ``realtime`` (the Realtime API's WebSocket upgrade) under
``/v1``, so any OpenAI SDK works; ``management``
(``/api``, ``/healthz``), ``pipeline`` (``/api/pipeline``), ``metrics`` (``/metrics``) and ``web``
(the page at ``/`` and its event stream), in front of one ModelManager and its Supervisor.
``origins`` refuses other sites' pages and host names, ``auth`` checks the API key on every
request; ``admission`` bounds what the front process takes on; ``checks`` holds the request
checks several blueprints make."""

from __future__ import annotations

from flask import Flask

from edge_asr.config import Config
from edge_asr.diarization.voices import EnrolledVoices
from edge_asr.lifecycle import ModelManager
from edge_asr.realtime.session import RealtimeSessions
from edge_asr.server import (
    auth,
    catalog,
    chat,
    diarization,
    errors,
    management,
    metrics,
    origins,
    pipeline,
    realtime,
    transcription,
    tts,
    web,
)
from edge_asr.server.admission import AudioBudget, RequestSlots, UnitHeader
from edge_asr.supervisor import Supervisor
from edge_asr.telemetry import Metrics

# A form field that is not a file (a known speaker's clip as a data URL: 30 s of 48-kHz stereo is
# 7.7 MB in base64) is read into memory; the whole body stays within max_upload_bytes.
FORM_FIELD_BYTES = 16 * 1024 * 1024


def create_app(config: Config, manager: ModelManager | None = None) -> Flask:
    """The app, its manager and its supervisor (started by whoever serves the app)."""
    app = Flask("edge_asr", static_folder=None)  # the page's files are the web blueprint's
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = FORM_FIELD_BYTES
    manager = manager or ModelManager.create(config)
    supervisor = Supervisor(manager, config)
    app.extensions["edge_asr.config"] = config
    app.extensions["edge_asr.manager"] = manager
    app.extensions["edge_asr.supervisor"] = supervisor
    app.extensions["edge_asr.metrics"] = Metrics(manager, supervisor, config.unit_name)
    app.extensions["edge_asr.realtime"] = RealtimeSessions(manager, config, app.extensions["edge_asr.metrics"].requests)
    app.extensions["edge_asr.audio_budget"] = AudioBudget(config.request_memory_budget, config.wait_timeout)
    app.extensions["edge_asr.voices"] = EnrolledVoices(config.state_dir)
    slots = RequestSlots(app.wsgi_app, config.threads, manager.refuses_requests)
    app.extensions["edge_asr.request_slots"] = slots
    app.wsgi_app = UnitHeader(slots, config.unit_name)  # type: ignore[method-assign]
    errors.register(app)
    origins.register(app)
    auth.register(app)
    app.register_blueprint(catalog.bp)
    app.register_blueprint(transcription.bp)
    app.register_blueprint(diarization.bp)
    app.register_blueprint(chat.bp)
    app.register_blueprint(tts.bp)
    app.register_blueprint(realtime.bp)
    app.register_blueprint(management.bp)
    app.register_blueprint(pipeline.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(web.bp)
    return app
