"""The HTTP service: a Flask app factory with blueprints ``openai_api`` (models, audio) and ``chat``
under ``/v1``, so any OpenAI SDK works; ``management`` (``/api``, ``/healthz``) and ``pipeline``
(``/api/pipeline``), in front of one ModelManager."""

from __future__ import annotations

from flask import Flask

from edge_asr.config import Config
from edge_asr.manager import ModelManager
from edge_asr.server import chat, errors, management, openai_api, pipeline


def create_app(config: Config, manager: ModelManager | None = None) -> Flask:
    app = Flask("edge_asr")
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes
    app.extensions["edge_asr.config"] = config
    app.extensions["edge_asr.manager"] = manager or ModelManager.create(config)
    errors.register(app)
    app.register_blueprint(openai_api.bp)
    app.register_blueprint(chat.bp)
    app.register_blueprint(management.bp)
    app.register_blueprint(pipeline.bp)
    return app
