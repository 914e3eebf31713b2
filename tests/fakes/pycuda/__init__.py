"""FAKE pycuda (no CUDA here): see ``driver``."""

VERSION_TEXT = "2025.1.2 (FAKE)"
