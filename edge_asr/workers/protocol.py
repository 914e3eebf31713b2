"""The worker protocol: every message between the front process and a model's worker, in the one
module both sides import.

A *request* is a call of a runner method, one dataclass each (``Transcribe``, ``Chat``,
``Synthesize``): its fields are what the method takes, ``method`` names the runner method that
serves it, and its type parameters say what the method yields as it works (partial results, which
stream to the client) and what it returns. The messages over the worker's duplex pipe:

    front -> request (numpy arrays in it follow as raw bytes)
                              worker -> Partial* then Done | Failed
    front -> Cancel()         (while partials flow) the method's generator is closed; the answer
                              is Done(None). A cancel that arrives after the answer is ignored.
    front -> Release()        worker -> Released(report), then it exits
A model that can serve nothing more (``errors.Unrecoverable``) ends its worker mid-request with
status ``EXIT_UNRECOVERABLE``, no answer sent.
On start the worker sends Ready(report) or LoadFailed(message). If the front process goes away,
the pipe closes and the worker releases its model and exits. A spare worker (``workers.spare``)
starts without a model: it sends Idle(report) once its imports are done, and becomes a model's
worker on Load(spec), answering Ready or LoadFailed as above.

A new runner method (live audio, say) is one request class here, its method on a runner, and the
lease's method that sends it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, ClassVar, Generic, Literal, TypedDict, TypeVar

import numpy as np

from edge_asr.manifest import ModelSpec

# The status a worker exits with when its model raised ``errors.Unrecoverable``: its request
# fails as a crash, and the next one starts a fresh worker.
EXIT_UNRECOVERABLE = 3
P = TypeVar("P")  # what a method yields as it works
R = TypeVar("R")  # what it returns


# -- the results ---------------------------------------------------------------------------


class TranscriptPart(TypedDict):
    """The segments of one decoded window."""

    segments: list[dict[str, Any]]  # ``whisper.transcribe.Segment.as_dict()``


class TranscriptResult(TypedDict):
    text: str
    duration: float  # seconds of audio
    segments: list[dict[str, Any]]
    language: str
    language_probability: float | None  # None when the language was given, not detected
    speech_start: float | None  # where the first speech the VAD heard starts, seconds; None: no speech
    speech_end: float | None  # where the last speech the VAD heard ends, seconds; None: no speech
    beam_size: int  # the beam the windows were decoded with (at most what TensorRT engines hold)


class ChatDelta(TypedDict):
    delta: str


class ChatResult(TypedDict):
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


class AudioPart(TypedDict):
    """One sentence's samples, 16-bit little-endian mono."""

    audio: bytes


class SynthesisResult(TypedDict):
    sample_rate: int
    samples: int
    sentences: int


class SpeakerTurn(TypedDict):
    start: float  # seconds
    end: float
    speaker: int  # the index of its voice in ``DiarizationResult.voices``


class DiarizationResult(TypedDict):
    duration: float  # seconds of audio
    turns: list[SpeakerTurn]  # in order of their start
    speakers: int  # how many were found: ``SpeakerTurn.speaker`` counts from 0 to this
    voices: list[list[float]]  # each speaker's voice embedding (unit length), when asked; else empty


class VoiceResult(TypedDict):
    voice: list[float]  # the clip's voice embedding, unit length
    speech: float  # seconds of speech it was made from


# -- the requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request(Generic[P, R]):
    method: ClassVar[str]


@dataclass(frozen=True)
class TranscriptionOptions:
    """How to transcribe, checked by the front before any model loads."""

    language: str | None = None  # None: detected on the first window of speech
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None
    temperature: float = 0.0
    beam_size: int = 5
    condition_on_previous_text: bool = False
    prefix: str | None = None  # text known to start the transcript (live decoding's committed words)
    live: bool = False  # a decode of audio still arriving: the last window's encoding is kept for the next
    vad_threshold: float = 0.5  # speech probability above which the VAD hears speech (Realtime's server_vad)


