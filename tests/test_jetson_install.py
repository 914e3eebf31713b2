"""The Jetson install steps of docs/jetson.md, run line by line as written in a fresh virtual
environment, then ``pip check`` (every dependency edge-asr and Piper declare is installed) and
``edge-asr check --quick``. What only a Jetson has is stood in for, each line named here; a new
line in the steps runs as written. So the steps cannot forget a dependency or a package edge-asr
imports; what only a unit shows (the Jetson wheels themselves, pycuda's build) stays with the
checklist on a unit. ``pip check`` is the test's: on a unit ``onnxruntime-gpu`` does not count as
the ``onnxruntime`` edge-asr declares."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from edge_asr.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- the Jetson install steps -->"
STAND_INS = {  # a pattern of a step -> what runs here instead (None: nothing)
    # JetPack's system site packages hold TensorRT's bindings, absent here; this machine's would
    # hide a dependency the steps forgot.
    r"^python3 -m venv --system-site-packages ": "python3 -m venv ",
    # The Jetson AI Lab wheel of ONNX Runtime for the GPU: its CPU twin from PyPI (and PyPI's
    # onnxruntime-genai for the Jetson index's).
    r"^pip install --index-url https://pypi\.jetson-ai-lab\.io/\S+ onnxruntime-gpu ": "pip install onnxruntime ",
    # llama.cpp with CUDA builds against a CUDA toolkit, absent here: the CPU build (pip's cache
    # holds it from the service's environment).
    r'^PATH=/usr/local/cuda/bin:\$PATH CMAKE_ARGS="-DGGML_CUDA=on" pip install --no-cache-dir ': "pip install ",
    # pycuda builds against a CUDA toolkit, absent here (`edge-asr check` says so).
    r"^PATH=/usr/local/cuda/bin:\$PATH CUDA_ROOT=/usr/local/cuda pip install pycuda$": None,
}


def install_steps() -> list[str]:
    """The commands of the install block, continuation lines joined."""
    text = (REPO_ROOT / "docs" / "jetson.md").read_text()
    block = re.search(rf"{re.escape(MARKER)}\n```bash\n(.*?)```", text, re.S)
    assert block, f"docs/jetson.md has no {MARKER} block"
    return [" ".join(line.split()) for line in block[1].replace("\\\n", " ").splitlines() if line.strip()]


def as_run_here(step: str) -> str | None:
    for pattern, stand_in in STAND_INS.items():
        if re.search(pattern, step):
            return None if stand_in is None else re.sub(pattern, stand_in, step)
    return step


def test_the_jetson_install_steps_make_an_environment_that_passes_the_check(tmp_path: Path, config: Config):
    steps = install_steps()
    assert len(steps) == 6 and all(any(re.search(p, s) for s in steps) for p in STAND_INS)
    script = "\n".join(["set -euo pipefail", *(s for s in map(as_run_here, steps) if s is not None)])
    script += "\npython -m pip check\nedge-asr check --quick --json\n"
    venv = tmp_path / "venv"
    env = {**os.environ, "VENV": str(venv), "EDGE_ASR_MODELS_DIR": str(config.models_path)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "No broken requirements found." in done.stdout
    result = json.loads(done.stdout[done.stdout.index("{") :])
    items = {item["name"]: item for item in result["items"]}
    assert result["ok"] and f"({venv}/bin/python" in items["python"]["detail"]
    assert [n for n, i in items.items() if i["status"] == "skip"] == ["jetpack", "tensorrt", "pycuda"]
    assert all(items[f"model {m}"]["status"] == "pass" for m in ("whisper-tiny-en", "piper-joe-en"))
