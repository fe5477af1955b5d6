"""TF Serving's gRPC API of the model server (serving/grpc_server.py), called with the official
`tensorflow-serving-api` stubs on a real server process over a tiny model: tensors in and out
as REST answers them, status and metadata as TF Serving returns them, and each client mistake
with the status code and message TF Serving's own implementation gives (model_servers/,
servables/tensorflow/ in github.com/tensorflow/serving)."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import types

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from pipeline import serving_log
from serving import process
from tests import tiny_model

pytestmark = pytest.mark.integration

MAX_BODY_BYTES = 100_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grpc")
    tiny_model.write(tmp, 1)
    env = tiny_model.server_env(
        tmp,
        PIPELINE_SERVING_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        PIPELINE_SERVING_LOG_SAMPLING_RATE="1",
        PIPELINE_SERVING_LOG_PATH=str(tmp / "requests.jsonl"),
    )
    with process.running_server(env, str(tmp / "server.log")) as url:
        with grpc.insecure_channel(url.grpc) as channel:
            yield types.SimpleNamespace(
                url=url,
                tmp=str(tmp),
                log=tmp / "requests.jsonl",
                predictions=prediction_service_pb2_grpc.PredictionServiceStub(channel),
                models=model_service_pb2_grpc.ModelServiceStub(channel),
            )


def spec(message, name: str = tiny_model.NAME, **fields):
    """Sets the request's model spec: name, and version (int), version_label or
    signature_name."""
    message.model_spec.name = name
    for key, value in fields.items():
        if key == "version":
            message.model_spec.version.value = value
        else:
            setattr(message.model_spec, key, value)
    return message


def predict_request(values=(1.5,), dtype=tf.float32, **fields) -> predict_pb2.PredictRequest:
    request = spec(predict_pb2.PredictRequest(), **fields)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(list(values), dtype=dtype))
    return request


def test_predict_takes_and_returns_tensors_with_rest_s_values(server):
    values = [1.5, math.nan, -2.0]
    response = server.predictions.Predict(predict_request(values), timeout=30)
    assert response.model_spec.name == tiny_model.NAME
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"  # the default, filled in
    outputs = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
    assert response.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert response.outputs["x_is_missing"].dtype == types_pb2.DT_INT64
    assert outputs["y"].tolist() == [3.0, 0.0, -4.0]
    assert outputs["x_is_missing"].tolist() == [0, 1, 0]

    status, body, headers = process.call(
        f"{server.url}/v1/models/{tiny_model.NAME}:predict", {"inputs": {"x": [1.5, None, -2.0]}}
    )
    assert status == 200, body
    assert body["outputs"] == {"y": outputs["y"].tolist(), "x_is_missing": [0, 1, 0]}

    # output_filter, a specific version and the default signature by name.
    filtered = server.predictions.Predict(
        predict_request(values, version=1, signature_name="serving_default"),
        timeout=30,
    )
    assert set(filtered.outputs) == {"y", "x_is_missing"}
    request = predict_request([4.0])
    request.output_filter.append("y")
    filtered = server.predictions.Predict(request, timeout=30)
    assert list(filtered.outputs) == ["y"]
    assert tf.make_ndarray(filtered.outputs["y"]).tolist() == [8.0]


def test_predictions_are_in_the_request_log_as_rest_writes_them(server):
    """Sampled gRPC requests go to the request log in REST's shapes, so the skew and leakage
    checks (pipeline/serving_log.py) read them too."""
    server.predictions.Predict(predict_request([7.25, 8.5]), timeout=30)
    with pytest.raises(grpc.RpcError):
        server.predictions.Predict(predict_request([7.25], name="other"), timeout=30)
    records = [
        r
        for r in serving_log.read(str(server.log))
        if r["request"] and r["request"]["inputs"]["x"][0] == 7.25
    ]
    assert [(r["method"], r["status"], r["model"]) for r in records] == [
        ("predict", 200, tiny_model.NAME),
        ("predict", 404, tiny_model.NAME),
    ]
    ok, failed = records
    assert ok["version"] == "1" and ok["signature_name"] == "serving_default"
    assert ok["request"] == {"inputs": {"x": [7.25, 8.5]}}
    assert ok["response"] == {"outputs": {"y": [14.5, 17.0], "x_is_missing": [0, 0]}}
    assert failed["response"] == {"error": "Servable not found for request: Latest(other)"}
    assert list(serving_log.logged_rows(records)) == [{"x": 7.25}, {"x": 8.5}]


def test_status_and_metadata_as_tf_serving_returns_them(server):
    status = server.models.GetModelStatus(
        spec(get_model_status_pb2.GetModelStatusRequest()), timeout=30
    )
    assert len(status.model_version_status) == 1
    version = status.model_version_status[0]
    assert version.version == 1
    assert version.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert version.status.error_code == 0 and version.status.error_message == ""
    one = server.models.GetModelStatus(
        spec(get_model_status_pb2.GetModelStatusRequest(), version=1), timeout=30
    )
    assert one == status
    code, rest, _ = process.call(f"{server.url}/v1/models/{tiny_model.NAME}")
    assert code == 200
    assert rest["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]

    request = spec(get_model_metadata_pb2.GetModelMetadataRequest())
    request.metadata_field.append("signature_def")
    metadata = server.predictions.GetModelMetadata(request, timeout=30)
    assert metadata.model_spec.name == tiny_model.NAME
    assert metadata.model_spec.version.value == 1
    assert metadata.model_spec.signature_name == ""  # as TF Serving: no signature here
    packed = metadata.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["x"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in default.inputs["x"].tensor_shape.dim] == [-1]
    assert set(default.outputs) == {"y", "x_is_missing"}
    # The same SignatureDefMap as the REST metadata endpoint's.
    code, rest, _ = process.call(f"{server.url}/v1/models/{tiny_model.NAME}/metadata")
    assert code == 200
    assert (
        json_format.MessageToDict(
            signatures, preserving_proto_field_name=True, including_default_value_fields=True
        )
        == rest["metadata"]["signature_def"]
    )


def _tensor(**fields) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(**fields)


def _bad_predicts():
    no_spec = predict_pb2.PredictRequest()
    no_spec.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
    extra = predict_request()
    extra.inputs["z"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
    missing = spec(predict_pb2.PredictRequest())
    wrong_shape = spec(predict_pb2.PredictRequest())
    wrong_shape.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [2.0]], dtype=tf.float32))
    scalar = spec(predict_pb2.PredictRequest())
    scalar.inputs["x"].CopyFrom(tf.make_tensor_proto(1.0, dtype=tf.float32))
    empty = predict_request([])
    truncated = spec(predict_pb2.PredictRequest())
    truncated.inputs["x"].CopyFrom(
        _tensor(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tf.TensorShape([3]).as_proto(),
            tensor_content=b"\x00" * 5,
        )
    )
    unknown_output = predict_request()
    unknown_output.output_filter.append("z")
    duplicate_output = predict_request()
    duplicate_output.output_filter.extend(["y", "y"])
    too_large = predict_request(np.zeros(MAX_BODY_BYTES // 4 + 10))
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    not_found = grpc.StatusCode.NOT_FOUND
    return [
        ("no model spec", no_spec, invalid, "Missing ModelSpec"),
        ("no name", predict_request(name=""), invalid, "ModelSpec has no name specified."),
        (
            "unknown model",
            predict_request(name="other"),
            not_found,
            "Servable not found for request: Latest(other)",
        ),
        (
            "unknown version",
            predict_request(version=99),
            not_found,
            "Servable not found for request: Specific(tiny, 99)",
        ),
        (
            "unknown label",
            predict_request(version_label="canary"),
            invalid,
            "Unrecognized servable version label: canary",
        ),
        (
            "unknown signature",
            predict_request(signature_name="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            "wrong dtype",
            predict_request(dtype=tf.float64),
            invalid,
            "input 'x' expects a tensor of DT_FLOAT, got DT_DOUBLE",
        ),
        ("extra input", extra, invalid, "Sent extra: {z}. Missing but required: {}."),
        ("missing input", missing, invalid, "Missing but required: {x}."),
        ("2-d tensor", wrong_shape, invalid, "input 'x' must have shape [n]"),
        ("scalar", scalar, invalid, "got []"),
        ("no values", empty, invalid, "the inputs hold no values"),
        ("truncated tensor_content", truncated, invalid, "tensor parsing error: x"),
        (
            "unknown output",
            unknown_output,
            invalid,
            "output tensor alias not found in signature: z Outputs expected to be in the set "
            "{x_is_missing,y}.",
        ),
        ("duplicate output", duplicate_output, invalid, "duplicate output tensor alias: y"),
        ("too large", too_large, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
    ]


@pytest.mark.parametrize(
    "request_, code, fragment",
    [case[1:] for case in _bad_predicts()],
    ids=[case[0] for case in _bad_predicts()],
)
def test_bad_predict_requests_get_tf_serving_s_status_codes(server, request_, code, fragment):
    with pytest.raises(grpc.RpcError) as raised:
        server.predictions.Predict(request_, timeout=30)
    assert raised.value.code() == code
    assert fragment in raised.value.details()
    assert server.tmp not in raised.value.details()


def _metadata_request(*fields, **model) -> get_model_metadata_pb2.GetModelMetadataRequest:
    request = spec(get_model_metadata_pb2.GetModelMetadataRequest(), **model)
    request.metadata_field.extend(fields)
    return request


def _classify_request(**model) -> classification_pb2.ClassificationRequest:
    request = spec(classification_pb2.ClassificationRequest(), **model)
    request.input.example_list.examples.add()
    return request


def _regress_request(**model) -> regression_pb2.RegressionRequest:
    request = spec(regression_pb2.RegressionRequest(), **model)
    request.input.example_list.examples.add()
    return request


OTHER_CALLS = [
    (
        "metadata without a field",
        "GetModelMetadata",
        _metadata_request(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field",
    ),
    (
        "metadata of another field",
        "GetModelMetadata",
        _metadata_request("signature_def", "assets"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field assets is not supported",
    ),
    (
        "metadata of an unknown version",
        "GetModelMetadata",
        _metadata_request("signature_def", version=7),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(tiny, 7)",
    ),
    (
        "status of an unknown model",
        "GetModelStatus",
        spec(get_model_status_pb2.GetModelStatusRequest(), name="other"),
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model other",
    ),
    (
        "status of an unknown version",
        "GetModelStatus",
        spec(get_model_status_pb2.GetModelStatusRequest(), version=7),
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 7 of model tiny",
    ),
    (
        "status without a model spec",
        "GetModelStatus",
        get_model_status_pb2.GetModelStatusRequest(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    ),
    (
        "classify on an unknown model",
        "Classify",
        _classify_request(name="other"),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(other)",
    ),
    (
        "classify through a predict signature",
        "Classify",
        _classify_request(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "No classification inputs found in SignatureDef",
    ),
    (
        "classify through an unknown signature",
        "Classify",
        _classify_request(signature_name="nope"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "No signature was found with the name: nope",
    ),
    (
        "regress through a predict signature",
        "Regress",
        _regress_request(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "No regression inputs found in SignatureDef",
    ),
    (
        "regress on an unknown version",
        "Regress",
        _regress_request(version=7),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(tiny, 7)",
    ),
    (
        "multi-inference",
        "MultiInference",
        inference_pb2.MultiInferenceRequest(),
        grpc.StatusCode.UNIMPLEMENTED,
        "not served here",
    ),
    (
        "reload config",
        "HandleReloadConfigRequest",
        model_management_pb2.ReloadConfigRequest(),
        grpc.StatusCode.UNIMPLEMENTED,
        "not served here",
    ),
]


@pytest.mark.parametrize(
    "method, request_, code, fragment",
    [case[1:] for case in OTHER_CALLS],
    ids=[case[0] for case in OTHER_CALLS],
)
def test_bad_calls_of_the_other_methods(server, method, request_, code, fragment):
    stub = server.models if method in ("GetModelStatus", "HandleReloadConfigRequest") else None
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub or server.predictions, method)(request_, timeout=30)
    assert raised.value.code() == code
    assert fragment in raised.value.details()


def test_the_server_still_answers_after_the_bad_calls(server):
    response = server.predictions.Predict(predict_request([2.0]), timeout=30)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [4.0]


def test_version_labels_from_the_model_config_file(tmp_path):
    """Labels as TF Serving resolves them: the config file's label, then that version."""
    tiny_model.write(tmp_path, 1)
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list { config { name: 'tiny' base_path: '/models/tiny' "
        "version_labels { key: 'stable' value: 1 } version_labels { key: 'canary' value: 2 } "
        "} }"
    )
    env = tiny_model.server_env(tmp_path, PIPELINE_SERVING_MODEL_CONFIG_FILE=str(config))
    with process.running_server(env, str(tmp_path / "server.log")) as url:
        with grpc.insecure_channel(url.grpc) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            answer = stub.Predict(predict_request([1.0], version_label="stable"), timeout=30)
            assert answer.model_spec.version.value == 1
            assert tf.make_ndarray(answer.outputs["y"]).tolist() == [2.0]
            for label, code, message in [
                (
                    "canary",
                    grpc.StatusCode.NOT_FOUND,
                    "Servable not found for request: Specific(tiny, 2)",
                ),
                (
                    "beta",
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Unrecognized servable version label: beta",
                ),
            ]:
                with pytest.raises(grpc.RpcError) as raised:
                    stub.Predict(predict_request([1.0], version_label=label), timeout=30)
                assert (raised.value.code(), raised.value.details()) == (code, message)


def test_a_grpc_port_in_use_stops_the_server_with_a_clear_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", "serve"]
            + ["--port", str(process.free_port()), "--grpc-port", str(port)],
            env=tiny_model.server_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen for gRPC on 127.0.0.1:{port} (in use?): set another "
        "PIPELINE_SERVING_GRPC_PORT, or 0 for no gRPC"
    )
