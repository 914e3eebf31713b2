"""Our TensorRT code against the REAL TensorRT Python bindings of both versions JetPack ships:
``tests/tensorrt_api`` runs inside an environment with each (``tests/real_tensorrt.py``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edge_asr.config import Config
from tests.real_tensorrt import BINDINGS, bindings_env

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("version", sorted(BINDINGS))
def test_the_code_against_the_real_tensorrt_bindings(version: str, config: Config):
    python, env = bindings_env(version, config.cache_dir)
    done = subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            "tests/tensorrt_api",
            "-q",
            "-p",
            "no:cacheprovider",
            "--confcutdir=tests/tensorrt_api",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and not any(word in summary for word in ("skipped", "xfail", "deselected")), summary
    version_line = subprocess.run(
        [str(python), "-c", "import tensorrt; print(tensorrt.__version__)"], env=env, capture_output=True, text=True
    )
    assert version_line.stdout.strip() == version
