"""Server-sent events, as OpenAI streams them: ``data: <json>`` lines, a blank line between."""

from __future__ import annotations

import json
from typing import Any


def event(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
