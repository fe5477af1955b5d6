"""The Keras model builds from the hyperparameters and learns on a tiny transformed set."""
import numpy as np
import tensorflow as tf

from models import features, hyperparameters, model


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


def test_training_batches_do_not_depend_on_the_order_beam_wrote_records_in(finished_run, tmp_path):
    import tensorflow_transform as tft
    from tests.pipeline_run import read_records

    (graph,) = finished_run.outputs("Transform", "TransformGraph")[-1:]
    examples = finished_run.outputs("Transform", "Examples")[-1]
    records = read_records(f"{examples.uri}/Split-train/*.gz")
    assert len(records) > 100
    # The same records, written by "another run" in another order and sharding.
    for name, part in (("b", records[::2]), ("a", records[1::2][::-1])):
        with tf.io.TFRecordWriter(str(tmp_path / f"{name}.gz"), "GZIP") as writer:
            for record in part:
                writer.write(record)

    transform_output = tft.TFTransformOutput(graph.uri)

    def first_batches(pattern: str) -> list[np.ndarray]:
        dataset = model.input_dataset([pattern], transform_output, 32, seed=7)
        return [batch[features.transformed_name("fare")].numpy()
                for batch, _ in dataset.take(5)]

    original = first_batches(f"{examples.uri}/Split-train/*.gz")
    rewritten = first_batches(str(tmp_path / "*.gz"))
    for a, b in zip(original, rewritten):
        np.testing.assert_array_equal(a, b)
    # And the seed still shuffles: another seed gives other batches.
    other = model.input_dataset([str(tmp_path / "*.gz")], transform_output, 32, seed=8)
    assert not np.array_equal(next(iter(other))[0][features.transformed_name("fare")].numpy(),
                              original[0])
