"""Programs edge-asr runs beside or against, each in a virtual environment of its own holding only
its pinned packages (a router the tests put in front of units, a peer a benchmark compares with):
made on first use, cached outside the repo, keyed by a hash of the requirements and the Python."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from edge_asr.config import Config

# A peer runs on its own packages only: not on this checkout (PYTHONPATH, when a session sets it).
PEER_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def peer_python(config: Config, name: str, requirements: list[str]) -> Path:
    """The Python of a virtual environment holding only ``requirements`` (made on first use)."""
    key = hashlib.sha256("\n".join([*requirements, sys.version]).encode()).hexdigest()[:12]
    venv = config.cache_dir / "bench" / f"venv-{name}-{key}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").is_file():
        print(f"[peers] creating {venv}: {' '.join(requirements)}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--progress-bar", "off", *requirements]
        done = subprocess.run(pip, env=PEER_ENV, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"pip could not install {requirements}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        (venv / ".complete").touch()
    return python
