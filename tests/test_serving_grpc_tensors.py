"""gRPC's tensor writer (serving/grpc_server.py tensor_proto) writes a model's outputs exactly
as tf.make_tensor_proto writes them, byte for byte: numbers packed or one by one, text, every
shape; dtypes it does not write itself go through make_tensor_proto."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from serving.grpc_server import tensor_proto

ARRAYS = [
    np.array([[0.25]], dtype=np.float32),
    np.array([[0.25], [0.5], [np.nan]], dtype=np.float32),
    np.array([1.5, -2.0], dtype=np.float64),
    np.array(3.5, dtype=np.float64),
    np.array([7], dtype=np.int64),
    np.array([[7, 8, 9]], dtype=np.int64),
    np.array([2**31 - 1, -5], dtype=np.int32),
    np.array([b"table"], dtype=object),
    np.array([[b"a", b"\xff\x00"], [b"", b"c"]], dtype=object),
    np.array(["text"], dtype=object),
    np.zeros((0, 2), dtype=np.float32),
    np.array([True, False]),  # through make_tensor_proto
    np.array([1.5], dtype=np.float16),  # through make_tensor_proto
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_tensor_protos_are_make_tensor_protos(array):
    written = tensor_pb2.TensorProto()
    tensor_proto(array, written)
    expected = tf.make_tensor_proto(array)
    assert written == expected
    assert written.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )
    np.testing.assert_array_equal(tf.make_ndarray(written), tf.make_ndarray(expected))
