"""TF Serving's gRPC API on the finished run's pushed model, called with the official
`tensorflow-serving-api` stubs on the real server process: the same answers as REST for
serving_default (serialized tf.Examples) and serving_raw, metadata and status equal to REST's,
versions and errors with TF Serving's status codes, and Classify/Regress giving Predict's
probabilities."""

from __future__ import annotations

import base64
import math
import types
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from analysis import skew
from pipeline import serving_log
from pipeline.settings import PipelineSettings
from serving import process
from serving.batch_predict import json_instance, raw_values
from tests.pipeline_run import read_csv

pytestmark = pytest.mark.integration

ROWS = 40
MODEL = "taxi-tips"


@pytest.fixture(scope="module")
def served(finished_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grpc-serving")
    base, copy_env = finished_run.serving_copy(tmp)
    env = {
        **copy_env,
        "PIPELINE_SERVING_POLL_SECONDS": "0.3",
        "PIPELINE_SERVING_LOG_SAMPLING_RATE": "1",
        "PIPELINE_SERVING_LOG_PATH": str(tmp / "requests.jsonl"),
    }
    with process.running_server(env, str(tmp / "server.log")) as url:
        with grpc.insecure_channel(url.grpc) as channel:
            yield types.SimpleNamespace(
                url=url,
                tmp=str(tmp),
                log=tmp / "requests.jsonl",
                model_url=f"{url}/v1/models/{MODEL}",
                version=int(finished_run.pushed_versions()[-1]),
                predictions=prediction_service_pb2_grpc.PredictionServiceStub(channel),
                models=model_service_pb2_grpc.ModelServiceStub(channel),
            )


@pytest.fixture(scope="module")
def rows(finished_run) -> list[dict]:
    csv_rows = read_csv(Path(finished_run.settings.data.data_dir) / "span-2" / "data.csv")[:ROWS]
    return [raw_values(r, f"row {i}") for i, r in enumerate(csv_rows)]


@pytest.fixture(scope="module")
def examples(rows) -> list[tf.train.Example]:
    schema = tfdv.load_schema_text(PipelineSettings.load({}).data.schema_path)
    return [skew.to_example(r, schema) for r in rows]


def request(message, signature_name: str = "", name: str = MODEL, version=None, label=None):
    message.model_spec.name = name
    if signature_name:
        message.model_spec.signature_name = signature_name
    if version is not None:
        message.model_spec.version.value = version
    if label is not None:
        message.model_spec.version_label = label
    return message


def predict_examples(serialized: list[bytes], **spec) -> predict_pb2.PredictRequest:
    message = request(predict_pb2.PredictRequest(), **spec)
    message.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string))
    return message


def probabilities(response: predict_pb2.PredictResponse) -> np.ndarray:
    return tf.make_ndarray(response.outputs["probabilities"]).reshape(-1)


def rest_predictions(served, body: dict) -> np.ndarray:
    status, answer, _ = process.call(served.model_url + ":predict", body)
    assert status == 200, answer
    return np.array(answer["predictions"], dtype=np.float32).reshape(-1)


def test_predict_on_serialized_examples_equals_rest(served, examples):
    serialized = [e.SerializeToString() for e in examples]
    response = served.predictions.Predict(predict_examples(serialized), timeout=60)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == served.version
    assert response.model_spec.signature_name == "serving_default"
    assert response.outputs["probabilities"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in response.outputs["probabilities"].tensor_shape.dim] == [ROWS, 1]
    by_rest = rest_predictions(
        served, {"instances": [{"b64": base64.b64encode(s).decode()} for s in serialized]}
    )
    np.testing.assert_allclose(probabilities(response), by_rest, atol=1e-6)
    assert 0 < by_rest.min() < by_rest.max() < 1  # real, varied probabilities


def _signature_inputs(served, name: str) -> dict[str, int]:
    """A signature's input dtypes, read as a gRPC client reads them: GetModelMetadata."""
    message = request(get_model_metadata_pb2.GetModelMetadataRequest())
    message.metadata_field.append("signature_def")
    signatures = get_model_metadata_pb2.SignatureDefMap()
    served.predictions.GetModelMetadata(message, timeout=60).metadata["signature_def"].Unpack(
        signatures
    )
    return {k: v.dtype for k, v in signatures.signature_def[name].inputs.items()}


