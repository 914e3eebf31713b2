"""Read a CTranslate2 ``model.bin`` (binary spec format 5 and 6) into numpy arrays."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_ct2_model(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Return the spec name (e.g. ``WhisperSpec``) and the variables, aliases resolved."""
    buf = Path(path).read_bytes()
    offset = 0

    def unpack(fmt: str):
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, buf, offset)
        offset += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal offset
        n = unpack("H")
        value = buf[offset : offset + n - 1].decode("utf-8")
        offset += n
        return value

    version = unpack("I")
    if version not in (5, 6):
        raise ValueError(f"{path}: unsupported CTranslate2 binary version {version}")
    spec = string()
    unpack("I")  # revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("I")):
        name = string()
        shape = tuple(unpack("I") for _ in range(unpack("B")))
        dtype = _DTYPES[unpack("B")]
        nbytes = unpack("I")
        raw = buf[offset : offset + nbytes]
        offset += nbytes
        if dtype == "bfloat16":
            array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype)
        variables[name] = array.reshape(shape)
    if offset < len(buf):
        for _ in range(unpack("I")):
            alias, target = string(), string()
            variables[alias] = variables[target]
    return spec, variables
