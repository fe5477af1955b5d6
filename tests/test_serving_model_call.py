"""The server's model call (serving/model_call.py) on real SavedModels: the flat call is taken
only after it answered as the public call did, then answers every input the same (and fails
bad ones with the same error); a function without TensorFlow's internals is called the public
way; the single-threaded executor is taken where it runs the graph (not with v1 control flow,
which tf.debugging asserts lower to); a loaded version has checked the flat call at its
warm-up."""

import numpy as np
import pytest
import tensorflow as tf

from serving import model_call
from serving.model_call import ModelCall
from serving.model_store import load_version
from serving.tensors import Signature


class _Model(tf.Module):
    """Inputs whose names sort otherwise than they are declared: the flat order matters."""

    def __init__(self):
        super().__init__()
        self.scale = tf.Variable(3.0)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(["a", "b"], [1, 2], tf.string, tf.int64), 0
        )

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="zeta"),
            tf.TensorSpec([None], tf.string, name="alpha"),
        ]
    )
    def serve(self, zeta, alpha):
        zeta = tf.where(tf.math.is_nan(zeta), 0.0, zeta)  # a missing value (the warm-up's)
        tf.debugging.assert_non_negative(zeta, message="zeta must not be negative")
        return {
            "scaled": zeta * self.scale,
            "code": self.table.lookup(alpha),
            "echo": alpha,
        }


class _Plain(tf.Module):
    """No control flow: the single-threaded executor runs it."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        return {"y": x * 2.0 + 1.0}


def _save(module: tf.Module, path: str) -> str:
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
    return _save(_Model(), str(tmp_path_factory.mktemp("model_call") / "1"))


INPUTS = {"zeta": tf.float32, "alpha": tf.string}


def _columns(zeta: list, alpha: list) -> dict:
    return {"zeta": zeta, "alpha": alpha}


def test_the_flat_call_is_taken_once_it_answered_as_the_public_call(saved):
    loaded = tf.saved_model.load(saved)
    function = loaded.signatures["serving_default"]
    call = ModelCall("serving_default", function, INPUTS)
    assert call.order is not None and set(call.order) == {"zeta", "alpha"}
    assert call.flat_verified is None

    first = call(_columns([1.5], [b"b"]))
    assert call.flat_verified is True
    assert call.executor is None  # the assert's control flow: the default executor
    assert first["scaled"].tolist() == [4.5] and first["code"].tolist() == [2]

    for zeta, alpha in (([0.0, 2.0], [b"a", b"zz"]), ([7.0] * 5, [b"b"] * 5)):
        flat = call(_columns(zeta, alpha))
        tensors = {"zeta": tf.constant(zeta, tf.float32), "alpha": tf.constant(alpha)}
        public = {k: v.numpy() for k, v in function(**tensors).items()}
        assert set(flat) == set(public)
        for key in public:
            np.testing.assert_array_equal(flat[key], public[key])


def test_a_bad_input_fails_the_same_through_both_paths(saved):
    loaded = tf.saved_model.load(saved)
    call = ModelCall("serving_default", loaded.signatures["serving_default"], INPUTS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="zeta must not be negative"):
        call(_columns([-1.0], [b"a"]))
    assert call.flat_verified is None  # a failed call checks nothing
    call(_columns([1.0], [b"a"]))
    assert call.flat_verified is True
    with pytest.raises(tf.errors.InvalidArgumentError, match="zeta must not be negative"):
        call(_columns([2.0, -1.0], [b"a", b"b"]))


def test_a_graph_without_control_flow_runs_on_the_single_threaded_executor(tmp_path):
    loaded = tf.saved_model.load(_save(_Plain(), str(tmp_path / "plain")))
    call = ModelCall("serving_default", loaded.signatures["serving_default"], {"x": tf.float32})
    assert call({"x": [1.0]})["y"].tolist() == [3.0]
    assert call.flat_verified is True and call.executor == model_call.SINGLE_THREADED
    assert call({"x": [2.0, -1.0]})["y"].tolist() == [5.0, -1.0]


def test_a_function_without_tensorflows_internals_is_called_the_public_way():
    def function(x):  # a plain callable: no flat form to call
        return {"y": x * 2}

    call = ModelCall("plain", function, {"x": tf.float32})
    assert call.flat_verified is False
    assert call({"x": [1.0, 2.0]})["y"].tolist() == [2.0, 4.0]
    assert call.flat_verified is False


def test_outputs_that_differ_are_named():
    same = {"y": np.array([1.0, np.nan]), "s": np.array([b"a"], dtype=object)}
    assert model_call._difference(same, {k: v.copy() for k, v in same.items()}) is None
    assert "'y'" in model_call._difference(same, {**same, "y": np.array([1.0, 2.0])})
    assert "'s'" in model_call._difference(same, {**same, "s": np.array([b"b"], dtype=object)})
    assert "outputs" in model_call._difference(same, {"y": same["y"]})


def test_a_loaded_version_checked_the_flat_call_at_its_warm_up(saved):
    version = load_version(saved, 1)
    signature = version.signatures["serving_default"]
    assert isinstance(signature, Signature)
    assert signature._call.flat_verified is True
    answer = signature({"zeta": [2.0], "alpha": [b"a"]})
    assert answer["scaled"].tolist() == [6.0] and answer["code"].tolist() == [1]
