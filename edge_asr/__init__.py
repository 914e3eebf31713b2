"""edge-asr: speech recognition and a small LLM, time-sliced on a Jetson field unit."""

__version__ = "0.1.0"
