"""The Keras model builds from the hyperparameters and learns on a tiny transformed set."""

import numpy as np
import pytest
import tensorflow as tf

from models import features, hyperparameters, model, tuner

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration


def _tiny_transformed_set(rows: int = 512, seed: int = 0):
    """Transformed-looking inputs where paying by card (id 1) and a short trip mean a big tip."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for key in features.NUMERIC_FEATURES:
        inputs[features.transformed_name(key)] = rng.normal(size=rows).astype("float32")
        inputs[features.bucketized_name(key)] = rng.integers(0, features.NUMERIC_BUCKETS, rows)
    for key in features.BUCKET_FEATURES:
        inputs[features.transformed_name(key)] = rng.integers(0, features.NUM_BUCKETS, rows)
    for key, size in features.IDENTITY_FEATURES.items():
        inputs[features.transformed_name(key)] = rng.integers(0, size, rows)
    for key in features.VOCAB_FEATURES:
        inputs[features.transformed_name(key)] = rng.integers(0, features.vocab_size(key), rows)
    card = inputs[features.transformed_name("payment_type")] == 1
    short = inputs[features.transformed_name("fare")] < 0
    label = (card & short).astype("int64")
    return inputs, label


def test_model_has_one_input_per_transformed_feature():
    built = model.build_model(hyperparameters.search_space())
    assert sorted(built.input_names) == sorted(model.model_input_keys())
    assert built.output_shape == (None, 1)


def test_tuned_values_override_defaults_and_unknown_names_are_ignored():
    tuned = hyperparameters.search_space()
    tuned.values.update(hidden_units=128, num_layers=3)
    hp = hyperparameters.from_config({**tuned.get_config()})
    assert hp.get("hidden_units") == 128 and hp.get("num_layers") == 3
    assert hp.get("learning_rate") == 1e-3  # the default, untouched
    assert hyperparameters.from_config(None).get("hidden_units") == 64


def test_loss_falls_when_training_a_few_steps():
    tf.keras.utils.set_random_seed(1)
    inputs, label = _tiny_transformed_set()
    hp = hyperparameters.search_space()
    built = model.build_model(hp)
    before = built.evaluate(inputs, label, verbose=0, return_dict=True)
    built.fit(inputs, label, batch_size=64, epochs=8, verbose=0)
    after = built.evaluate(inputs, label, verbose=0, return_dict=True)
    assert after["loss"] < 0.6 * before["loss"], (before, after)
    assert after["auc"] > 0.9


def test_the_training_step_is_traced_once():
    """Adam's slot variables exist before the first step: a tf.function that creates
    variables in its first trace is traced a second time (a second, costly trace per model)."""
    inputs, label = _tiny_transformed_set()
    built = model.build_model(hyperparameters.search_space())
    built.fit(inputs, label, batch_size=64, epochs=2, verbose=0)
    assert built.train_tf_function.experimental_get_tracing_count() == 1


def test_the_tuner_tries_the_defaults_first(tmp_path):
    space = hyperparameters.search_space()
    search = tuner.KerasTwoTuner(
        oracle=tuner.DefaultsFirstOracle(
            objective=tuner.OBJECTIVE, hyperparameters=space, max_trials=3, seed=42
        ),
        train=None,
        evaluation=None,
        steps=1,
        eval_steps=1,
        directory=str(tmp_path),
        project_name="search",
        overwrite=True,
    )
    first = search.oracle.create_trial("tuner0")
    assert first.hyperparameters.values == space.values
    search.oracle.end_trial(first)
    second = search.oracle.create_trial("tuner0")
    assert second.hyperparameters.values != space.values


def _nudged(record: bytes) -> bytes:
    """The record with every float one bit larger, as another run's Transform may write it
    (Beam's combiners add the z-score statistics in no fixed order)."""
    example = tf.train.Example.FromString(record)
    for feature in example.features.feature.values():
        values = np.array(feature.float_list.value, dtype=np.float32)
        if values.size:
            feature.float_list.value[:] = np.nextafter(values, np.float32(np.inf)).tolist()
    return example.SerializeToString()


def test_training_batches_do_not_depend_on_the_order_beam_wrote_records_in(finished_run, tmp_path):
    import tensorflow_transform as tft

    from tests.pipeline_run import read_records

    (graph,) = finished_run.outputs("Transform", "TransformGraph")[-1:]
    examples = finished_run.outputs("Transform", "Examples")[-1]
    records = read_records(f"{examples.uri}/Split-train/*.gz")
    assert len(records) > 100
    # The same records, written by "another run" in another order and sharding, and by a
    # run whose floats differ in their last bit.
    rewrites = {
        "reordered": {"b": records[::2], "a": records[1::2][::-1]},
        "nudged": {"a": [_nudged(r) for r in records[::-1]]},
    }
    for rewrite, files in rewrites.items():
        for name, part in files.items():
            (tmp_path / rewrite).mkdir(exist_ok=True)
            with tf.io.TFRecordWriter(str(tmp_path / rewrite / f"{name}.gz"), "GZIP") as writer:
                for record in part:
                    writer.write(record)

    transform_output = tft.TFTransformOutput(graph.uri)
    fare, payment = features.transformed_name("fare"), features.transformed_name("payment_type")

    def first_batches(pattern: str, seed: int = 7) -> list[dict[str, np.ndarray]]:
        dataset = model.input_dataset([pattern], transform_output, 32, seed=seed)
        return [{k: batch[k].numpy() for k in (fare, payment)} for batch, _ in dataset.take(5)]

    original = first_batches(f"{examples.uri}/Split-train/*.gz")
    for a, b in zip(original, first_batches(str(tmp_path / "reordered" / "*.gz"))):
        np.testing.assert_array_equal(a[fare], b[fare])
    for a, b in zip(original, first_batches(str(tmp_path / "nudged" / "*.gz"))):
        assert not np.array_equal(a[fare], b[fare])  # the nudge is there...
        np.testing.assert_allclose(a[fare], b[fare], rtol=1e-6)  # ...and the order is the same
        np.testing.assert_array_equal(a[payment], b[payment])
    # And the seed still shuffles: another seed gives other batches.
    other = first_batches(str(tmp_path / "reordered" / "*.gz"), seed=8)
    assert not np.array_equal(other[0][fare], original[0][fare])


def test_autograph_leaves_keras_internals_alone_but_converts_user_code():
    """pipeline/runtime.py: tracing fit() must not re-compile tf_keras (12 s per trace)."""
    import tf_keras as keras
    from tensorflow.python.autograph.impl import conversion

    assert conversion.is_allowlisted(keras.layers.Dense.call)
    assert conversion.is_allowlisted(keras.Model.train_step)
    assert not conversion.is_allowlisted(model.build_model)
