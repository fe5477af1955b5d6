"""TF Lite export of the pushed model, with post-training quantization (optional step).

The TF Lite model is the Keras network alone: it takes the *transformed* features (the
outputs of `models/preprocessing.py`, named `<feature>_xf`), not raw values. TF Lite has no
kernels for Transform's graph (vocabulary hash tables over strings, quantile bucketization
from analyzer constants, sparse parsing of tf.Example), so on a device the app computes the
same features before calling it: the `transform_features` signature of the SavedModel, or
the analyzer outputs (vocabularies, boundaries, means) exported as constants for the app.

quantization:
  dynamic  weights stored as int8, activations float (no data needed); about 3x smaller
           than float TF Lite for this small network, same predictions to ~1e-3.
  int8     full-integer: weights and activations int8, ranges calibrated on a representative
           sample of Transform's output (the training examples); for integer-only chips.
"""
# No `from __future__ import annotations`: TFX reads the component's annotations as types.

import glob
import os
from typing import Iterator, Sequence

import tensorflow as tf
import tf_keras as keras
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

from pipeline.names import TFLITE_MODEL_FILE as MODEL_FILE
from pipeline.names import TRAIN_SPLIT, split_dir_name
from pipeline.settings import TFLITE_QUANTIZATIONS as QUANTIZATIONS  # tests, docs
from pipeline.tfx_api import tfx


def load_network(saved_model_dir: str) -> keras.Model:
    """The Keras network of an exported model (without the Transform layer): it was saved
    with its config, and has only built-in layers, so Keras rebuilds it."""
    return keras.models.load_model(saved_model_dir, compile=False)


def transformed_sample(
    network: keras.Model, file_patterns: Sequence[str], count: int
) -> Iterator[dict[str, tf.Tensor]]:
    """Up to `count` transformed examples, one at a time, as the network's inputs (batch 1)."""
    files = sorted(f for pattern in file_patterns for f in glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {list(file_patterns)}")
    spec = {i.name: tf.io.FixedLenFeature([], i.dtype) for i in network.inputs}
    dataset = (
        tf.data.TFRecordDataset(files, compression_type="GZIP")
        .take(count)
        .batch(1)
        .map(lambda serialized: tf.io.parse_example(serialized, spec))
    )
    yield from dataset


def convert(
    saved_model_dir: str,
    quantization: str,
    representative_patterns: Sequence[str] = (),
    representative_examples: int = 200,
) -> bytes:
    """The TF Lite flatbuffer of the exported model's network, quantized as asked."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"PIPELINE_TFLITE_QUANTIZATION={quantization!r}: expected one of "
            f"{', '.join(QUANTIZATIONS)}"
        )
    network = load_network(saved_model_dir)
    converter = tf.lite.TFLiteConverter.from_keras_model(network)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8":
        if not representative_patterns:
            raise ValueError("int8 quantization needs transformed examples to calibrate on")
        converter.representative_dataset = lambda: transformed_sample(
            network, representative_patterns, representative_examples
        )
        # Integer kernels only: conversion fails rather than leaving a float op behind.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


@component
def TFLiteExporter(  # TFX component names are classes
    pushed_model: InputArtifact[tfx.types.standard_artifacts.PushedModel],
    transformed_examples: InputArtifact[list[tfx.types.standard_artifacts.Examples]],
    tflite_model: OutputArtifact[tfx.types.standard_artifacts.Model],
    quantization: Parameter[str] = "dynamic",
    representative_examples: Parameter[int] = 200,
) -> None:
    """Writes <tflite_model>/model.tflite for the model the Pusher pushed this run; nothing
    (and the custom property `exported` 0) when it pushed none."""
    if not pushed_model.get_int_custom_property("pushed"):
        tflite_model.set_int_custom_property("exported", 0)
        return
    source = pushed_model.uri  # the Pusher's own copy of the model it pushed
    patterns = [os.path.join(a.uri, split_dir_name(TRAIN_SPLIT), "*") for a in transformed_examples]
    flatbuffer = convert(source, quantization, patterns, representative_examples)
    tf.io.gfile.makedirs(tflite_model.uri)
    tmp = os.path.join(tflite_model.uri, MODEL_FILE + ".tmp")
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(flatbuffer)
    tf.io.gfile.rename(tmp, os.path.join(tflite_model.uri, MODEL_FILE), overwrite=True)
    tflite_model.set_int_custom_property("exported", 1)
