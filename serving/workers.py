"""Several server processes on the same REST and gRPC ports (PIPELINE_SERVING_WORKERS=N).

One Python process serves on one event loop, so it uses about one core whatever the machine
has (measured on 2 cores: REST at 32 clients kept one core busy while the cores could have
served twice its requests). With N workers, `serve` starts N copies of itself that all listen
on the configured ports (SO_REUSEPORT: the kernel spreads new connections among them) and
watches them:

- before starting them it checks that nothing listens on the ports yet: workers sharing a port
  would otherwise silently share it with whatever else had it (an older server);
- each worker loads the versions itself and micro-batches its own connections (one client's
  connection stays with one worker);
- the metrics are summed over the workers (prometheus_client's multiprocess mode, in a
  directory made for this server and removed when it stops), so any worker's
  /monitoring/prometheus/metrics answers for all;
- the request log takes whole lines from every worker (serving/request_log.py);
- if one worker exits, the server stops the others and exits with an error, for whatever
  supervises it (Kubernetes, systemd) to restart it whole.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional

from serving.settings import ServingSettings

WORKER_ENV = "TFX_TEMPLATE_SERVING_WORKER"  # set in a worker: its index
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode


class PortInUse(OSError):
    """A port the workers would share is taken."""


def worker_index() -> Optional[int]:
    """This process's index among the workers, None when it is not a worker."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None else None


def check_ports_free(host: str, ports: list[int]) -> None:
    """Raises PortInUse naming the first port something already listens on."""
    for port in ports:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
            except OSError as error:
                raise PortInUse(
                    f"cannot listen on {host or '*'}:{port} ({error.strerror}): another "
                    "process has it; stop it or set another PIPELINE_SERVING_PORT / _GRPC_PORT"
                ) from None


def supervise(settings: ServingSettings) -> int:
    """Starts `settings.workers` workers serving `settings` and waits; returns the exit code.
    SIGTERM/SIGINT stop them all (0); a worker that exits on its own stops the rest (1)."""
    if not settings.port:
        raise PortInUse("PIPELINE_SERVING_WORKERS > 1 needs a fixed PIPELINE_SERVING_PORT (not 0)")
    ports = [settings.port] + ([settings.grpc_port] if settings.grpc_port else [])
    check_ports_free(settings.host, ports)
    metrics_dir = tempfile.mkdtemp(prefix="serving-metrics-")
    env = {
        **os.environ,
        METRICS_DIR_ENV: metrics_dir,
        # The workers serve exactly what this process was told (command-line overrides too).
        "PIPELINE_SERVING_HOST": settings.host,
        "PIPELINE_SERVING_PORT": str(settings.port),
        "PIPELINE_SERVING_GRPC_PORT": str(settings.grpc_port),
    }
    command = [sys.executable, "-m", "cli.main", "serve"]
    workers = [
        subprocess.Popen(command, env={**env, WORKER_ENV: str(i)}) for i in range(settings.workers)
    ]
    stopping = []

    def stop(signum, _frame) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    print(
        f"{settings.workers} workers (pids {', '.join(str(w.pid) for w in workers)}) share "
        f"port {' and '.join(map(str, ports))}",
        file=sys.stderr,
        flush=True,
    )
    code = 0
    try:
        while not stopping:
            exited = [(i, w.returncode) for i, w in enumerate(workers) if w.poll() is not None]
            if exited:
                index, returncode = exited[0]
                print(
                    f"error: worker {index} exited with code {returncode}; stopping the "
                    "others (see the log above)",
                    file=sys.stderr,
                    flush=True,
                )
                code = 1
                break
            time.sleep(0.2)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        deadline = time.monotonic() + 20
        for worker in workers:
            try:
                worker.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return code
