"""Log-mel features: shape, padding and where the energy lands. (Numerical parity with the
transformers implementation is checked at every `models prepare`, where transformers is installed.)"""

import numpy as np
import pytest

from edge_asr.whisper.features import N_FRAMES, N_SAMPLES, SAMPLE_RATE, log_mel_spectrogram, mel_filters


def test_shape_and_dtype():
    mel = log_mel_spectrogram(np.zeros(SAMPLE_RATE, np.float32))
    assert mel.shape == (80, N_FRAMES) and mel.dtype == np.float32


def test_a_tone_lights_the_mel_band_of_its_frequency():
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    mel = log_mel_spectrogram(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    band = int(mel[:, 100].argmax())
    filters = mel_filters(80)
    hz = np.linspace(0, SAMPLE_RATE / 2, filters.shape[1])
    assert hz[filters[band].argmax()] == pytest.approx(1000, abs=80)
    # after the tone (5 s) the padding is silence: the floor, 8 decades below the peak
    assert mel[:, 1000].max() == pytest.approx(mel.max() - 2.0, abs=1e-5)


def test_more_than_one_window_is_refused():
    with pytest.raises(ValueError, match="30 s"):
        log_mel_spectrogram(np.zeros(N_SAMPLES + 1, np.float32))
