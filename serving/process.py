"""Starting the server as a separate process on free loopback ports (tests, benchmarks), and a
small JSON client over plain HTTP."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Iterator, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerUrl(str):
    """The REST base URL (`http://127.0.0.1:<port>`), with the gRPC target in `.grpc`
    (`127.0.0.1:<port>`) and the server's process id in `.pid`."""

    grpc: str
    pid: int


def call(
    url: str,
    body: Any = None,
    data: Optional[bytes] = None,
    timeout: float = 60,
    headers: Optional[dict[str, str]] = None,
) -> tuple[int, Any, dict]:
    """(status, JSON body, headers) of a GET (no body) or POST; HTTP errors are returned."""
    if body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST" if data is not None else "GET", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            payload = text.decode(errors="replace")
        return error.code, payload, dict(error.headers)


@contextlib.contextmanager
def running_server(
    env: dict[str, str],
    log_path: str,
    startup_timeout: float = 180,
    model_name: Optional[str] = None,
) -> Iterator[ServerUrl]:
    """`tfx-template serve` with this environment on free REST and gRPC ports; yields its base
    URL (gRPC target in `.grpc`) once a model version is loaded (the health endpoint answers
    200, the model's status too); stops the process afterwards. The model is served under
    `model_name`, by default the name the settings in `env` give it."""
    if model_name is None:
        from pipeline.settings import PipelineSettings
        from serving import paths
        from serving.settings import ServingSettings

        model_name = paths.model_name(ServingSettings.load(env), PipelineSettings.load(env))
    port = grpc_port = free_port()
    while grpc_port == port:
        grpc_port = free_port()
    url = ServerUrl(f"http://127.0.0.1:{port}")
    url.grpc = f"127.0.0.1:{grpc_port}"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                *("-m", "cli.main", "serve"),
                *("--port", str(port), "--grpc-port", str(grpc_port)),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url.pid = process.pid
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}; see {log_path}")
            try:
                # The health probe needs no token, even when the server requires one.
                status, body, _ = call(f"{url}/healthz", timeout=5)
                if status == 200 and body.get("model") == model_name:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the server did not come up in {startup_timeout} s; see {log_path}"
                )
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
