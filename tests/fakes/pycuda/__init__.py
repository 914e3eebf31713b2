"""FAKE pycuda (no CUDA here): see ``driver``."""
