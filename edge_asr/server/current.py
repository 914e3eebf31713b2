"""What the app factory attached to the app that serves the current request, for the blueprints."""

from __future__ import annotations

from flask import current_app

from edge_asr.config import Config
from edge_asr.diarization.voices import EnrolledVoices
from edge_asr.lifecycle import ModelManager
from edge_asr.realtime.session import RealtimeSessions
from edge_asr.server.admission import AudioBudget, RequestSlots
from edge_asr.telemetry import Metrics


def manager() -> ModelManager:
    return current_app.extensions["edge_asr.manager"]


def config() -> Config:
    return current_app.extensions["edge_asr.config"]


def metrics() -> Metrics:
    return current_app.extensions["edge_asr.metrics"]


def audio_budget() -> AudioBudget:
    return current_app.extensions["edge_asr.audio_budget"]


def request_slots() -> RequestSlots:
    return current_app.extensions["edge_asr.request_slots"]


def realtime_sessions() -> RealtimeSessions:
    return current_app.extensions["edge_asr.realtime"]


def enrolled_voices() -> EnrolledVoices:
    return current_app.extensions["edge_asr.voices"]
