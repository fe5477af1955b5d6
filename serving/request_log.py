"""Request/response logging as JSON lines, sampled, for monitoring and skew detection.

One line per sampled request: time, model, version, signature, method, HTTP status, latency
and the request and response bodies as JSON. Lines are appended whole (one write of one line
to a file opened for appending), so a reader never sees half a record from a running server,
and the workers of one server (serving/workers.py) share the file.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any, Optional


class RequestLogger:
    def __init__(self, path: str, sampling_rate: float, seed: Optional[int] = None):
        self.path = path
        self.sampling_rate = sampling_rate
        self._random = random.Random(seed)
        self._fd: Optional[int] = None
        if sampling_rate > 0:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def sampled(self) -> bool:
        return self._fd is not None and self._random.random() < self.sampling_rate

    def log(
        self,
        *,
        model: str,
        version: Optional[int],
        signature: Optional[str],
        method: str,
        status: int,
        latency_ms: float,
        request: Any,
        response: Any,
    ) -> None:
        record = {
            "time": time.time(),
            "model": model,
            "version": None if version is None else str(version),
            "signature_name": signature,
            "method": method,
            "status": status,
            "latency_ms": round(latency_ms, 3),
            "request": request,
            "response": response,
        }
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        # One write of the whole line to a file opened for appending: the kernel appends it
        # whole, whichever thread or worker process writes at the same time.
        os.write(self._fd, line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
