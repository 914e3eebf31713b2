"""Who spoke when, on real voices: pyannote's sample conversation (scored against its own RTTM)
and a meeting built of the Dickens reader and a voice of that conversation (``samples.meeting``),
in process on the prepared model, then through the service (``/v1/audio/diarization`` and
``diarized_json`` read by the ``openai`` SDK)."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from collections.abc import Iterator

import numpy as np
import pytest
import soundfile
import soxr

from edge_asr.audio import decode_audio
from edge_asr.config import Config
from edge_asr.diarization.error_rate import diarization_error_rate, read_rttm
from edge_asr.diarization.model import MIN_REFERENCE_SPEECH, SpeakerDiarizer
from edge_asr.diarization.speakers import speaker_labels, with_speakers
from edge_asr.errors import RequestError
from edge_asr.manifest import DEFAULT_MODELS, get_model
from edge_asr.samples import Meeting, conversation, meeting
from edge_asr.workers.protocol import DiarizationResult
from tests.service import Service, wav

DIARIZATION = DEFAULT_MODELS["diarization"]
BAR = 0.10  # the largest diarization error rate accepted


@pytest.fixture(scope="module")
def diarizer(config: Config) -> Iterator[SpeakerDiarizer]:
    spec = get_model(config, DIARIZATION)
    assert spec.present, "run `edge-asr models prepare` first"
    diarizer = SpeakerDiarizer(spec.directory, threads=2)
    yield diarizer
    diarizer.release()


@pytest.fixture(scope="module")
def talk(config: Config) -> tuple[np.ndarray, list]:
    audio, rttm = conversation(config)
    return decode_audio(audio), read_rttm(rttm)


@pytest.fixture(scope="module")
def recording(config: Config) -> Meeting:
    return meeting(config)


@pytest.fixture(scope="module")
def unit(tmp_path_factory, whisper_spec) -> Iterator[Service]:
    """One service for the HTTP tests (their requests leave nothing the next one would see)."""
    service = Service(tmp_path_factory.mktemp("diarization") / "state").start()
    yield service
    service.stop()


def labelled(found: dict, labels: list[str]) -> list[tuple[float, float, str]]:
    return [(t["start"], t["end"], labels[t["speaker"]]) for t in found["turns"]]


def test_the_conversation_is_told_apart(diarizer, talk):
    audio, truth = talk
    found = diarizer.diarize(audio, None, 0.5)
    assert found["speakers"] == 2 and found["voices"] == []  # none asked for
    assert diarization_error_rate(truth, labelled(found, speaker_labels(found, {}))) <= BAR


def test_the_meeting_is_told_apart(diarizer, recording):
    found = diarizer.diarize(recording.audio, None, 0.5, voices=True)
    assert found["speakers"] == len(found["voices"]) == 2
    assert diarization_error_rate(recording.turns, labelled(found, speaker_labels(found, {}))) <= BAR
    assert all(abs(np.linalg.norm(v) - 1) < 1e-3 for v in found["voices"])


def test_a_number_of_speakers_given_is_kept(diarizer, talk):
    audio, truth = talk
    found = diarizer.diarize(audio, 2, 0.01)  # a threshold that alone would split every window's voice
    assert found["speakers"] == 2
    assert diarization_error_rate(truth, labelled(found, speaker_labels(found, {}))) <= BAR


def test_known_speakers_are_named_from_clips_of_their_voice(diarizer, recording):
    known = {who: diarizer.embed_voice(clip)["voice"] for who, clip in recording.references.items()}
    found = diarizer.diarize(recording.audio, None, 0.5, voices=True)
    named = labelled(found, speaker_labels(found, known))
    assert {who for *_, who in named} == {"reader", "guest"}
    for start, end, who in recording.turns:  # the name on each true turn is its speaker's
        overlap = dict.fromkeys(("reader", "guest"), 0.0)
        for s, e, n in named:
            overlap[n] += max(0.0, min(end, e) - max(start, s))
        assert max(overlap, key=overlap.get) == who


@pytest.mark.parametrize(
    ("clip", "words"),
    [
        (np.zeros(16000 * 5, np.float32), "holds 0.0 s of speech"),
        ("short", f"needs at least {MIN_REFERENCE_SPEECH:.0f} s"),
    ],
    ids=["silence", "one-second"],
)
def test_a_reference_without_enough_speech_is_refused(diarizer, recording, clip, words):
    if isinstance(clip, str):
        clip = recording.references["reader"][:16000]
    with pytest.raises(RequestError, match=words):
        diarizer.embed_voice(clip)


def test_labels_skip_known_names_and_a_known_voice_joins_its_clusters():
    voices = np.eye(3).tolist()
    voices.append([0.9, 0.1, 0.0])  # the first person again, kept apart by the clustering
    known = {"A": [0.0, 1.0, 0.0], "Bo": [1.0, 0.0, 0.0]}
    found: DiarizationResult = {"duration": 9.0, "turns": [], "speakers": 4, "voices": voices}
    assert speaker_labels(found, known) == ["Bo", "A", "B", "Bo"]
    assert speaker_labels(found | {"voices": []}, {}) == ["A", "B", "C", "D"]  # no voices asked: none known
    assert speaker_labels({"duration": 1.0, "turns": [], "speakers": 0, "voices": []}, known) == []


def test_a_segment_takes_the_speaker_it_overlaps_most():
    turns = [{"start": 0.0, "end": 4.0, "speaker": 0}, {"start": 3.0, "end": 9.0, "speaker": 1}]
    segments = [{"start": 0.5, "end": 3.5, "text": "a"}, {"start": 3.5, "end": 8.0, "text": "b"}]
    segments.append({"start": 12.0, "end": 13.0, "text": "c"})  # heard by no turn: the nearest one's
    assert [s["speaker"] for s in with_speakers(segments, turns, ["ann", "bob"])] == ["ann", "bob", "bob"]


def test_the_error_rate_counts_misses_false_alarms_and_confusion():
    truth = [(0.0, 10.0, "a"), (10.0, 20.0, "b")]
    assert diarization_error_rate(truth, [(0.0, 10.0, "x"), (10.0, 20.0, "y")]) == 0  # names are mapped
    assert diarization_error_rate(truth, [(0.0, 20.0, "x")]) == pytest.approx(0.5)  # b's time confused
    assert diarization_error_rate(truth, [(0.0, 10.0, "x")]) == pytest.approx(0.5)  # b's time missed
    assert diarization_error_rate(truth, [*truth, (20.0, 25.0, "a")]) == pytest.approx(0.25)  # false alarm


# -- through the service --------------------------------------------------------------------


def data_url(audio: np.ndarray, rate: int = 16000) -> str:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_the_diarization_endpoint_answers_json_and_rttm(unit: Service, talk, config):
    path, _ = conversation(config)
    audio, truth = talk
    answer = unit.post("/v1/audio/diarization", files={"file": ("talk.wav", path.read_bytes())})
    assert answer.ok, answer.text
    body = answer.json()
    assert body["duration"] == pytest.approx(len(audio) / 16000, abs=0.01)
    assert {s["speaker"] for s in body["segments"]} == {"A", "B"}
    found = [(s["start"], s["end"], s["speaker"]) for s in body["segments"]]
    assert diarization_error_rate(truth, found) <= BAR
    rttm = unit.post(
        "/v1/audio/diarization", files={"file": ("talk.wav", path.read_bytes())}, data={"response_format": "rttm"}
    )
    assert rttm.ok and rttm.text.startswith("SPEAKER talk 1 ")
    lines = read_rttm(rttm.text)
    assert [who for *_, who in lines] == [who for *_, who in found]
    assert np.allclose([t[:2] for t in lines], [t[:2] for t in found], atol=0.002)


def test_diarized_json_names_known_speakers_for_the_openai_sdk(unit: Service, recording):
    client = unit.openai()
    reply = client.audio.transcriptions.create(
        model="whisper-tiny-en",
        file=("meeting.wav", wav(recording.audio)),
        response_format="diarized_json",
        chunking_strategy="auto",
        known_speaker_names=["reader", "guest"],
        known_speaker_references=[data_url(recording.references["reader"]), data_url(recording.references["guest"])],
    )
    assert reply.task == "transcribe" and reply.duration == pytest.approx(len(recording.audio) / 16000, abs=0.01)
    assert {s.speaker for s in reply.segments} == {"reader", "guest"}
    assert all(s.type == "transcript.text.segment" and s.id.startswith("seg_") for s in reply.segments)
    spoken = " ".join(s.text for s in reply.segments if s.speaker == "reader").lower()
    assert "best of times" in spoken and "worst of times" in spoken  # Dickens, read by the reader


def test_srt_and_vtt_show_the_speaker_when_asked(unit: Service, recording):
    for response_format, mark in (("srt", r"\[(\w+)\] "), ("vtt", r"<v (\w+)>")):
        answer = unit.transcribe(wav(recording.audio), response_format=response_format, diarize="true")
        assert answer.ok, answer.text
        speakers = set(re.findall(mark, answer.text))
        assert speakers == {"A", "B"}, answer.text


@pytest.mark.parametrize(
    ("path", "fields", "words"),
    [
        ("/v1/audio/diarization", {"response_format": "xml"}, "response_format must be json or rttm"),
        ("/v1/audio/diarization", {"num_speakers": "0"}, "num_speakers must be from 1 to 20"),
        ("/v1/audio/diarization", {"threshold": "a lot"}, "threshold must be a number"),
        ("/v1/audio/diarization", {"model": "whisper-tiny-en"}, "it cannot tell speakers apart"),
        ("/v1/audio/diarization", {"known_speaker_names[]": "ann"}, "give a reference for each name"),
        (
            "/v1/audio/diarization",
            {"known_speaker_names[]": "ann", "known_speaker_references[]": "data:audio/wav;base64,@@"},
            "is not valid base64",
        ),
        (
            "/v1/audio/diarization",
            {"known_speaker_names[]": list("abcde"), "known_speaker_references[]": ["data:,"] * 5},
            "at most 4 known speakers",
        ),
        ("/v1/audio/diarization", {"known_speaker_names[]": "a/b", "known_speaker_references[]": "data:,"}, "'/'"),
        ("/v1/audio/transcriptions", {"response_format": "diarized_json", "num_speakers": "0"}, "num_speakers"),
        ("/v1/audio/translations", {"response_format": "diarized_json"}, "speakers come with a transcription"),
        ("/v1/audio/transcriptions", {"response_format": "json", "diarize": "true"}, "speakers come with"),
    ],
    ids=[
        "format",
        "speakers",
        "threshold",
        "model",
        "names",
        "base64",
        "five-known",
        "slash",
        "transcription-speakers",
        "translation",
        "json",
    ],
)
def test_bad_diarization_requests_are_400s_before_any_model_works(unit: Service, recording, path, fields, words):
    fields = {"model": "whisper-tiny-en"} | fields if path != "/v1/audio/diarization" else fields
    assert unit.post("/api/system/free").ok
    asked = time.time()
    answer = unit.post(path, files={"file": ("m.wav", wav(recording.audio[: 16000 * 3]))}, data=fields)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"]["message"]
    assert unit.get("/api/events", params={"since": asked}).json()["events"] == []  # nothing loaded


def test_references_pair_with_names_by_kind_and_may_be_long(unit: Service, recording, speech):
    """A 25-s reference at 48 kHz is 3 MB of base64 in one form field; data URLs and files are not
    mixed (they pair with the names by order)."""
    clip = soxr.resample(speech["two_cities"][16000 * 5 : 16000 * 30], 16000, 48000).astype(np.float32)
    long = data_url(clip, 48000)
    fields = {"known_speaker_names[]": ["reader"], "known_speaker_references[]": [long]}
    answer = unit.post("/v1/audio/diarization", files={"file": ("m.wav", wav(recording.audio))}, data=fields)
    assert answer.ok, answer.text
    assert "reader" in {s["speaker"] for s in answer.json()["segments"]}
    guest = ("g.wav", wav(recording.references["guest"]))
    mixed = unit.post(
        "/v1/audio/diarization",
        files={"file": ("m.wav", wav(recording.audio)), "known_speaker_references[]": guest},
        data={"known_speaker_names[]": ["reader", "guest"], "known_speaker_references[]": [long]},
    )
    assert mixed.status_code == 400 and "all as data URLs or all as files" in mixed.json()["error"]["message"]


def test_a_silent_reference_is_a_400_and_the_worker_serves_on(unit: Service, recording):
    silent = data_url(np.zeros(16000 * 4, np.float32))
    fields = {"known_speaker_names[]": "ann", "known_speaker_references[]": silent}
    answer = unit.post("/v1/audio/diarization", files={"file": ("m.wav", wav(recording.audio))}, data=fields)
    assert answer.status_code == 400 and "holds 0.0 s of speech" in answer.json()["error"]["message"]
    again = unit.post("/v1/audio/diarization", files={"file": ("m.wav", wav(recording.audio))})
    assert again.ok and len({s["speaker"] for s in again.json()["segments"]}) == 2
    assert json.loads(again.text)["duration"] > 20


def test_an_enrolled_voice_names_its_speaker_after_a_restart(tmp_path, whisper_spec, recording):
    service = Service(tmp_path / "state").start()
    try:
        clip = wav(recording.references["reader"])
        enrolled = service.post("/api/speakers", files={"file": ("r.wav", clip)}, data={"name": "reader"})
        assert enrolled.ok and enrolled.json()["speech"] >= 2 and enrolled.json()["replaced"] is False
        assert service.post("/api/speakers", files={"file": ("r.wav", clip)}, data={"name": "reader"}).json()[
            "replaced"
        ]
        assert service.stop() == 0
        service.start()
        assert [v["name"] for v in service.get("/api/speakers").json()["speakers"]] == ["reader"]
        stored = json.loads((tmp_path / "state" / "voices.json").read_text())
        assert set(stored["reader"]) == {"model", "voice", "speech", "enrolled_at"}  # numbers, never the audio
        answer = service.post("/v1/audio/diarization", files={"file": ("m.wav", wav(recording.audio))})
        assert answer.ok and {s["speaker"] for s in answer.json()["segments"]} == {"reader", "A"}
        assert service.delete("/api/speakers/reader").json() == {"deleted": "reader"}
        gone = service.delete("/api/speakers/reader")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "speaker_not_found"
        nameless = service.post("/api/speakers", files={"file": ("r.wav", clip)}, data={"name": ""})
        assert nameless.status_code == 400 and "1 to 64 characters" in nameless.json()["error"]["message"]
    finally:
        service.stop()


def test_the_pipeline_hands_the_llm_who_said_what(unit: Service, recording):
    fields = {
        "diarize": "true",
        "max_tokens": "16",
        "known_speaker_names[]": ["reader", "guest"],
        "known_speaker_references[]": [data_url(recording.references[w]) for w in ("reader", "guest")],
    }
    answer = unit.post("/api/pipeline", files={"file": ("m.wav", wav(recording.audio))}, data=fields)
    assert answer.ok, answer.text
    reply = answer.json()
    assert {s["speaker"] for s in reply["transcript"]["segments"]} == {"reader", "guest"}
    assert reply["timings"]["diarize_s"] > 0 and reply["output"].strip()
