"""PIPELINE_TRANSFORM_MATERIALIZE: when Transform writes the transformed examples, and a whole
run where it writes none (the Tuner and the Trainer transform the raw window themselves)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from models import model
from pipeline import metadata
from pipeline.names import RAW_EXAMPLES_CONFIG, WINDOW_EXAMPLES_ID
from pipeline.pipeline import EXAMPLE_GEN_ID, create_pipeline
from pipeline.settings import PipelineSettings
from tests.pipeline_run import new_run, read_records, write_data_slice


def _wiring(settings: PipelineSettings) -> dict:
    """Whether Transform materializes, and what the Tuner and the Trainer read."""
    nodes = {c.id: c for c in create_pipeline(settings).components}
    config = nodes["Trainer"].exec_properties["custom_config"]
    return {
        "materialized": "transformed_examples" in nodes["Transform"].outputs,
        "trainer_reads": nodes["Trainer"].inputs["examples"].producer_component_id,
        "tuner_reads": nodes["Tuner"].inputs["examples"].producer_component_id,
        "raw_flag": f'"{RAW_EXAMPLES_CONFIG}": 1' in config,
    }


MATERIALIZED = {
    "materialized": True,
    "trainer_reads": "Transform",
    "tuner_reads": "Transform",
    "raw_flag": False,
}
RAW = {
    "materialized": False,
    "trainer_reads": WINDOW_EXAMPLES_ID,
    "tuner_reads": WINDOW_EXAMPLES_ID,
    "raw_flag": True,
}


@pytest.mark.parametrize(
    "env, expected",
    [
        # The shipped data (about 2 MB) is far below the 120 MB threshold.
        ({}, MATERIALIZED),
        # The same data over a threshold below its size.
        ({"PIPELINE_TRANSFORM_MATERIALIZE_MIN_MB": "1"}, RAW),
        ({"PIPELINE_TRANSFORM_MATERIALIZE": "false"}, RAW),
        ({"PIPELINE_TRANSFORM_MATERIALIZE": "0"}, RAW),
        (
            {
                "PIPELINE_TRANSFORM_MATERIALIZE": "true",
                "PIPELINE_TRANSFORM_MATERIALIZE_MIN_MB": "1",
            },
            MATERIALIZED,
        ),
        # Forced where only transformed examples will do, whatever the setting.
        (
            {
                "PIPELINE_TRANSFORM_MATERIALIZE_MIN_MB": "1",
                "PIPELINE_DISTRIBUTION_STRATEGY": "parameter_server",
            },
            MATERIALIZED,
        ),
        (
            {
                "PIPELINE_TRANSFORM_MATERIALIZE": "false",
                "PIPELINE_DISTRIBUTION_STRATEGY": "mirrored",
            },
            MATERIALIZED,
        ),
        (
            {"PIPELINE_TRANSFORM_MATERIALIZE": "false", "PIPELINE_TFLITE_EXPORT": "1"},
            MATERIALIZED,
        ),
    ],
)
def test_auto_materializes_small_data_and_raw_needs_the_default_strategy(tmp_path, env, expected):
    settings = PipelineSettings.load(env, output_dir=str(tmp_path / "out"))
    assert _wiring(settings) == expected


def test_the_tflite_exporter_reads_materialized_examples(tmp_path):
    settings = PipelineSettings.load(
        {"PIPELINE_TRANSFORM_MATERIALIZE": "false", "PIPELINE_TFLITE_EXPORT": "1"},
        output_dir=str(tmp_path / "out"),
    )
    (exporter,) = [c for c in create_pipeline(settings).components if "TFLite" in c.id]
    assert exporter.inputs["transformed_examples"].producer_component_id == "Transform"


def test_a_bad_value_is_named():
    with pytest.raises(ValueError, match="PIPELINE_TRANSFORM_MATERIALIZE='sometimes'"):
        PipelineSettings.load({"PIPELINE_TRANSFORM_MATERIALIZE": "sometimes"})


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory):
    """Two 400-row spans, the Tuner on, Transform materializing nothing."""
    tmp_path = tmp_path_factory.mktemp("raw-run")
    write_data_slice(tmp_path / "data", [1, 2], 400)
    run = new_run(tmp_path, PIPELINE_TRANSFORM_MATERIALIZE="false")
    result = run.run()
    assert result.returncode == 0, result.stderr[-5000:]
    return run


def _input_examples(run, node_id: str) -> list[int]:
    """Ids of the Examples artifacts the node's executions read."""
    store = metadata.open_store(run.settings)
    executions = run.executions(node_id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    ids = [e.artifact_id for e in events if e.type == e.INPUT]
    return [a.id for a in store.get_artifacts_by_id(ids) if a.type == "Examples"]


@pytest.mark.slow
def test_a_run_without_materialized_examples_trains_and_pushes(raw_run):
    assert raw_run.outputs("Transform", "Examples") == []
    (graph,) = raw_run.outputs("Transform", "TransformGraph")
    assert not os.path.exists(
        os.path.join(raw_run.settings.pipeline_root, "Transform", "transformed_examples")
    )
    assert os.path.isdir(graph.uri)
    (window,) = raw_run.outputs(WINDOW_EXAMPLES_ID, "Examples")
    assert _input_examples(raw_run, "Trainer") == [window.id]
    assert _input_examples(raw_run, "Tuner") == [window.id]
    (version,) = raw_run.pushed_versions()

    # The pushed model on the newest span's hold-out, against the trained network applied to
    # those rows as Transform's graph transforms them.
    (newest,) = [a for a in raw_run.outputs(EXAMPLE_GEN_ID, "Examples") if metadata.span_of(a) == 2]
    serialized = read_records(os.path.join(newest.uri, "Split-eval", "*.gz"))
    assert len(serialized) > 50
    path = os.path.join(raw_run.settings.serving_model_dir, version)
    served = tf.saved_model.load(path).signatures["serving_default"](
        examples=tf.constant(serialized)
    )[model.PREDICTION_KEY]
    transform_output = tft.TFTransformOutput(graph.uri)
    transformed = transform_output.transform_features_layer()(
        tf.io.parse_example(tf.constant(serialized), transform_output.raw_feature_spec())
    )
    network = keras.models.load_model(path)
    expected = network({k: transformed[k] for k in model.model_input_keys()})
    np.testing.assert_allclose(
        np.ravel(served.numpy()), np.ravel(expected.numpy()), atol=1e-5, rtol=0
    )


def _all_rows(dataset: tf.data.Dataset) -> np.ndarray:
    """Every (features, label) row of the dataset as one float64 matrix, rows sorted."""
    columns = {}
    for inputs, label in dataset:
        for key, value in {**inputs, "label": label}.items():
            columns.setdefault(key, []).append(np.asarray(value, np.float64).reshape(-1))
    matrix = np.stack([np.concatenate(columns[k]) for k in sorted(columns)], axis=1)
    return matrix[np.lexsort(np.round(matrix, 4).T[::-1])]


@pytest.mark.integration
def test_raw_examples_give_the_model_the_transformed_examples_inputs(finished_run):
    """The Trainer's raw input path (Transform's graph on raw batches) yields the rows Beam's
    Transform materialized: same model inputs, same labels."""
    (graph,) = finished_run.outputs("Transform", "TransformGraph")[-1:]
    transformed = finished_run.outputs("Transform", "Examples")[-1]
    (window,) = finished_run.outputs(WINDOW_EXAMPLES_ID, "Examples")[-1:]
    transform_output = tft.TFTransformOutput(graph.uri)

    def rows(uri: str, raw: bool) -> np.ndarray:
        dataset = model.input_dataset(
            [os.path.join(uri, "Split-train", "*")],
            transform_output,
            64,
            shuffle=False,
            repeat=False,
            raw=raw,
        )
        return _all_rows(dataset)

    from_raw, from_transform = rows(window.uri, True), rows(transformed.uri, False)
    assert from_raw.shape == from_transform.shape and len(from_raw) > 500
    np.testing.assert_allclose(from_raw, from_transform, atol=1e-5, rtol=0)


@pytest.mark.integration
def test_raw_training_batches_do_not_depend_on_the_order_records_were_written_in(
    finished_run, tmp_path
):
    (graph,) = finished_run.outputs("Transform", "TransformGraph")[-1:]
    (window,) = finished_run.outputs(WINDOW_EXAMPLES_ID, "Examples")[-1:]
    records = read_records(os.path.join(window.uri, "Split-train", "*"))
    # The same records in other files, in another order.
    for name, part in {"b": records[::2], "a": records[1::2][::-1]}.items():
        with tf.io.TFRecordWriter(str(tmp_path / f"{name}.gz"), "GZIP") as writer:
            for record in part:
                writer.write(record)
    transform_output = tft.TFTransformOutput(graph.uri)

    def first_batches(pattern: str, seed: int = 7) -> list[np.ndarray]:
        dataset = model.input_dataset([pattern], transform_output, 32, seed=seed, raw=True)
        return [_all_rows(tf.data.Dataset.from_tensors(b)) for b in dataset.take(5)]

    original = first_batches(os.path.join(window.uri, "Split-train", "*"))
    rewritten = first_batches(str(tmp_path / "*.gz"))
    for a, b in zip(original, rewritten):
        np.testing.assert_array_equal(a, b)
    # The seed still shuffles.
    assert not np.array_equal(first_batches(str(tmp_path / "*.gz"), seed=8)[0], original[0])