def _raw_tensors(rows: list[dict], dtypes: dict[str, int]) -> dict:
    tensors = {}
    for key, dtype in dtypes.items():
        values = [r[key] for r in rows]
        if dtype == types_pb2.DT_STRING:
            tensors[key] = tf.make_tensor_proto([v.encode() for v in values], dtype=tf.string)
        else:
            tensors[key] = tf.make_tensor_proto(values, dtype=tf.dtypes.as_dtype(dtype))
    return tensors


def test_predict_on_raw_values_equals_rest(served, rows):
    dtypes = _signature_inputs(served, "serving_raw")
    assert any(math.isnan(v) for r in rows for v in r.values() if isinstance(v, float))
    message = request(predict_pb2.PredictRequest(), signature_name="serving_raw")
    for key, tensor in _raw_tensors(rows, dtypes).items():
        message.inputs[key].CopyFrom(tensor)
    response = served.predictions.Predict(message, timeout=60)
    by_rest = rest_predictions(
        served,
        {"signature_name": "serving_raw", "instances": [json_instance(r) for r in rows]},
    )
    np.testing.assert_allclose(probabilities(response), by_rest, atol=1e-6)

    # The keyed signature with output_filter: only the key, passed through.
    keyed = request(predict_pb2.PredictRequest(), signature_name="serving_keyed")
    for key, tensor in _raw_tensors(rows, dtypes).items():
        keyed.inputs[key].CopyFrom(tensor)
    keys = [f"k{i}".encode() for i in range(ROWS)]
    keyed.inputs["key"].CopyFrom(tf.make_tensor_proto(keys, dtype=tf.string))
    keyed.output_filter.append("key")
    response = served.predictions.Predict(keyed, timeout=60)
    assert list(response.outputs) == ["key"]
    assert tf.make_ndarray(response.outputs["key"]).tolist() == keys


