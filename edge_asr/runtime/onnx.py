"""ONNX Runtime sessions with a provider chain chosen from what the installed build offers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)
CPU = "CPUExecutionProvider"


def provider_chain(preferred: Sequence[str]) -> list[str]:
    """The preferred providers this onnxruntime build has, in order, always ending with CPU."""
    available = set(ort.get_available_providers())
    chain = [p for p in preferred if p in available and p != CPU]
    return [*chain, CPU]


def open_session(path: Path, preferred: Sequence[str] = (CPU,), threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise
    session = ort.InferenceSession(str(path), options, providers=provider_chain(preferred))
    log.debug("opened %s with %s", path.name, session.get_providers())
    return session
