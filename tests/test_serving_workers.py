"""Several server processes on one pair of ports (PIPELINE_SERVING_WORKERS, serving/workers.py),
as a real server over a tiny model: both workers answer REST and gRPC, the metrics any of them
serves sum every worker's requests, the request log holds every sampled request whole, a port
already taken is refused at start, and a worker that dies stops the server with an error."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import psutil
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import process
from tests import tiny_model

pytestmark = pytest.mark.integration

MODEL = tiny_model.NAME


def children(pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(pid).children()]


def running(pid: int) -> bool:
    """Alive and not yet reaped as a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def requests_counted(url: str) -> float:
    """serving_requests_total summed over its label sets, as one scrape (one connection, so
    one worker) shows it."""
    with urllib.request.urlopen(f"{url}/monitoring/prometheus/metrics", timeout=30) as page:
        text = page.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "serving_requests_total"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    tiny_model.write(tmp, 1)
    env = tiny_model.server_env(
        tmp,
        PIPELINE_SERVING_WORKERS="2",
        PIPELINE_SERVING_LOG_SAMPLING_RATE="1",
        PIPELINE_SERVING_LOG_PATH=str(tmp / "requests.jsonl"),
    )
    with process.running_server(env, str(tmp / "server.log")) as url:
        # Both workers loaded the model: each answers its own connections.
        deadline = time.monotonic() + 120
        while len(seen_workers(url, 20)) < 2:
            assert time.monotonic() < deadline, (tmp / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url, tmp


def seen_workers(url: str, calls: int) -> set[int]:
    """The workers that answered `calls` health probes, each on a new connection."""
    seen = set()
    for _ in range(calls):
        status, body, _ = process.call(f"{url}/healthz", timeout=10)
        if status == 200:
            seen.add(body["worker"])
    return seen


def test_two_workers_share_both_ports_and_sum_their_metrics(server):
    url, tmp = server
    assert len(children(url.pid)) == 2
    before = requests_counted(url)
    rest_answers = [
        process.call(f"{url}/v1/models/{MODEL}:predict", {"instances": [float(n)]})
        for n in range(40)  # each on a new connection
    ]
    assert [(status, body) for status, body, _ in rest_answers] == [
        (200, {"predictions": [{"y": 2.0 * n, "x_is_missing": 0}]}) for n in range(40)
    ]
    for n in range(20):  # a new channel each: both workers get some
        with grpc.insecure_channel(url.grpc) as channel:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = MODEL
            request.inputs["x"].CopyFrom(tf.make_tensor_proto([float(n)], dtype=tf.float32))
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, timeout=30
            )
            assert tf.make_ndarray(response.outputs["y"]).tolist() == [2.0 * n]
    # Every scrape, whichever worker answers it, counts all 60.
    for _ in range(6):
        assert requests_counted(url) == before + 60
    # Both workers appended to one request log, every line whole.
    records = [json.loads(line) for line in (tmp / "requests.jsonl").read_text().splitlines()]
    predictions = [r for r in records if r["method"] == "predict"]
    assert len(predictions) == 60 and all(r["status"] == 200 for r in predictions)


def test_a_port_in_use_is_refused_before_any_worker_starts(tmp_path):
    tiny_model.write(tmp_path, 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = tiny_model.server_env(tmp_path, PIPELINE_SERVING_WORKERS="2")
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--grpc-port", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: cannot listen on 127.0.0.1:") and str(port) in last_line
    assert "serving '" not in result.stderr  # no worker started


def test_a_worker_that_dies_stops_the_server_with_an_error(tmp_path):
    tiny_model.write(tmp_path, 1)
    env = tiny_model.server_env(tmp_path, PIPELINE_SERVING_WORKERS="2")
    log = tmp_path / "server.log"
    with process.running_server(env, str(log)) as url:
        workers = children(url.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while running(url.pid):
            assert time.monotonic() < deadline, "the server kept running"
            time.sleep(0.2)
        for pid in workers[1:]:  # the other worker was stopped too
            assert not running(pid)
    text = log.read_text()
    assert "error: worker 0 exited with code -9; stopping the others" in text
