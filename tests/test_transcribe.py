"""Whisper with VAD on ONNX Runtime against published texts: rates, channels, codecs, timestamps,
silence, prompts, and a long recording in bounded pieces."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import soxr

from edge_asr.audio import SAMPLE_RATE, decode_audio
from edge_asr.evaluation import normalize, word_error_rate
from edge_asr.manifest import get_model
from edge_asr.samples import REFERENCES, espeak_recording, sentence_recording
from edge_asr.vad import Span, SpeechMap, spans_from_probabilities
from edge_asr.whisper import CPU_DECODER
from edge_asr.whisper.decoding import compression_ratio
from edge_asr.whisper.graphs import OnnxWhisperGraphs
from edge_asr.whisper.model import WhisperModel
from edge_asr.whisper.transcribe import split_window, transcribe


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_public_domain_readings_under_5_percent_wer(whisper, vad, speech, name):
    result = transcribe(whisper, vad, speech[name])
    assert word_error_rate(REFERENCES[name], result.text) < 0.05, result.text


def test_segments_are_ordered_within_the_audio_and_carry_scores(whisper, vad, speech):
    audio = speech["two_cities"]  # 44 s: two chunks
    result = transcribe(whisper, vad, audio)
    assert len(result.segments) >= 6
    assert [s.id for s in result.segments] == list(range(len(result.segments)))
    times = [t for s in result.segments for t in (s.start, s.end)]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= result.duration
    assert all(s.end > s.start and s.text for s in result.segments)
    assert all(-1 < s.avg_logprob <= 0 and 0 <= s.no_speech_prob < 0.6 and s.temperature == 0 for s in result.segments)
    assert result.segments[0].text == "It was the best of times, it was the worst of times."
    assert result.text.rstrip(".").endswith("superlative degree of comparison only")


def test_silence_and_noise_give_no_words(whisper, vad):
    rng = np.random.default_rng(1)
    for audio in (
        np.zeros(20 * SAMPLE_RATE, np.float32),
        (0.01 * rng.standard_normal(10 * SAMPLE_RATE)).astype(np.float32),
    ):
        result = transcribe(whisper, vad, audio)
        assert result.text == "" and result.segments == []


@pytest.mark.parametrize("beam_size", [1, 5])
def test_the_cpu_decoder_decodes_as_the_fp32_decoder(whisper, whisper_spec, speech, beam_size):
    """decoder-cpu.onnx (its text projection int8, the likeliest tokens recomputed in fp32) picks
    every token the fp32 graph picks, with the same scores, on every window of the readings."""
    assert whisper.graphs.decoder_file == CPU_DECODER
    fp32 = WhisperModel(whisper_spec.directory, OnnxWhisperGraphs(whisper_spec.directory, decoder="decoder.onnx"))
    prompt = whisper.tokenizer.prompt("en")
    size = 30 * SAMPLE_RATE
    windows = [audio[i : i + size] for audio in speech.values() for i in range(0, len(audio), size)]
    assert len(windows) >= 4
    try:
        for window in windows:
            ours = whisper.decode(whisper.encode(window), prompt, beam_size=beam_size)
            reference = fp32.decode(fp32.encode(window), prompt, beam_size=beam_size)
            assert ours.tokens == reference.tokens
            assert ours.avg_logprob == pytest.approx(reference.avg_logprob, abs=1e-3)
            # <|nospeech|>'s logit is fp32; the softmax's normaliser holds int8-rounded ones
            assert ours.no_speech_prob == pytest.approx(reference.no_speech_prob, rel=1e-3)
    finally:
        fp32.release()


def test_a_cpu_decoder_onnx_runtime_cannot_run_gives_way_to_the_fp32_one(whisper_spec, tmp_path, caplog):
    """As with an ONNX Runtime too old for 8-bit MatMulNBits: the model still loads, on decoder.onnx."""
    for name in ("encoder.onnx", "decoder.onnx", "tokenizer.json", "whisper.json"):
        (tmp_path / name).symlink_to(whisper_spec.directory / name)
    (tmp_path / CPU_DECODER).write_bytes(b"not a graph ONNX Runtime can run")
    graphs = OnnxWhisperGraphs(tmp_path)
    try:
        assert graphs.decoder_file == "decoder.onnx"
        assert f"{CPU_DECODER} not usable" in caplog.text
    finally:
        graphs.release()


def test_timestamps_follow_the_speech(whisper, vad, speech):
    silence = np.zeros(7 * SAMPLE_RATE, np.float32)
    audio = np.concatenate([silence, speech["beckett"], silence])
    segments = transcribe(whisper, vad, audio).segments
    assert abs(segments[0].start - 7.0) < 1.0 and abs(segments[-1].end - (7.0 + 9.96)) < 1.5


def reencode(audio: np.ndarray, rate: int, channels: int, fmt: str, subtype: str | None = None) -> bytes:
    resampled = soxr.resample(audio, SAMPLE_RATE, rate)
    samples = np.stack([resampled, 0.5 * resampled], axis=1) if channels == 2 else resampled
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("rate", "channels", "fmt", "subtype"),
    [
        (8000, 1, "WAV", "PCM_16"),
        (44100, 2, "WAV", "PCM_24"),
        (48000, 2, "FLAC", None),
        (22050, 1, "OGG", "VORBIS"),
        (48000, 1, "WAV", "FLOAT"),
        (44100, 2, "MP3", "MPEG_LAYER_III"),
    ],
)
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_other_rates_channels_and_codecs_transcribe_as_well(whisper, vad, speech, name, rate, channels, fmt, subtype):
    audio = decode_audio(reencode(speech[name], rate, channels, fmt, subtype))
    assert word_error_rate(REFERENCES[name], transcribe(whisper, vad, audio).text) < 0.05


def test_a_prompt_steers_the_style(whisper, vad, speech):
    plain = transcribe(whisper, vad, speech["beckett"]).text
    prompted = transcribe(
        whisper, vad, speech["beckett"], prompt="um so yeah we just went there and uh it was fine i guess"
    ).text
    assert plain.startswith("Ever tried. Ever failed.")
    assert prompted == prompted.lower() and "." not in prompted and "," not in prompted
    assert word_error_rate(REFERENCES["beckett"], prompted) < 0.05


def test_english_only_model_refuses_other_languages(whisper, vad, speech):
    with pytest.raises(ValueError, match="English-only"):
        transcribe(whisper, vad, speech["beckett"], language="de")


def test_compression_ratio_spots_loops():
    assert compression_ratio("It was the best of times, it was the worst of times.") < 2.4
    assert compression_ratio("Thank you. " * 30) > 2.4


def test_vad_cuts_long_speech_at_its_longest_pause():
    probs = np.ones(60 * SAMPLE_RATE // 512, np.float32)  # a minute of speech
    probs[700:712] = 0.0  # a 384-ms pause at 22.4 s, the longest in the first 29 s
    probs[800:804] = 0.0  # a 128-ms pause at 25.6 s
    spans = spans_from_probabilities(probs, 60 * SAMPLE_RATE)
    assert 22.3 < spans[0].end / SAMPLE_RATE < 22.8
    assert all(s.end - s.start <= 29 * SAMPLE_RATE for s in spans)
    assert sum(s.end - s.start for s in spans) >= 59 * SAMPLE_RATE


def test_speech_still_open_at_the_end_ends_where_its_pause_began():
    """So the speech of a growing recording stops changing once its last word is 200 ms past:
    live transcription's last partial decode then sees the window its final decode will."""
    probs = np.zeros(100, np.float32)
    probs[10:60] = 0.9  # speech from frame 10 to 60, then 40 frames (1.3 s) of silence
    for frames in (70, 80, 100):  # 0.3 s of it (under min_silence_ms), then more
        (span,) = spans_from_probabilities(probs[:frames], frames * 512)
        assert (span.start, span.end) == (10 * 512 - 3200, 60 * 512 + 3200)
    (span,) = spans_from_probabilities(probs[:55], 55 * 512)
    assert span.end == 55 * 512  # speech to the very end: the end


