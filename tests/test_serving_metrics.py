"""The model server's Prometheus metrics (at TF Serving's /monitoring/prometheus/metrics) and
health probe, on a real server process over a tiny model: scraped before and after real REST
and gRPC requests, every count changes by exactly the requests made."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import process
from tests import tiny_model

pytestmark = pytest.mark.integration

MODEL = tiny_model.NAME


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of the metrics page: (name, labels) -> value."""
    with urllib.request.urlopen(f"{url}/monitoring/prometheus/metrics", timeout=30) as page:
        assert page.headers["Content-Type"].startswith("text/plain")
        text = page.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def changes(before: dict, after: dict, name: str) -> dict[frozenset, float]:
    """The samples of `name` that changed, by labels."""
    found = {}
    for (sample, labels), value in after.items():
        if sample == name and value != before.get((sample, labels), 0):
            found[labels] = value - before.get((sample, labels), 0)
    return found


def labels(**given: str) -> frozenset:
    return frozenset(given.items())


def predict(stub, values: list[float], **model) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model.get("name", MODEL)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(values, dtype=tf.float32))
    return stub.Predict(request, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    tiny_model.write(tmp, 1)
    with process.running_server(tiny_model.server_env(tmp), str(tmp / "server.log")) as url:
        with grpc.insecure_channel(url.grpc) as channel:
            yield url, prediction_service_pb2_grpc.PredictionServiceStub(channel), tmp


def test_request_counts_latencies_and_batch_sizes_change_by_the_requests_made(server):
    url, stub, _ = server
    predict_url = f"{url}/v1/models/{MODEL}:predict"
    before = scrape(url)
    for n in range(3):  # one after another: one model call each, of 1 row
        status, body, _ = process.call(predict_url, {"instances": [float(n)]})
        assert status == 200, body
    for _ in range(2):  # 2 rows each
        predict(stub, [1.0, 2.0])
    status, _, _ = process.call(f"{url}/v1/models/other:predict", {"instances": [1.0]})
    assert status == 404
    status, _, _ = process.call(f"{url}/v1/models/{MODEL}/metadata")
    assert status == 200
    with pytest.raises(grpc.RpcError) as raised:
        predict(stub, [1.0], name="other")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    after = scrape(url)

    def request(protocol, status, model=MODEL, version="1", method="Predict"):
        return labels(model=model, version=version, method=method, protocol=protocol, status=status)

    assert changes(before, after, "serving_requests_total") == {
        request("REST", "OK"): 3,
        request("GRPC", "OK"): 2,
        request("REST", "NOT_FOUND", model="unknown", version=""): 1,
        request("GRPC", "NOT_FOUND", model="unknown", version=""): 1,
        # The metadata of the latest version: no version in the path, none counted.
        request("REST", "OK", version="", method="GetModelMetadata"): 1,
    }
    assert changes(before, after, "serving_request_latency_seconds_count") == {
        labels(model=MODEL, method="Predict", protocol="REST"): 3,
        labels(model=MODEL, method="Predict", protocol="GRPC"): 2,
        labels(model="unknown", method="Predict", protocol="REST"): 1,
        labels(model="unknown", method="Predict", protocol="GRPC"): 1,
        labels(model=MODEL, method="GetModelMetadata", protocol="REST"): 1,
    }
    default = labels(signature="serving_default")
    assert changes(before, after, "serving_batch_size_rows_count") == {default: 5}
    assert changes(before, after, "serving_batch_size_rows_sum") == {default: 3 + 4}
    assert after[("serving_loaded_versions", labels(model=MODEL))] == 1
    assert (
        after[("serving_model_version_state", labels(model=MODEL, version="1", state="AVAILABLE"))]
        == 1
    )

    # Concurrent requests share model calls: every row is counted once, in fewer calls.
    before = scrape(url)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: predict(stub, [float(i)] * 3), range(48)))
    assert all(
        tf.make_ndarray(a.outputs["y"]).tolist() == [2.0 * i] * 3 for i, a in enumerate(answers)
    )
    after = scrape(url)
    assert changes(before, after, "serving_requests_total") == {request("GRPC", "OK"): 48}
    assert changes(before, after, "serving_batch_size_rows_sum") == {default: 48 * 3}
    assert 1 <= changes(before, after, "serving_batch_size_rows_count")[default] <= 48


def test_the_loaded_versions_follow_the_base_path(server):
    url, _, tmp = server
    tiny_model.write(tmp, 2)
    deadline = time.monotonic() + 120
    while process.call(f"{url}/healthz")[1]["versions"] != ["1", "2"]:
        assert time.monotonic() < deadline, "version 2 was not loaded"
        time.sleep(0.2)
    after = scrape(url)
    assert after[("serving_loaded_versions", labels(model=MODEL))] == 2
    for version in ("1", "2"):
        key = labels(model=MODEL, version=version, state="AVAILABLE")
        assert after[("serving_model_version_state", key)] == 1


def test_health_is_503_until_a_version_loads_then_200(tmp_path):
    env = tiny_model.server_env(tmp_path)
    port, grpc_port = process.free_port(), process.free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve"]
            + ["--port", str(port), "--grpc-port", str(grpc_port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                status, body, _ = process.call(f"{url}/healthz", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.3)
        assert (status, body) == (503, {"status": "unavailable", "model": MODEL, "versions": []})

        tiny_model.write(tmp_path, 3)
        while (status := process.call(f"{url}/healthz")[0]) != 200:
            assert status == 503 and time.monotonic() < deadline, "version 3 was not loaded"
            time.sleep(0.2)
        assert process.call(f"{url}/healthz")[1] == {
            "status": "ok",
            "model": MODEL,
            "versions": ["3"],
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
