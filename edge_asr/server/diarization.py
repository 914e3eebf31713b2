"""``POST /v1/audio/diarization`` (speaches' endpoint: who spoke when, as JSON or RTTM), the
diarization a transcription asks for (``diarized_json``, ``diarize=true``): the form fields both
read, and the one way both run the diarization model; and the unit's enrolled voices
(``/api/speakers``), named in every diarization."""

from __future__ import annotations

import base64
import binascii
import io
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request

from edge_asr.audio import SAMPLE_RATE, AudioError, decode_audio, decoding_peak_bytes
from edge_asr.diarization.speakers import diarization_json, rttm, speaker_labels
from edge_asr.errors import InvalidRequest, SpeakerNotFound
from edge_asr.lifecycle import ModelManager, result
from edge_asr.manifest import DEFAULT_MODELS
from edge_asr.server.bodies import uploaded_audio
from edge_asr.server.current import audio_budget, enrolled_voices, manager
from edge_asr.settings import request_keep_alive
from edge_asr.workers.protocol import SAME_SPEAKER_DISTANCE, DiarizationResult

bp = Blueprint("diarization", __name__)

MAX_SPEAKERS = 20  # num_speakers, at most
MAX_KNOWN_SPEAKERS = 4  # as OpenAI's API takes them
MAX_REFERENCE_SECONDS = 30.0


@bp.post("/v1/audio/diarization")
def diarization() -> Response:
    form = request.form
    response_format = form.get("response_format", "json")
    if response_format not in ("json", "rttm"):
        raise InvalidRequest(f"response_format must be json or rttm, not {response_format!r}")
    with ExitStack() as holds:
        audio = uploaded_audio(holds)
        asked = speakers_asked(holds, "model")
        found, labels = diarize(manager(), asked, audio, request_keep_alive(form.get("keep_alive")))
    if response_format == "rttm":
        recording = (request.files["file"].filename or "audio").rsplit(".", 1)[0]
        return Response(rttm(found, labels, recording), mimetype="text/plain")
    return jsonify(diarization_json(found, labels))


@dataclass(frozen=True)
class SpeakersAsked:
    """What a request asks of the diarization, read from its form (in the request, so that a
    stream's steps can run it after the request's context is gone)."""

    model: str
    speakers: int | None  # None: the threshold decides
    threshold: float
    references: dict[str, np.ndarray]  # known speakers' clips
    enrolled: dict[str, list[float]]  # the unit's enrolled voices


def speakers_asked(holds: ExitStack, model_field: str) -> SpeakersAsked:
    """The form's diarization model (its field ``model_field``), ``num_speakers``, ``threshold`` and
    known speakers; the known speakers' clips are decoded within the audio budget ``holds``."""
    form = request.form
    model_id = _diarization_model(form.get(model_field) or DEFAULT_MODELS["diarization"])
    speakers = _number(form, "num_speakers", int, 1, MAX_SPEAKERS)
    threshold = _number(form, "threshold", float, 0.01, 2.0) or SAME_SPEAKER_DISTANCE
    return SpeakersAsked(model_id, speakers, threshold, _known_speakers(holds), enrolled_voices().embeddings(model_id))


def diarize(
    models: ModelManager, asked: SpeakersAsked, audio: np.ndarray, keep_alive: float | None
) -> tuple[DiarizationResult, list[str]]:
    """Who spoke when in ``audio``, and each speaker's label (a request's own clip of a name
    outweighs the enrolled voice of that name)."""
    with models.lease(asked.model, keep_alive) as lease:
        known = asked.enrolled | {name: result(lease.embed_voice(c))["voice"] for name, c in asked.references.items()}
        found = result(lease.diarize(audio, asked.speakers, asked.threshold, voices=bool(known)))
    return found, speaker_labels(found, known)


@bp.get("/api/speakers")
def speakers() -> Response:
    return jsonify({"speakers": enrolled_voices().listed()})