def test_metadata_and_status_equal_rest(served):
    message = request(get_model_metadata_pb2.GetModelMetadataRequest())
    message.metadata_field.append("signature_def")
    metadata = served.predictions.GetModelMetadata(message, timeout=60)
    assert metadata.model_spec.name == MODEL
    assert metadata.model_spec.version.value == served.version
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "serving_raw", "serving_keyed", "classification"} <= set(
        signatures.signature_def
    )
    classification = signatures.signature_def["classification"]
    assert classification.method_name == "tensorflow/serving/classify"
    status, rest, _ = process.call(served.model_url + "/metadata")
    assert status == 200
    assert (
        json_format.MessageToDict(
            signatures, preserving_proto_field_name=True, including_default_value_fields=True
        )
        == rest["metadata"]["signature_def"]
    )

    answer = served.models.GetModelStatus(
        request(get_model_status_pb2.GetModelStatusRequest()), timeout=60
    )
    status, rest, _ = process.call(served.model_url)
    assert status == 200
    assert [
        (str(s.version), get_model_status_pb2.ModelVersionStatus.State.Name(s.state))
        for s in answer.model_version_status
    ] == [(s["version"], s["state"]) for s in rest["model_version_status"]]
    assert [(s.version, s.state) for s in answer.model_version_status] == [
        (served.version, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]


def test_a_specific_version_and_unknown_versions_and_models(served, examples):
    serialized = [examples[0].SerializeToString()]
    response = served.predictions.Predict(
        predict_examples(serialized, version=served.version), timeout=60
    )
    assert response.model_spec.version.value == served.version
    for spec, code, message in [
        (
            {"version": served.version + 1},
            grpc.StatusCode.NOT_FOUND,
            f"Servable not found for request: Specific({MODEL}, {served.version + 1})",
        ),
        (
            {"name": "other-model"},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(other-model)",
        ),
        (
            {"label": "latest"},  # no built-in labels: only a model config file's
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: latest",
        ),
    ]:
        with pytest.raises(grpc.RpcError) as raised:
            served.predictions.Predict(predict_examples(serialized, **spec), timeout=60)
        assert (raised.value.code(), raised.value.details()) == (code, message)


def test_bad_tensors_are_invalid_argument(served, examples):
    not_strings = request(predict_pb2.PredictRequest())
    not_strings.inputs["examples"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
    wrong = tf.train.Example()
    wrong.CopyFrom(examples[0])
    wrong.features.feature["fare"].Clear()
    wrong.features.feature["fare"].bytes_list.value.append(b"twelve")
    cases = [
        (not_strings, "input 'examples' expects a tensor of DT_STRING, got DT_FLOAT"),
        (predict_examples([b"\xff not a tf.Example"]), "the model rejected the input"),
        (predict_examples([wrong.SerializeToString()]), "fare"),
    ]
    for message, fragment in cases:
        with pytest.raises(grpc.RpcError) as raised:
            served.predictions.Predict(message, timeout=60)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = raised.value.details()
        assert fragment in details
        assert "File " not in details and "/" not in details.replace("tf.Example", "")
    # Still serving.
    answer = served.predictions.Predict(
        predict_examples([examples[1].SerializeToString()]), timeout=60
    )
    assert probabilities(answer).shape == (1,)


def test_classify_and_regress_give_predict_s_probabilities(served, examples):
    serialized = [e.SerializeToString() for e in examples]
    expected = probabilities(served.predictions.Predict(predict_examples(serialized), timeout=60))

    classify = request(classification_pb2.ClassificationRequest(), signature_name="classification")
    classify.input.example_list.examples.extend(examples)
    response = served.predictions.Classify(classify, timeout=60)
    assert response.model_spec.signature_name == "classification"
    assert response.model_spec.version.value == served.version
    assert len(response.result.classifications) == ROWS
    for p, result in zip(expected, response.result.classifications):
        assert [c.label for c in result.classes] == ["0", "1"]
        assert result.classes[1].score == pytest.approx(p, abs=1e-6)
        assert result.classes[0].score == pytest.approx(1 - p, abs=1e-6)

    # In the request log as rows the skew check reads (the examples' own features).
    logged = [
        r
        for r in serving_log.read(str(served.log))
        if r["method"] == "classify" and r["status"] == 200
    ]
    assert len(logged) == 1 and logged[0]["response"]["results"][0][0][0] == "0"
    rows_logged = list(serving_log.logged_rows(logged))
    assert len(rows_logged) == ROWS
    assert rows_logged[0]["fare"] == pytest.approx(
        examples[0].features.feature["fare"].float_list.value[0]
    )

    regress = request(regression_pb2.RegressionRequest(), signature_name="regression")
    regress.input.example_list.examples.extend(examples)
    response = served.predictions.Regress(regress, timeout=60)
    np.testing.assert_allclose([r.value for r in response.result.regressions], expected, atol=1e-6)

    # ExampleListWithContext: a feature shared by all examples, sent once.
    shared = "payment_type"
    with_context = request(regression_pb2.RegressionRequest(), signature_name="regression")
    listed = with_context.input.example_list_with_context
    listed.context.features.feature[shared].CopyFrom(examples[0].features.feature[shared])
    same = [
        e for e in examples if e.features.feature[shared] == listed.context.features.feature[shared]
    ]
    for e in same:
        example = listed.examples.add()
        example.CopyFrom(e)
        del example.features.feature[shared]
    response = served.predictions.Regress(with_context, timeout=60)
    indices = [i for i, e in enumerate(examples) if e in same]
    np.testing.assert_allclose(
        [r.value for r in response.result.regressions], expected[indices], atol=1e-6
    )

    for message, method, fragment in [
        (
            request(classification_pb2.ClassificationRequest(), signature_name="classification"),
            "Classify",
            "Input is empty.",
        ),
        (  # serving_default takes `examples`, not TF Serving's `inputs`: Classify refuses it
            request(classification_pb2.ClassificationRequest(), signature_name="serving_default"),
            "Classify",
            "No classification inputs found in SignatureDef",
        ),
        (
            request(regression_pb2.RegressionRequest(), signature_name="classification"),
            "Regress",
            "Expected one output Tensor.",
        ),
    ]:
        if method == "Classify" and "serving_default" in message.model_spec.signature_name:
            message.input.example_list.examples.add().CopyFrom(examples[0])
        if method == "Regress":
            message.input.example_list.examples.add().CopyFrom(examples[0])
        with pytest.raises(grpc.RpcError) as raised:
            getattr(served.predictions, method)(message, timeout=60)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in raised.value.details()