def test_the_speech_map_collects_speech_cuts_silences_and_maps_back():
    second = SAMPLE_RATE
    spans = [Span(0, 10 * second), Span(12 * second, 25 * second), Span(int(25.5 * second), 35 * second)]
    speech = SpeechMap(spans, max_gap=1.0)
    # the 2-s silence keeps 1 s (half on each side), the 0.5-s one all of it
    assert speech.regions == (
        Span(0, int(10.5 * second)),
        Span(int(11.5 * second), int(25.25 * second)),
        Span(int(25.25 * second), 35 * second),
    )
    assert speech.samples == int(34 * second)
    audio = np.arange(40 * second, dtype=np.float32)
    window = speech.window(audio, 10 * second, 2 * second)  # across the cut: 10.0-10.5 s, then 11.5-13.0 s
    assert len(window) == 2 * second and window[0] == 10 * second and window[-1] == 13 * second - 1
    assert len(speech.window(audio, 30 * second, 30 * second)) == 4 * second  # the end: what is left
    assert speech.place(1.0, 5.0) == (1.0, 5.0)
    assert speech.place(5.0, 11.0) == (5.0, 10.0)  # the end stops where the speech before the pause stops
    assert speech.place(10.2, 14.0) == (12.0, 15.0)  # a start in the pause moves to the speech after it
    assert speech.place(20.0, 26.0) == (21.0, 27.0)  # a 0.5-s pause may be crossed
    assert speech.place(9.9, 14.0) == (12.0, 15.0)  # a start in the speech before's last moments moves too
    # the pauses (collected: 10.5 s and 24.25 s) between two times
    assert speech.pause_between(5 * second, 12 * second) == int(10.5 * second)
    assert speech.pause_between(5 * second, 30 * second) == int(24.25 * second)  # the last of them
    assert speech.pause_between(int(10.5 * second), 20 * second) is None  # after start, not at it