@bp.post("/api/speakers")
def enrol() -> Response:
    """A voice to keep by name (multipart: ``name`` and ``file``, a clip of 2-30 s with at least
    2 s of that person's speech); the same name again replaces it."""
    name = request.form.get("name", "")
    _check_names([name])
    model_id = request.form.get("model") or DEFAULT_MODELS["diarization"]
    with ExitStack() as holds:
        upload = request.files.get("file")
        if upload is None:
            raise InvalidRequest("the multipart field 'file' (a clip of the voice) is missing")
        clip = _clip(f"the clip {upload.filename!r}", upload.read(), holds)
        with manager().lease(_diarization_model(model_id), request_keep_alive(request.form.get("keep_alive"))) as lease:
            voice = result(lease.embed_voice(clip))
    replaced = enrolled_voices().enrol(name, model_id, voice["voice"], voice["speech"])
    return jsonify({"name": name, "speech": voice["speech"], "replaced": replaced})


@bp.delete("/api/speakers/<name>")
def forget(name: str) -> Response:
    if not enrolled_voices().delete(name):
        raise SpeakerNotFound(f"no voice is enrolled as {name!r}")
    return jsonify({"deleted": name})


def _diarization_model(model_id: str) -> str:
    spec = manager().spec(model_id)
    if spec.task != "diarization":
        raise InvalidRequest(f"the model {model_id!r} is a {spec.task} model; it cannot tell speakers apart")
    return model_id


def _number(form: Any, key: str, kind: type, low: float, high: float) -> Any:
    raw = form.get(key)
    if raw in (None, ""):
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidRequest(f"{key} must be a number from {low} to {high}, not {raw!r}") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{key} must be from {low} to {high}, not {value}")
    return value


def _list(key: str) -> list[str]:
    return request.form.getlist(f"{key}[]") + request.form.getlist(key)


def _known_speakers(holds: ExitStack) -> dict[str, np.ndarray]:
    """OpenAI's ``known_speaker_names[]`` with ``known_speaker_references[]``: a clip of each
    speaker as a data URL (``data:audio/wav;base64,...``) or an uploaded file, in the same order."""
    names = _list("known_speaker_names")
    clips = [(f"known_speaker_references[{i}]", c.encode()) for i, c in enumerate(_list("known_speaker_references"))]
    uploads = request.files.getlist("known_speaker_references[]") + request.files.getlist("known_speaker_references")
    if clips and uploads:
        raise InvalidRequest("known_speaker_references: send all as data URLs or all as files (they pair by order)")
    clips += [(f"the reference {u.filename!r}", u.read()) for u in uploads]
    if len(names) != len(clips):
        counts = f"{len(names)} known_speaker_names and {len(clips)} known_speaker_references"
        raise InvalidRequest(f"{counts}: give a reference for each name")
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise InvalidRequest(f"at most {MAX_KNOWN_SPEAKERS} known speakers, not {len(names)}")
    _check_names(names)
    return {name: _clip(what, data, holds) for name, (what, data) in zip(names, clips, strict=True)}


def _check_names(names: list[str]) -> None:
    if len(set(names)) != len(names) or not all(0 < len(n) <= 64 and n.isprintable() and "/" not in n for n in names):
        raise InvalidRequest("speakers' names must be distinct, printable, of 1 to 64 characters, without '/'")


def _clip(what: str, data: bytes, holds: ExitStack) -> np.ndarray:
    if data.startswith(b"data:"):
        head, _, payload = data.partition(b",")
        if not head.endswith(b";base64"):
            raise InvalidRequest(f"{what} must be a base64 data URL (data:audio/wav;base64,...)")
        try:
            data = base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise InvalidRequest(f"{what} is not valid base64") from None
    try:
        source = io.BytesIO(data)
        holds.enter_context(audio_budget().hold(decoding_peak_bytes(source)))
        clip = decode_audio(source)
    except AudioError as e:
        raise InvalidRequest(f"{what}: {e}") from None
    if len(clip) > MAX_REFERENCE_SECONDS * SAMPLE_RATE:
        raise InvalidRequest(f"{what} is {len(clip) / SAMPLE_RATE:.0f} s long; at most {MAX_REFERENCE_SECONDS:.0f} s")
    return clip
