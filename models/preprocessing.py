"""The one `preprocessing_fn`: Transform runs it, the Trainer trains on its output, and every
exported serving signature applies the same graph, so training and serving cannot skew."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from models import features
from pipeline import label_expression


def _dense(x: tf.Tensor | tf.SparseTensor, default) -> tf.Tensor:
    """A [batch] tensor from a VarLen (possibly missing) feature, missing values -> default."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default
        )
    return tf.reshape(x, [-1])


def _float(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """Float values with missing -> NaN, so the caller decides how to fill them."""
    return tf.cast(
        _dense(
            x,
            tf.constant(float("nan"), x.dtype) if x.dtype.is_floating else tf.constant(0, x.dtype),
        ),
        tf.float32,
    )


def preprocessing_fn(inputs: dict) -> dict:
    """Raw features (VarLen, as parsed from tf.Example) -> model inputs and the label."""
    outputs = {}
    for key, scale in features.NUMERIC_FEATURES.items():
        value = _float(inputs[key])
        value = tf.where(tf.math.is_nan(value), 0.0, value)  # missing counts as 0
        if scale == "log":
            # Negative amounts count as 0; log1p tames the long tail. In float64, then
            # float32: float32 log1p differs in the last bit between TensorFlow's vectorized
            # and scalar paths, so the same row could land in another quantile bucket
            # depending on the batch it is served in (micro-batching, batch jobs).
            value = tf.cast(tf.math.log1p(tf.cast(tf.maximum(value, 0.0), tf.float64)), tf.float32)
        outputs[features.transformed_name(key)] = tft.scale_to_z_score(value)
        outputs[features.bucketized_name(key)] = tft.bucketize(value, features.NUMERIC_BUCKETS)

    for key in features.BUCKET_FEATURES:
        value = _float(inputs[key])
        # Missing coordinates get their own bucket (NUM_BUCKETS), after the quantile ones.
        buckets = tft.bucketize(tf.where(tf.math.is_nan(value), 0.0, value), features.NUM_BUCKETS)
        outputs[features.transformed_name(key)] = tf.where(
            tf.math.is_nan(value), tf.constant(features.NUM_BUCKETS, tf.int64), buckets
        )

    for key, num_values in features.IDENTITY_FEATURES.items():
        value = tf.cast(_dense(inputs[key], tf.constant(0, inputs[key].dtype)), tf.int64)
        # Missing (0) and out-of-range ids share id 0.
        outputs[features.transformed_name(key)] = tf.where(
            (value < 0) | (value >= num_values), tf.constant(0, tf.int64), value
        )

    for key, (top_k, frequency_threshold) in features.VOCAB_FEATURES.items():
        raw = inputs[key]
        value = _dense(raw, "" if raw.dtype == tf.string else tf.constant(-1, raw.dtype))
        if value.dtype != tf.string:
            value = tf.strings.as_string(value)
        outputs[features.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            value,
            top_k=top_k,
            frequency_threshold=frequency_threshold,
            num_oov_buckets=features.NUM_OOV_BUCKETS,
            vocab_filename=key,
        )

    # The label's training-only columns exist only at training time: serving signatures
    # never see them, and then there is no label to compute.
    if all(column in inputs for column in features.label_columns()):
        outputs[features.LABEL_KEY] = label(inputs)
    return outputs


def label(inputs: dict) -> tf.Tensor:
    """The label (features.LABEL) from raw features as parsed from tf.Example: missing
    numbers count as 0, missing strings as ""."""

    def column(name: str, as_string: bool) -> tf.Tensor:
        raw = inputs[name]
        if raw.dtype == tf.string or as_string:
            value = _dense(raw, "" if raw.dtype == tf.string else tf.constant(0, raw.dtype))
            return value if value.dtype == tf.string else tf.strings.as_string(value)
        value = _float(raw)
        return tf.where(tf.math.is_nan(value), 0.0, value)

    return label_expression.evaluate(features.LABEL, column)