def test_split_window_resumes_after_the_last_complete_segment():
    tb = 1000  # <|0.00|>; each timestamp step is 20 ms
    ts = {seconds: tb + round(seconds / 0.02) for seconds in (0, 2, 4, 5, 6, 29.6)}
    # two complete segments, then the end of text at 6 s of a 30-s window: the next window starts
    # there, so the speech after it is decoded (the reference would move on to 30 s and lose it)
    found, resume = split_window([ts[0], 1, 2, ts[2], ts[2], 3, ts[6]], tb, 30.0)
    assert found == [(0.0, 2.0, [1, 2]), (2.0, 6.0, [3])] and resume == 6.0
    # a segment cut off at the window's end (no closing timestamp): decoded again from its start
    found, resume = split_window([ts[0], 1, ts[4], ts[5], 2, 3], tb, 30.0)
    assert found == [(0.0, 4.0, [1])] and resume == 5.0
    # less than half a second left after the last segment: on to the next window
    assert split_window([ts[0], 1, ts[29.6]], tb, 30.0)[1] == 30.0
    # no timestamps at all: the window is one segment
    assert split_window([1, 2], tb, 12.0) == ([(0.0, 12.0, [1, 2])], 12.0)


def test_the_batched_vad_finds_the_same_speech(vad, speech):
    """Streams of 30 s decoded side by side agree with one stream frame by frame (the LSTM's
    state after a half-second warm-up differs a little: a span edge may move by one frame)."""
    audio = np.concatenate([speech["two_cities"], np.zeros(5 * SAMPLE_RATE, np.float32), speech["beckett"]] * 2)
    batched = vad.probabilities(audio)
    session, state = vad.session, np.zeros((2, 1, 128), np.float32)
    padded = np.concatenate([np.zeros(64, np.float32), audio, np.zeros(512, np.float32)])
    single = []
    for i in range(len(batched)):
        out, state = session.run(
            None, {"input": padded[i * 512 : i * 512 + 576][None], "state": state, "sr": np.array(16000)}
        )
        single.append(out[0, 0])
    assert len(batched) > 3 * 938  # four streams
    assert np.mean(np.abs(np.array(single) - batched) < 0.05) > 0.97
    spans = [(s.start, s.end) for s in spans_from_probabilities(batched, len(audio))]
    reference = [(s.start, s.end) for s in spans_from_probabilities(np.array(single), len(audio))]
    assert len(spans) == len(reference)
    assert all(abs(a - c) <= 512 and abs(b - d) <= 512 for (a, b), (c, d) in zip(spans, reference, strict=True))


