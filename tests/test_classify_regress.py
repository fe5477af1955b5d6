"""TF Serving's Classify/Regress rules (serving/classify_regress.py) on a real SavedModel whose
method names pipeline/signature_methods.py set after saving: what TF Serving's classifier.cc
and regressor.cc accept answers, with the signature's values; what they reject is a 400 with
their wording; the context merge of ExampleListWithContext."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tensorflow as tf

from pipeline import signature_methods
from pipeline.names import CLASSIFY_METHOD_NAME, PREDICT_METHOD_NAME, REGRESS_METHOD_NAME
from serving import classify_regress, example_json
from serving.batching import Batcher
from serving.model_store import load_version
from serving.tensors import RequestError

SPEC = {"x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)}
STRINGS = tf.TensorSpec([None], tf.string, name="inputs")


def _p(serialized):
    return tf.sigmoid(tf.io.parse_example(serialized, SPEC)["x"])


class _Model(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def predict(self, serialized):
        return {"probabilities": tf.reshape(_p(serialized), [-1, 1])}

    @tf.function(input_signature=[STRINGS])
    def classification(self, serialized):
        p = tf.reshape(_p(serialized), [-1, 1])
        classes = tf.tile(tf.constant([["0", "1"]]), [tf.shape(p)[0], 1])
        return {"classes": classes, "scores": tf.concat([1.0 - p, p], axis=1)}

    @tf.function(input_signature=[STRINGS])
    def scores_only(self, serialized):
        p = tf.reshape(_p(serialized), [-1, 1])
        return {"scores": tf.concat([1.0 - p, p], axis=1)}

    @tf.function(input_signature=[STRINGS])
    def regression(self, serialized):
        return {"outputs": _p(serialized)}

    @tf.function(input_signature=[STRINGS])
    def regression_double(self, serialized):
        return {"outputs": tf.cast(_p(serialized), tf.float64)}


METHODS = {
    "classification": CLASSIFY_METHOD_NAME,
    "scores_only": CLASSIFY_METHOD_NAME,
    "regression": REGRESS_METHOD_NAME,
    "regression_double": REGRESS_METHOD_NAME,
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "1")
    module = _Model()
    signatures = {
        "serving_default": module.predict,
        # Right shape, but left with TF2's predict method name.
        "classification_predict_method": module.classification,
        **{name: getattr(module, name) for name in METHODS},
    }
    tf.saved_model.save(module, path, signatures=signatures)
    before = tf.saved_model.experimental.read_fingerprint(path).saved_model_checksum
    signature_methods.set_method_names(path, METHODS)
    # The fingerprint follows the rewritten saved_model.pb.
    assert tf.saved_model.experimental.read_fingerprint(path).saved_model_checksum != before
    return load_version(path, 1)


def _examples(values: list[float]) -> list[bytes]:
    return [
        tf.train.Example(
            features=tf.train.Features(
                feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[v]))}
            )
        ).SerializeToString()
        for v in values
    ]


def _run(coroutine):
    async def scenario():
        batcher = Batcher(max_batch_size=64, max_wait_seconds=0.001)
        try:
            return await coroutine(batcher)
        finally:
            await batcher.close()

    return asyncio.run(scenario())


def test_method_names_are_written_and_read_back(model):
    saved = signature_methods.read_method_names(model.path)
    assert saved.pop("__saved_model_init_op") == ""  # TF's, not a servable signature
    assert saved == {
        "serving_default": PREDICT_METHOD_NAME,
        "classification_predict_method": PREDICT_METHOD_NAME,
        **METHODS,
    }
    assert {name: s.method_name for name, s in model.signatures.items()} == saved
    with pytest.raises(ValueError, match="no signature nope"):
        signature_methods.set_method_names(model.path, {"nope": CLASSIFY_METHOD_NAME})


def test_classify_and_regress_answer_the_signatures_values(model):
    values = [-2.0, 0.0, 3.5]
    p = 1 / (1 + np.exp(-np.array(values)))
    classes, scores = _run(
        lambda b: classify_regress.classify(model, "classification", _examples(values), b)
    )
    assert classes.tolist() == [[b"0", b"1"]] * 3
    np.testing.assert_allclose(scores[:, 1], p, rtol=1e-6)
    np.testing.assert_allclose(scores[:, 0], 1 - p, rtol=1e-6)

    classes, scores = _run(
        lambda b: classify_regress.classify(model, "scores_only", _examples(values), b)
    )
    assert classes.tolist() == [[b"", b""]] * 3  # TF Serving leaves the label unset
    np.testing.assert_allclose(scores[:, 1], p, rtol=1e-6)

    outputs = _run(lambda b: classify_regress.regress(model, "regression", _examples(values), b))
    assert outputs.shape == (3,)
    np.testing.assert_allclose(outputs, p, rtol=1e-6)


@pytest.mark.parametrize(
    "method, signature, message",
    [
        ("classify", "nope", "No signature was found with the name: nope"),
        ("classify", "serving_default", "No classification inputs found in SignatureDef"),
        ("regress", "serving_default", "No regression inputs found in SignatureDef"),
        (
            "classify",
            "classification_predict_method",
            "Expected classification signature method_name to be tensorflow/serving/classify. "
            "Was: tensorflow/serving/predict",
        ),
        ("classify", "regression", "Expected classification signature outputs to contain"),
        ("regress", "classification", "Expected one output Tensor."),
        ("regress", "scores_only", "No regression outputs found in SignatureDef"),
        ("regress", "regression_double", "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
    ],
)
def test_what_tf_serving_rejects_is_a_400_with_its_wording(model, method, signature, message):
    call = getattr(classify_regress, method)
    with pytest.raises(RequestError) as error:
        _run(lambda b: call(model, signature, _examples([1.0]), b))
    assert error.value.status == 400
    assert message in str(error.value)


def test_empty_input(model):
    with pytest.raises(RequestError, match=r"^Input is empty\.$"):
        _run(lambda b: classify_regress.classify(model, "classification", [], b))


def test_context_features_are_merged_and_the_example_wins(model):
    context = tf.train.Example(
        features=tf.train.Features(
            feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[5.0])),
                "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[7])),
            }
        )
    ).SerializeToString()
    merged = classify_regress.with_context(context, _examples([1.0]) + [b""])
    first, second = (tf.train.Example.FromString(m).features.feature for m in merged)
    assert first["x"].float_list.value == [1.0] and first["y"].int64_list.value == [7]
    assert second["x"].float_list.value == [5.0]  # an empty example takes the context
    assert classify_regress.with_context(None, [b"a"]) == [b"a"]


def test_rest_json_becomes_tf_examples_as_tf_serving_reads_it():
    context, examples = example_json.examples_from_body(
        {
            "context": {"c": "shared"},
            "examples": [
                {"f": 1.5, "i": 2, "b": True, "s": "é", "raw": {"b64": "AAE="}, "many": [1, 2]},
                {"empty": [], "big": 2**64, "e": 1e2},
            ],
        },
        "classify",
    )
    assert tf.train.Example.FromString(context).features.feature["c"].bytes_list.value == [
        b"shared"
    ]
    first, second = (tf.train.Example.FromString(e).features.feature for e in examples)
    assert first["f"].float_list.value == [1.5]
    assert first["i"].int64_list.value == [2] and first["b"].int64_list.value == [1]
    assert first["s"].bytes_list.value == ["é".encode()]
    assert first["raw"].bytes_list.value == [b"\x00\x01"]
    assert first["many"].int64_list.value == [1, 2]
    assert second["empty"].WhichOneof("kind") is None
    # Past uint64 a JSON parser reads a double, as 1e2 is one.
    assert second["big"].float_list.value == [float(2**64)]
    assert second["e"].float_list.value == [100.0]


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "When method is classify, key 'examples' is expected and was not found"),
        ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' value is an empty array"),
        ({"examples": ["x"]}, "Example must be JSON object but got JSON String"),
        ({"context": 1, "examples": [{}]}, "Example must be JSON object but got JSON Number"),
        ({"examples": [{"a": None}]}, "Feature: a has element with unexpected JSON type: Null"),
        ({"examples": [{"a": [[1]]}]}, "Feature: a has element with unexpected JSON type: Array"),
        (
            {"examples": [{"a": {"x": 1}}]},
            "Feature: a has element with unexpected JSON type: Object",
        ),
        (
            {"examples": [{"a": [1, 1.5]}]},
            "Unexpected element type in feature: a expecting type: int64",
        ),
        (
            {"examples": [{"a": ["x", 1.5]}]},
            "Unexpected element type in feature: a expecting type: bytes",
        ),
        (
            {"examples": [{"a": 2**63}]},
            "Feature: a has uint64_t element. Only int64_t is supported.",
        ),
        ({"examples": [{"a": {"b64": "%%"}}]}, "Unable to base64 decode"),
        ({"examples": [{"a": "\ud800"}]}, "Feature: a has a string that is not valid UTF-8"),
    ],
)
def test_rest_json_mistakes_get_tf_servings_messages(body, message):
    with pytest.raises(RequestError) as error:
        example_json.examples_from_body(body, "classify")
    assert error.value.status == 400 and message in str(error.value)
