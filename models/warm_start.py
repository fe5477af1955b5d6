"""Warm start: a new model starts from the weights of the model being served (the Trainer's
`base_model`), so a retrain on a slightly moved window needs fewer steps.

Layers are matched by name. A vocabulary's embedding rows are carried over by token, since a
rolling window reorders and extends vocabularies all the time; anything else that differs
(a model input, a layer shape, hyperparameters, a vocabulary that lost most of its tokens)
means a fresh start, said in the log.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from absl import logging

from models import features

# When less than this share of the base model's tokens is still in the vocabulary, the
# vocabulary was replaced rather than updated (renamed categories, another column): its
# trained rows no longer apply. New tokens alone are normal on a growing window.
MIN_KEPT_TOKEN_SHARE = 0.5


def warm_start(
    model: keras.Model, base_model_dir: str, tf_transform_output: tft.TFTransformOutput
) -> bool:
    """Copies the base model's weights into `model` (built, same hyperparameters); returns
    False, leaving `model` as initialised, when they do not fit."""
    reason = _load_and_copy(model, base_model_dir, tf_transform_output)
    if reason:
        logging.warning("Warm start: fresh start instead of %s: %s", base_model_dir, reason)
        return False
    logging.info("Warm start: starting from the weights of %s", base_model_dir)
    return True


def _load_and_copy(
    model: keras.Model, base_model_dir: str, tf_transform_output: tft.TFTransformOutput
) -> Optional[str]:
    """None when done, else why not (nothing in `model` is changed then)."""
    try:
        base = keras.models.load_model(base_model_dir, compile=False)
    except (OSError, ValueError, TypeError) as error:
        return f"cannot load it as a Keras model ({error})"
    if sorted(base.input_names) != sorted(model.input_names):
        return (
            f"the model's inputs changed: {sorted(set(base.input_names) ^ set(model.input_names))}"
            " are in one model only"
        )
    embeddings = {features.transformed_name(k) + "_embedding": k for k in features.VOCAB_FEATURES}
    new_weights = {}
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        try:
            old = base.get_layer(layer.name).get_weights()
        except ValueError:
            return f"layer {layer.name!r} is not in the base model"
        if layer.name in embeddings:
            key = embeddings[layer.name]
            old_vocab = _read_vocabulary(os.path.join(base_model_dir, "assets", key))
            if old_vocab is None:
                return f"the base model has no vocabulary file for {key!r}"
            mapped = remap_vocabulary_rows(
                old[0], old_vocab, tf_transform_output.vocabulary_by_name(key), weights[0]
            )
            if mapped is None:
                return (
                    f"the Transform vocabulary of {key!r} changed: fewer than "
                    f"{MIN_KEPT_TOKEN_SHARE:.0%} of the base model's tokens are in it"
                )
            new_weights[layer.name] = [mapped]
            continue
        old = _split_like_shards(old, weights)
        if [w.shape for w in old] != [w.shape for w in weights]:
            return (
                f"layer {layer.name!r} changed shape ({[w.shape for w in old]} -> "
                f"{[w.shape for w in weights]}): other hyperparameters or inputs"
            )
        new_weights[layer.name] = old
    for name, weights in new_weights.items():
        model.get_layer(name).set_weights(weights)
    return None


def _split_like_shards(old: list[np.ndarray], weights: list[np.ndarray]) -> list[np.ndarray]:
    """A whole table split by rows like `weights`, when `weights` are the shards of one
    variable of the same total shape (parameter_server's partitioner splits large tables;
    the saved base model holds them whole); else `old` unchanged."""
    if len(old) != 1 or len(weights) < 2 or old[0].ndim < 1:
        return old
    if any(w.shape[1:] != old[0].shape[1:] for w in weights) or (
        sum(w.shape[0] for w in weights) != old[0].shape[0]
    ):
        return old
    return np.split(old[0], np.cumsum([w.shape[0] for w in weights])[:-1])


def _read_vocabulary(path: str) -> Optional[list[bytes]]:
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read().splitlines()


def remap_vocabulary_rows(
    old_rows: np.ndarray, old_vocab: list[bytes], new_vocab: list[bytes], fresh_rows: np.ndarray
) -> Optional[np.ndarray]:
    """Embedding rows for `new_vocab`: each token known before gets its old row, new tokens
    keep their fresh rows, the out-of-vocabulary rows (right after the vocabulary, see
    tft.compute_and_apply_vocabulary) move with it. None when the vocabulary lost most of the
    base model's tokens."""
    kept = set(new_vocab)
    if old_vocab and sum(t in kept for t in old_vocab) < MIN_KEPT_TOKEN_SHARE * len(old_vocab):
        return None
    rows = fresh_rows.copy()
    old_ids = {token: i for i, token in enumerate(old_vocab)}
    for new_id, token in enumerate(new_vocab):
        if token in old_ids and old_ids[token] < len(old_rows) and new_id < len(rows):
            rows[new_id] = old_rows[old_ids[token]]
    for oov in range(features.NUM_OOV_BUCKETS):
        if len(old_vocab) + oov < len(old_rows) and len(new_vocab) + oov < len(rows):
            rows[len(new_vocab) + oov] = old_rows[len(old_vocab) + oov]
    return rows