@dataclass(frozen=True, eq=False)  # compared by identity: a request may hold arrays
class Transcribe(Request[TranscriptPart, TranscriptResult]):
    method: ClassVar[str] = "transcribe"
    audio: np.ndarray  # 16 kHz mono float32
    options: TranscriptionOptions = field(default_factory=TranscriptionOptions)


@dataclass(frozen=True)
class ChatOptions:
    max_tokens: int | None = None  # None: as many as the context holds
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None


@dataclass(frozen=True, eq=False)  # compared by identity: a request may hold arrays
class Chat(Request[ChatDelta, ChatResult]):
    method: ClassVar[str] = "chat"
    messages: list[dict[str, str]]  # {role, content}
    options: ChatOptions = field(default_factory=ChatOptions)


@dataclass(frozen=True, eq=False)  # compared by identity: a request may hold arrays
class Synthesize(Request[AudioPart, SynthesisResult]):
    method: ClassVar[str] = "synthesize"
    text: str
    speed: float = 1.0


# The clustering's default: two voices further apart than this cosine distance are two people.
SAME_SPEAKER_DISTANCE = 0.5


@dataclass(frozen=True, eq=False)  # compared by identity: a request may hold arrays
class Diarize(Request[None, DiarizationResult]):
    """Who spoke when. ``speakers``: how many there are, when known; else the clustering's
    ``threshold`` (a cosine distance between voices) decides. ``voices``: embed each speaker's
    voice too (to name them against known voices: a tenth more time, so only when there are some)."""

    method: ClassVar[str] = "diarize"
    audio: np.ndarray  # 16 kHz mono float32
    speakers: int | None = None
    threshold: float = SAME_SPEAKER_DISTANCE
    voices: bool = False


@dataclass(frozen=True, eq=False)  # compared by identity: a request may hold arrays
class EmbedVoice(Request[None, VoiceResult]):
    """The voice in a clip of one speaker (a known speaker's reference)."""

    method: ClassVar[str] = "embed_voice"
    audio: np.ndarray  # 16 kHz mono float32


# -- the envelope --------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayLayout:
    """Stands in a request for a numpy array that follows as raw bytes."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Release:
    pass


@dataclass(frozen=True)
class Load:
    spec: ModelSpec  # the model a spare worker is to load
    nice: int = 0  # its load's CPU priority (a prefetch loads in the time the CPU has left over)


@dataclass(frozen=True)
class Idle:
    report: dict[str, Any]  # a spare worker's pid and resident size, its imports done


@dataclass(frozen=True)
class Ready:
    report: dict[str, Any]  # pid, rss_start, rss_loaded and the runner's ``describe()``


@dataclass(frozen=True)
class LoadFailed:
    message: str


@dataclass(frozen=True)
class Partial:
    item: Any


@dataclass(frozen=True)
class Done:
    result: Any


@dataclass(frozen=True)
class Failed:
    kind: Literal["invalid", "internal"]  # the client's request, or the model's own failure
    message: str


@dataclass(frozen=True)
class Released:
    report: dict[str, Any]  # the release's steps and the worker's memory before and after


def send_request(conn: Connection, request: Request) -> None:
    """Send ``request``; its numpy arrays (audio) follow as raw bytes straight from their memory,
    so a long recording is not copied again into a pickle on either side."""
    arrays = {f.name: v for f in dataclasses.fields(request) if isinstance(v := getattr(request, f.name), np.ndarray)}
    layouts = {name: ArrayLayout(a.shape, a.dtype.str) for name, a in arrays.items()}
    conn.send(dataclasses.replace(request, **layouts))
    for array in arrays.values():
        conn.send_bytes(memoryview(np.ascontiguousarray(array)).cast("B"))


def receive_arrays(conn: Connection, request: Request) -> Request:
    """(The worker.) ``request`` with its arrays read from the bytes that followed it."""
    layouts = {f.name: v for f in dataclasses.fields(request) if isinstance(v := getattr(request, f.name), ArrayLayout)}
    arrays = {
        name: np.frombuffer(conn.recv_bytes(), layout.dtype).reshape(layout.shape) for name, layout in layouts.items()
    }
    return dataclasses.replace(request, **arrays)
