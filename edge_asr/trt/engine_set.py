"""Engine sets: what ``build_engines.py`` leaves in ``<model dir>/engines/<fingerprint>/``, and
the choice, at load time, of the set that fits this device.

A TensorRT engine runs only with the TensorRT version and on the GPU it was built for, and means
something only for the ONNX graphs it was built from. ``engine.json`` records all three, with the
precision and the optimisation profiles; the fingerprint (the folder's name) is a hash of them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_asr.trt import TensorRTUnavailable, cuda_driver, tensorrt

ENGINE_JSON = "engine.json"
ENGINES_DIR = "engines"


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine is bound to: the TensorRT version and the GPU."""

    tensorrt: str
    gpu: str
    compute_capability: str

    @classmethod
    def detect(cls, index: int = 0) -> DeviceInfo:
        trt, cuda = tensorrt(), cuda_driver()
        device = cuda.Device(index)
        return cls(trt.__version__, device.name(), "{}.{}".format(*device.compute_capability()))

    def describe(self) -> str:
        return f"{self.gpu} (compute capability {self.compute_capability}) with TensorRT {self.tensorrt}"


def file_digest(path: Path) -> dict[str, Any]:
    """The file's sha256, with the size and modification time that let a later check skip hashing."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    stat = path.stat()
    return {"sha256": h.hexdigest(), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def unchanged(path: Path, digest: dict[str, Any]) -> bool:
    """Whether ``path`` still has the content ``digest`` recorded (hashed again only if its size or
    modification time moved)."""
    if not path.is_file():
        return False
    stat = path.stat()
    if (stat.st_size, stat.st_mtime_ns) == (digest["size"], digest["mtime_ns"]):
        return True
    return file_digest(path)["sha256"] == digest["sha256"]


def fingerprint(device: DeviceInfo, precision: str, onnx: dict[str, dict], profiles: dict[str, Any]) -> str:
    identity = {
        "device": [device.tensorrt, device.gpu, device.compute_capability],
        "precision": precision,
        "onnx": {name: digest["sha256"] for name, digest in sorted(onnx.items())},
        "profiles": profiles,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EngineSet:
    """One built set: its folder and what ``engine.json`` says of it."""

    directory: Path
    record: dict[str, Any]

    @classmethod
    def read(cls, directory: Path) -> EngineSet:
        return cls(directory, json.loads((directory / ENGINE_JSON).read_text()))

    @property
    def device(self) -> DeviceInfo:
        return DeviceInfo(**self.record["device"])

    def describe(self) -> str:
        return f"engines {self.directory.name} ({self.record['precision']}), built for {self.device.describe()}"

    def mismatches(self, device: DeviceInfo, model_dir: Path) -> list[str]:
        """Why this set cannot run here; empty if it can."""
        why = []
        if self.device != device:
            why.append(f"built for {self.device.describe()}; this unit has {device.describe()}")
        changed = [name for name, digest in self.record["onnx"].items() if not unchanged(model_dir / name, digest)]
        if changed:
            why.append(f"{', '.join(changed)} changed since the build")
        missing = [name for name in self.record["engines"] if not (self.directory / name).is_file()]
        if missing:
            why.append(f"{', '.join(missing)} missing")
        return why


def engine_sets(model_dir: Path) -> list[EngineSet]:
    """The complete sets built for a model, newest first."""
    root = model_dir / ENGINES_DIR
    found = [EngineSet.read(p.parent) for p in root.glob(f"[!.]*/{ENGINE_JSON}")]
    return sorted(found, key=lambda s: s.record["built_at"], reverse=True)


def select_engine_set(model_dir: Path, device: DeviceInfo) -> EngineSet:
    """The newest set that runs on ``device`` for the model's current ONNX files, or
    ``TensorRTUnavailable`` saying why there is none."""
    sets = engine_sets(model_dir)
    if not sets:
        raise TensorRTUnavailable(f"no TensorRT engines built for {model_dir.name}: run `python build_engines.py`")
    reasons = []
    for candidate in sets:
        why = candidate.mismatches(device, model_dir)
        if not why:
            return candidate
        reasons.append(f"{candidate.directory.name}: {'; '.join(why)}")
    raise TensorRTUnavailable(
        f"no engine set of {model_dir.name} fits this unit ({'; '.join(reasons)}): run `python build_engines.py`"
    )
