"""REST and gRPC requests share the model server's micro-batches (serving/batching.py): a real
server process over a slow model whose answer says how many rows its call held. 16 REST and 16
gRPC clients send one row each at once; a call of more than 16 rows cannot come from one
protocol alone."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import process
from tests import tiny_model

pytestmark = pytest.mark.integration

CLIENTS_PER_PROTOCOL = 16
ROUNDS = 3


class _SlowCounter(tf.Module):
    """y = 2x, and `rows_in_call`: the rows of the model call that answered, for each row. A
    few large matrix products make each call last long enough for the other clients'
    requests to queue behind it."""

    def __init__(self):
        super().__init__()
        self.weights = tf.Variable(tf.random.stateless_normal([700, 700], seed=[1, 2]) / 30.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        work = self.weights
        for _ in range(6):
            work = tf.tanh(tf.linalg.matmul(work, self.weights))
        rows = tf.shape(x, out_type=tf.int64)[0]
        # Adds 0 (tanh is at most 1 in size), so y depends on the work and it is not pruned.
        nothing = tf.minimum(tf.reduce_max(tf.abs(work)), 1.0) * 0.0
        # The server's warm-up sends a missing (NaN) value and expects a finite answer.
        y = tf.where(tf.math.is_nan(x), 0.0, x) * 2.0 + nothing
        return {"y": y, "rows_in_call": tf.fill([rows], rows)}


def _rest(url: str, value: float) -> tuple[float, int]:
    body = json.dumps({"instances": [value]}).encode()
    request = urllib.request.Request(
        f"{url}/v1/models/{tiny_model.NAME}:predict",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        (prediction,) = json.load(answer)["predictions"]
    return prediction["y"], prediction["rows_in_call"]


def _grpc(stub, value: float) -> tuple[float, int]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = tiny_model.NAME
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([value], dtype=tf.float32))
    answer = stub.Predict(request, timeout=60)
    (y,) = tf.make_ndarray(answer.outputs["y"]).tolist()
    (rows,) = tf.make_ndarray(answer.outputs["rows_in_call"]).tolist()
    return y, rows


def test_rest_and_grpc_requests_merge_into_the_same_model_calls(tmp_path):
    tiny_model.write(tmp_path, 1, _SlowCounter())
    env = tiny_model.server_env(tmp_path, PIPELINE_SERVING_MAX_BATCH_WAIT_MS="50")
    with process.running_server(env, str(tmp_path / "server.log")) as url:
        with grpc.insecure_channel(url.grpc) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            largest_call = 0
            with concurrent.futures.ThreadPoolExecutor(2 * CLIENTS_PER_PROTOCOL) as pool:

                def client(start: threading.Barrier, protocol: str, value: float):
                    start.wait()  # all clients send at once
                    return _rest(url, value) if protocol == "rest" else _grpc(stub, value)

                for round_ in range(ROUNDS):
                    start = threading.Barrier(2 * CLIENTS_PER_PROTOCOL)
                    calls = {
                        (protocol, i): pool.submit(client, start, protocol, round_ * 100 + i + 0.5)
                        for protocol in ("rest", "grpc")
                        for i in range(CLIENTS_PER_PROTOCOL)
                    }
                    for (protocol, i), call in calls.items():
                        y, rows = call.result(timeout=120)
                        # Each client gets its own row back, whatever call it rode in.
                        assert y == pytest.approx(2 * (round_ * 100 + i + 0.5)), (protocol, i)
                        largest_call = max(largest_call, rows)
    assert largest_call > CLIENTS_PER_PROTOCOL, (
        f"no model call held more than {largest_call} rows: REST and gRPC requests never shared one"
    )
