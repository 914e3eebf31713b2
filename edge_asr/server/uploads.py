"""The audio a request uploads, decoded, or a clear 400."""

from __future__ import annotations

import numpy as np
from flask import request

from edge_asr.audio import AudioError, decode_audio
from edge_asr.errors import InvalidRequest


def uploaded_audio() -> np.ndarray:
    """The multipart field ``file`` decoded to 16 kHz mono float32."""
    upload = request.files.get("file")
    if upload is None:
        raise InvalidRequest("the multipart field 'file' (the audio) is missing")
    try:
        return decode_audio(upload.read())
    except AudioError as e:
        raise InvalidRequest(f"{upload.filename or 'file'}: {e}") from None
