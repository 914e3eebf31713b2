"""Speaker diarization on sherpa-onnx: pyannote segmentation finds who speaks in each 10-s window
(up to three at once), CAM++ embeds each window's voices, and the voices are clustered across
windows (complete linkage on cosine distance: ``threshold``, or a known number of speakers).

Where asked, each speaker's voice is then embedded once more from all of its speech (up to
``VOICE_SPEECH`` seconds), so that the front can name it against known speakers' voices
(``speakers.speaker_labels``).
sherpa-onnx runs on the onnxruntime it bundles, on the CPU (it has no build for a Jetson's GPU).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import sherpa_onnx

from edge_asr.errors import RequestError
from edge_asr.steps import Steps
from edge_asr.workers.protocol import SAME_SPEAKER_DISTANCE, DiarizationResult, SpeakerTurn, VoiceResult

RATE = 16000
MIN_DURATION_ON = 0.3  # seconds: a shorter turn is dropped (sherpa-onnx's examples' values)
MIN_DURATION_OFF = 0.5  # seconds: a shorter pause within one speaker's speech is bridged
VOICE_SPEECH = 60.0  # seconds of a speaker's speech its voice is embedded from, at most
MIN_REFERENCE_SPEECH = 2.0  # seconds of speech a known speaker's reference clip must hold


class SpeakerDiarizer:
    def __init__(self, folder: Path, threads: int):
        self.segmentation, self.threads = folder / "segmentation.onnx", threads
        self.embedding = sherpa_onnx.SpeakerEmbeddingExtractorConfig(
            model=str(folder / "embedding.onnx"), num_threads=threads
        )
        # the pipeline embeds with a session of its own, out of reach: voices need this second one
        self.extractor = sherpa_onnx.SpeakerEmbeddingExtractor(self.embedding)
        self.pipeline = sherpa_onnx.OfflineSpeakerDiarization(self._config(None, SAME_SPEAKER_DISTANCE))

    def _config(self, speakers: int | None, threshold: float) -> sherpa_onnx.OfflineSpeakerDiarizationConfig:
        segmentation = sherpa_onnx.OfflineSpeakerSegmentationPyannoteModelConfig(model=str(self.segmentation))
        config = sherpa_onnx.OfflineSpeakerDiarizationConfig(
            segmentation=sherpa_onnx.OfflineSpeakerSegmentationModelConfig(
                pyannote=segmentation, num_threads=self.threads
            ),
            embedding=self.embedding,
            clustering=sherpa_onnx.FastClusteringConfig(num_clusters=speakers or -1, threshold=threshold),
            min_duration_on=MIN_DURATION_ON,
            min_duration_off=MIN_DURATION_OFF,
        )
        if not config.validate():  # sherpa-onnx would end the process on a model it cannot read
            raise RuntimeError(f"sherpa-onnx refuses the diarization models in {self.segmentation.parent}")
        return config

    def diarize(
        self, audio: np.ndarray, speakers: int | None, threshold: float, voices: bool = False
    ) -> DiarizationResult:
        self.pipeline.set_config(self._config(speakers, threshold))  # the clustering only
        found = self.pipeline.process(np.ascontiguousarray(audio, dtype=np.float32)).sort_by_start_time()
        order: dict[int, int] = {}  # sherpa's cluster -> the order of its first turn
        turns: list[SpeakerTurn] = []
        for segment in found:
            speaker = order.setdefault(segment.speaker, len(order))
            turns.append({"start": round(segment.start, 3), "end": round(segment.end, 3), "speaker": speaker})
        speakers = range(len(order)) if voices else range(0)
        embedded = [self._voice(audio, [t for t in turns if t["speaker"] == n]) for n in speakers]
        return {"duration": len(audio) / RATE, "turns": turns, "speakers": len(order), "voices": embedded}

    def embed_voice(self, audio: np.ndarray) -> VoiceResult:
        """A known speaker's voice from a reference clip: the speech of its main speaker (the
        segmentation tells speech from silence and from anyone else heard)."""
        found = self.diarize(audio, None, SAME_SPEAKER_DISTANCE, voices=True)
        speech = [0.0] * found["speakers"]
        for turn in found["turns"]:
            speech[turn["speaker"]] += turn["end"] - turn["start"]
        heard = max(speech, default=0.0)
        if heard < MIN_REFERENCE_SPEECH:
            raise RequestError(
                f"the reference clip holds {heard:.1f} s of speech; a voice needs at least {MIN_REFERENCE_SPEECH:.0f} s"
            )
        main = int(np.argmax(speech))
        return {"voice": found["voices"][main], "speech": round(speech[main], 2)}

    def _voice(self, audio: np.ndarray, turns: list[SpeakerTurn]) -> list[float]:
        pieces, total = [], 0
        for turn in turns:
            piece = audio[int(turn["start"] * RATE) : int(turn["end"] * RATE)][: int(VOICE_SPEECH * RATE) - total]
            pieces.append(piece)
            total += len(piece)
        stream = self.extractor.create_stream()
        stream.accept_waveform(RATE, np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32))
        stream.input_finished()
        voice = np.asarray(self.extractor.compute(stream), dtype=np.float32)
        return (voice / max(float(np.linalg.norm(voice)), 1e-9)).round(6).tolist()

    def release(self) -> dict[str, Any]:
        step = Steps()
        step("destroy diarization pipeline (segmentation and embedding sessions)", partial(delattr, self, "pipeline"))
        step("destroy voice embedding session", partial(delattr, self, "extractor"))
        return {"steps": step.steps}
