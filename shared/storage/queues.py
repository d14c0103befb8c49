"""Messages for queue-triggered functions, encoded as the Functions host reads them by default
(host.json `messageEncoding`: base64)."""
from __future__ import annotations

import base64
import json
from typing import Any

from ._clients import queue, translated


def send(name: str, message: dict[str, Any], *, delay_seconds: int = 0) -> None:
    """A message is an at-least-once hand-over (a send whose answer was lost is sent again): its
    handler must be safe to run twice."""
    text = base64.b64encode(json.dumps(message, separators=(",", ":")).encode()).decode()
    with translated("queue message"):
        queue(name).send_message(text, visibility_timeout=delay_seconds or None)