def missing_sentences(transcript: str, sentences: tuple[str, ...]) -> list[str]:
    """The sentences whose words are not found in ``transcript``, in order (of a long one, its
    first and last three words)."""
    heard, position, lost = normalize(transcript), 0, []
    for sentence in sentences:
        words = normalize(sentence)
        for part in (words[:3], words[-3:]) if len(words) > 8 else (words,):
            found = next((i for i in range(position, len(heard)) if heard[i : i + len(part)] == part), None)
            if found is None:
                lost.append(sentence)
                break
            position = found + len(part)
    return lost


@pytest.mark.parametrize(("beam_size", "conditioned"), [(1, False), (5, False), (5, True)])
def test_no_sentence_is_lost_between_pauses_of_half_a_second_to_nine(whisper, vad, speech, beam_size, conditioned):
    recording = sentence_recording(speech)
    assert len(recording.sentences) == 13 and len(recording.audio) / SAMPLE_RATE > 100
    result = transcribe(whisper, vad, recording.audio, beam_size=beam_size, condition_on_previous_text=conditioned)
    assert missing_sentences(result.text, recording.sentences) == [], result.text
    assert word_error_rate(recording.reference, result.text) < 0.03
    for segment in result.segments:  # on the speech of one sentence, give or take half a second
        assert any(start - 0.5 <= segment.start and segment.end <= end + 0.5 for start, end in recording.readings)


def test_each_segment_is_placed_on_the_sentence_it_says(config, vad):
    """Whisper base, where a window that began in the last moments of a sentence put the next
    sentence's segment on it (said at 46.1 s, placed at 41.7-42.0 s): every segment overlaps most
    the reading of the sentence it shares the most words with (espeak-ng's 24 sentences, pauses
    of 0.5-9 s; base's timestamps are coarse there, whole seconds, so placement is judged by
    overlap)."""
    base = WhisperModel.open(get_model(config, "whisper-base"), config)
    try:
        recording = espeak_recording()
        result = transcribe(base, vad, recording.audio, language="en", beam_size=1)
    finally:
        base.release()
    assert len(result.segments) == len(recording.sentences)
    for segment in result.segments:
        said = set(normalize(segment.text))
        overlaps = [min(segment.end, b) - max(segment.start, a) for a, b in recording.readings]
        placed = recording.sentences[int(np.argmax(overlaps))]
        closest = max(recording.sentences, key=lambda sentence: len(said & set(normalize(sentence))))
        assert max(overlaps) > 0 and placed == closest, (segment.start, segment.end, segment.text, placed)


def test_a_forced_prefix_is_kept_and_only_what_follows_it_is_decoded(whisper, vad, speech):
    """Live transcription forces the words it has committed; the rest is decoded after them."""
    audio = speech["beckett"]
    whole = transcribe(whisper, vad, audio).text
    assert transcribe(whisper, vad, audio, prefix="Ever tried. Ever failed.").text == whole
    forced = transcribe(whisper, vad, audio, prefix="Never tried.").text  # kept even where it is wrong
    assert forced.startswith("Never tried.") and word_error_rate(whole, forced) < 0.3


def test_the_same_live_window_twice_in_a_row_is_encoded_once(whisper, speech):
    first = whisper.encode(speech["beckett"], reuse=True)
    assert whisper.encode(speech["beckett"].copy(), reuse=True) is first
    other = whisper.encode(speech["beckett"][16000:], reuse=True)
    assert other is not first and whisper.encode(speech["beckett"], reuse=True) is not first
    again = whisper.encode(speech["beckett"])  # not live: encoded again, and nothing kept
    assert whisper.encode(speech["beckett"]) is not again
