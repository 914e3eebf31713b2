"""What the unit offers over Wyoming, as one ``Info``: every speech model as an ASR program's
models, every voice as a TTS program's voices, every LLM as a conversation agent (a handle
program), so Home Assistant offers each in an Assist pipeline."""

from __future__ import annotations

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
)

from edge_asr import __version__
from edge_asr.manifest import ModelSpec
from edge_asr.tts import voice_of
from edge_asr.whisper.languages import model_languages

ATTRIBUTION = Attribution(name="edge-asr", url="https://pypi.org/project/edge-asr/")
WHISPER = Attribution(name="OpenAI Whisper", url="https://github.com/openai/whisper")
PIPER = Attribution(name="Piper", url="https://github.com/OHF-Voice/piper1-gpl")


def speech_languages(spec: ModelSpec) -> list[str]:
    """The languages a speech model transcribes: English alone for an English-only model."""
    known = model_languages(spec.directory)
    return sorted(known) if known else ["en"]


def unit_info(specs: list[ModelSpec]) -> Info:
    """The Info for ``specs`` (the served models); a model not yet prepared is listed as not
    installed (it cannot load until ``edge-asr models prepare`` has run)."""
    asr = [s for s in specs if s.task == "asr"]
    voices = [voice_of(s) for s in specs if s.task == "tts" and s.present]
    llm = [s for s in specs if s.task == "llm"]
    program = {"attribution": ATTRIBUTION, "installed": True, "version": __version__}
    return Info(
        asr=[
            AsrProgram(
                name="edge-asr",
                description="Whisper on the unit, loaded when asked",
                models=[
                    AsrModel(
                        name=s.id,
                        description=s.id,
                        attribution=WHISPER,
                        installed=s.present,
                        languages=speech_languages(s) if s.present else [],
                        version=None,
                    )
                    for s in asr
                ],
                supports_transcript_streaming=True,
                **program,
            )
        ],
        tts=[
            TtsProgram(
                name="edge-asr-tts",
                description="Piper voices on the unit, loaded when asked",
                voices=[
                    TtsVoice(
                        name=v.model,
                        description=v.id,
                        attribution=PIPER,
                        installed=True,
                        languages=[v.language],
                        version=None,
                    )
                    for v in voices
                ],
                supports_synthesize_streaming=True,
                **program,
            )
        ],
        handle=[
            HandleProgram(
                name="edge-asr-llm",
                description="A small LLM on the unit as a conversation agent",
                models=[
                    HandleModel(
                        name=s.id,
                        description=s.id,
                        attribution=ATTRIBUTION,
                        installed=s.present,
                        languages=["en"],
                        version=None,
                    )
                    for s in llm
                ],
                **program,
            )
        ],
    )
