"""Clusters for parameter-server training (`distribution_strategy=parameter_server`).

`models/model.py` asks for a cluster with `training_cluster(...)` and trains as its
coordinator (the `chief` task); what it gets depends on where the Trainer runs:

- `TF_CONFIG` names `ps` tasks (a Vertex AI custom job with chief, worker and ps pools, or a
  cluster a test started): that cluster. On a `worker` or `ps` replica, `run_fn` instead
  serves its task until the job ends (`serve_task_from_tf_config`).
- Otherwise (the local runner, Airflow): a `LocalCluster` of `ps_workers` worker and
  `ps_tasks` ps processes on free loopback ports, started before training, waited for, and
  stopped afterwards, also when training fails. Exactly the processes it started are stopped
  (their pids are written to `pids.json` in its log directory), and each one exits by itself
  if the Trainer's process disappears.

A worker process serves a `tf.distribute.Server` and runs the closures the coordinator sends;
a ps process holds (shards of) the variables. Neither reads data nor runs user code: the
coordinator ships the functions.

    # one task, as LocalCluster runs it:
    python -m pipeline.ps_cluster '<cluster spec JSON>' worker 0
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

from absl import logging

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COORDINATOR = "chief"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
# A task whose parent (the Trainer) is gone exits by itself after at most this long.
ORPHAN_CHECK_S = 2.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_cluster_spec(num_workers: int, num_ps: int) -> dict[str, list[str]]:
    """A chief, `num_workers` workers and `num_ps` ps tasks, each on a free loopback port."""
    return {
        COORDINATOR: [f"127.0.0.1:{free_port()}"],
        "worker": [f"127.0.0.1:{free_port()}" for _ in range(num_workers)],
        "ps": [f"127.0.0.1:{free_port()}" for _ in range(num_ps)],
    }


def server_config(num_workers: int):
    """Session config of the servers: at least `num_workers + 1` inter-op threads, without
    which a worker's closures and the ps's variable reads wait for each other on a 2-core
    machine and `fit` hangs (several servers in one process share the pools)."""
    import tensorflow as tf  # the CLI imports TensorFlow only when serving

    return tf.compat.v1.ConfigProto(
        inter_op_parallelism_threads=max(num_workers + 1, os.cpu_count() or 1)
    )


def start_server(cluster: dict[str, list[str]], task_type: str, task_index: int):
    """A started `tf.distribute.Server` for one task of `cluster`."""
    import tensorflow as tf

    return tf.distribute.Server(
        tf.train.ClusterSpec(cluster),
        job_name=task_type,
        task_index=task_index,
        protocol="grpc",
        config=server_config(len(cluster.get("worker", []))),
        start=True,
    )


def in_process_servers(cluster: dict[str, list[str]]) -> list:
    """Every worker and ps task of `cluster` as a server in this process (tests)."""
    return [
        start_server(cluster, task_type, index)
        for task_type in ("worker", "ps")
        for index in range(len(cluster.get(task_type, [])))
    ]


def coordinator_resolver(cluster: dict[str, list[str]]):
    """The cluster resolver of the coordinator (`chief` task 0) of `cluster`."""
    import tensorflow as tf

    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=COORDINATOR, task_id=0, rpc_layer="grpc"
    )


def tf_config() -> dict:
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def external_cluster() -> Optional[dict]:
    """TF_CONFIG, if it describes a parameter-server cluster (it has ps tasks)."""
    config = tf_config()
    return config if config.get("cluster", {}).get("ps") else None


def serve_task_from_tf_config() -> bool:
    """On a `worker` or `ps` replica of a TF_CONFIG cluster: serve this task until the job
    ends (never returns). False on the coordinator, or without such a cluster."""
    config = external_cluster()
    task = (config or {}).get("task", {})
    if task.get("type") not in ("worker", "ps"):
        return False
    logging.info(
        "Parameter-server cluster: serving %s %s of %s",
        task["type"],
        task["index"],
        config["cluster"],
    )
    start_server(config["cluster"], task["type"], int(task["index"])).join()
    return True  # join() returns only if the server is stopped


class LocalCluster:
    """Worker and ps processes on loopback ports for one training; use as a context manager.

    Pids of every process it started are listed in `<log_dir>/pids.json` ("pids", and
    "tasks": "<type>-<index>" -> pid) and `self.pids`;
    each task logs to `<log_dir>/<type>-<index>.log`."""

    def __init__(self, num_workers: int, num_ps: int, log_dir: str):
        if num_workers < 1 or num_ps < 1:
            raise ValueError(
                f"a parameter-server cluster needs at least one worker and one ps "
                f"task, got {num_workers} worker(s) and {num_ps} ps"
            )
        self.cluster = local_cluster_spec(num_workers, num_ps)
        self.log_dir = Path(log_dir)
        self.processes: dict[tuple[str, int], subprocess.Popen] = {}
        self.pids: list[int] = []
        self.task_pids: dict[str, int] = {}

    @property
    def tasks(self) -> list[tuple[str, int]]:
        return [(t, i) for t in ("ps", "worker") for i in range(len(self.cluster[t]))]

    def start(self, timeout: float = READY_TIMEOUT_S) -> LocalCluster:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for task in self.tasks:
                self._spawn(*task)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        logging.info(
            "Parameter-server cluster up: %s (pids %s, logs in %s)",
            json.dumps(self.cluster),
            self.pids,
            self.log_dir,
        )
        return self

    def _spawn(self, task_type: str, index: int) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        env.pop("TF_CONFIG", None)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log = open(self.log_dir / f"{task_type}-{index}.log", "ab")
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipeline.ps_cluster",
                    json.dumps(self.cluster),
                    task_type,
                    str(index),
                    str(os.getpid()),
                ],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self.processes[(task_type, index)] = process
        self.pids.append(process.pid)
        self.task_pids[f"{task_type}-{index}"] = process.pid
        (self.log_dir / "pids.json").write_text(
            json.dumps({"pids": self.pids, "tasks": self.task_pids, "cluster": self.cluster})
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = dict(self.processes)
        while pending:
            for task, process in list(pending.items()):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{task[0]} {task[1]} exited with {process.returncode} "
                        f"before serving:\n{self._log_tail(*task)}"
                    )
                host, port = self.cluster[task[0]][task[1]].rsplit(":", 1)
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((host, int(port)), timeout=1),
                ):
                    del pending[task]
            if pending and time.monotonic() > deadline:
                raise TimeoutError(
                    f"parameter-server tasks {sorted(pending)} not serving after "
                    f"{timeout:.0f} s (logs in {self.log_dir})"
                )
            time.sleep(0.2)

    def _log_tail(self, task_type: str, index: int) -> str:
        path = self.log_dir / f"{task_type}-{index}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def alive(self) -> list[int]:
        """Pids of the started processes still running."""
        return [p.pid for p in self.processes.values() if p.poll() is None]

    def stop(self) -> None:
        """Terminates the processes this cluster started (and only those), then kills what
        is left after STOP_TIMEOUT_S."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes.values():
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.processes:
            logging.info("Parameter-server cluster stopped (pids %s)", self.pids)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def training_cluster(num_workers: int, num_ps: int, log_dir: str) -> Iterator:
    """The coordinator's cluster resolver: TF_CONFIG's cluster if it has ps tasks, else a
    LocalCluster started for the duration of the block (and stopped, whatever happens)."""
    config = external_cluster()
    if config:
        import tensorflow as tf

        logging.info("Parameter-server cluster from TF_CONFIG: %s", config["cluster"])
        yield tf.distribute.cluster_resolver.TFConfigClusterResolver()
        return
    cluster = LocalCluster(num_workers, num_ps, log_dir).start()
    try:
        yield coordinator_resolver(cluster.cluster)
    finally:
        try:
            # While the tasks still listen: the finished training's functions unregister
            # from them (else each logs "Failed to remove function remotely" later).
            gc.collect()
            _forget_cluster()
        finally:
            cluster.stop()


def _forget_cluster() -> None:
    """A fresh local eager context: the coordinator's context stays connected to the stopped
    tasks, and every function traced afterwards (the Evaluator's, in the local runner's
    process) would first try to register itself with them."""
    from tensorflow.python.eager import context  # no public equivalent

    context._reset_context()


def _exit_when_orphaned(parent_pid: int) -> None:
    """A task whose Trainer died without stopping it (SIGKILL) would serve forever."""

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(0)
            time.sleep(ORPHAN_CHECK_S)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> None:
    cluster, task_type, index = json.loads(argv[1]), argv[2], int(argv[3])
    if len(argv) > 4:
        _exit_when_orphaned(int(argv[4]))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server = start_server(cluster, task_type, index)
    print(f"serving {task_type} {index} at {cluster[task_type][index]}", flush=True)
    server.join()


if __name__ == "__main__":
    main(sys.argv)
