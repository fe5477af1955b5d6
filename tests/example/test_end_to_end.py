"""The real pipeline, run by the local runner on a small slice of the data in a temp dir.

The tests run in file order on one pipeline: first run, its outputs, a rerun with no new
data, then a bad span that the anomalies gate must stop.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import features, model
from pipeline.metadata import span_of
from pipeline.pipeline import EXAMPLE_GEN_ID, create_pipeline
from pipeline.spans import mark_complete
from tests.pipeline_run import (
    ROOT,
    PipelineRun,
    new_run,
    read_csv,
    read_records,
    write_csv,
    write_data_slice,
)

# Runs the pipeline several times: the slow tier (`make test-fast` leaves it out).
pytestmark = pytest.mark.slow

# The example's label, as models/features.py declares it: tips > 0.2 * fare.
BIG_TIP_FRACTION = 0.2

SPANS = [1, 2, 3]
ROWS_PER_SPAN = 400
# Components that record executions (resolvers resolve inline and record none).
EXECUTED = [
    "CsvExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "LeakageCheck",
    "AnomaliesGate",
    "WindowExamples",
    "Transform",
    "Tuner",
    "Trainer",
    "Evaluator",
    "Pusher",
]
COMPLETE, CACHED = 3, 5  # mlmd Execution.State


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> PipelineRun:
    tmp_path = tmp_path_factory.mktemp("pipeline")
    write_data_slice(tmp_path / "data", SPANS, ROWS_PER_SPAN)
    run = new_run(tmp_path)
    result = run.run()
    assert result.returncode == 0, result.stderr[-5000:]
    # The runner ends with a summary of the evaluation and the pushed model.
    assert (
        "BLESSED" in result.stdout
        and f"Serving: {run.settings.serving_model_dir}/" in result.stdout
    )
    return run


def _newest_span_examples(run: PipelineRun, split: str) -> list[bytes]:
    (newest,) = [a for a in run.outputs(EXAMPLE_GEN_ID, "Examples") if span_of(a) == SPANS[-1]]
    return read_records(os.path.join(newest.uri, f"Split-{split}", "*.gz"))


def _pushed_model_path(run: PipelineRun) -> str:
    (version,) = run.pushed_versions()
    return os.path.join(run.settings.serving_model_dir, version)


def _labels(serialized: list[bytes]) -> np.ndarray:
    labels = []
    for record in serialized:
        feature = tf.train.Example.FromString(record).features.feature
        tips, fare = feature["tips"].float_list.value, feature["fare"].float_list.value
        labels.append(int(bool(tips) and bool(fare) and tips[0] > BIG_TIP_FRACTION * fare[0]))
    return np.array(labels)


def _raw_inputs(serialized: list[bytes]) -> dict[str, tf.Tensor]:
    """serving_raw's inputs for the same rows: numbers as float64, NaN / "" when missing."""
    columns = {key: [] for key in features.raw_feature_keys()}
    for record in serialized:
        feature = tf.train.Example.FromString(record).features.feature
        for key, values in columns.items():
            kind = feature[key].WhichOneof("kind") if key in feature else None
            found = list(getattr(feature[key], kind).value) if kind else []
            if key in features.STRING_FEATURES:
                values.append(found[0] if found else b"")
            else:
                values.append(float(found[0]) if found else float("nan"))
    return {
        key: tf.constant(values, tf.string if key in features.STRING_FEATURES else tf.float64)
        for key, values in columns.items()
    }


def test_every_component_executed(first_run):
    for node_id in EXECUTED:
        states = [e.last_known_state for e in first_run.executions(node_id)]
        # The schema import also runs in each earlier span's ingest-and-validate run, and is
        # cached after the first of them.
        assert COMPLETE in states and all(s in (COMPLETE, CACHED) for s in states), (
            node_id,
            states,
        )
    # Earlier spans were ingested one per run, then the window fed all of them to Transform,
    # gathered into one artifact.
    assert sorted(span_of(a) for a in first_run.outputs(EXAMPLE_GEN_ID, "Examples")) == SPANS
    (window,) = first_run.outputs("WindowExamples", "Examples")
    assert json.loads(window.custom_properties["spans"].string_value) == SPANS
    assert len(first_run.outputs("Transform", "Examples")) == 1
    # Every component of the pipeline definition is accounted for.
    defined = {c.id for c in create_pipeline(first_run.settings).components}
    assert set(EXECUTED) <= defined


def test_pushed_model_predicts_the_hold_out(first_run):
    serialized = _newest_span_examples(first_run, "eval")
    loaded = tf.saved_model.load(_pushed_model_path(first_run))
    scores = loaded.signatures["serving_default"](examples=tf.constant(serialized))
    probabilities = scores[model.PREDICTION_KEY].numpy().ravel()
    assert len(probabilities) == len(serialized) > 50
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    auc = keras.metrics.AUC()
    auc.update_state(_labels(serialized), probabilities)
    assert auc.result().numpy() > 0.75


def test_serving_signatures_and_transform_output_agree(first_run):
    """No training/serving skew: the tf.Example signature, the raw-value signature and the
    model applied to Transform's own (Beam-computed) output give the same predictions."""
    serialized = [
        record
        for artifact in first_run.outputs(EXAMPLE_GEN_ID, "Examples")
        for record in read_records(os.path.join(artifact.uri, "Split-train", "*.gz"))
    ]
    assert len(serialized) > 600
    path = _pushed_model_path(first_run)
    loaded = tf.saved_model.load(path)
    from_examples = loaded.signatures["serving_default"](examples=tf.constant(serialized))
    from_raw = loaded.signatures[model.SERVING_RAW_SIGNATURE](**_raw_inputs(serialized))
    np.testing.assert_allclose(
        from_raw[model.PREDICTION_KEY].numpy(),
        from_examples[model.PREDICTION_KEY].numpy(),
        atol=1e-5,
    )

    # Transform's output: the whole window's train split (every span's rows).
    (transformed_artifact,) = first_run.outputs("Transform", "Examples")
    transformed = read_records(os.path.join(transformed_artifact.uri, "Split-train", "*.gz"))
    assert len(transformed) == len(serialized)
    keras_model = keras.models.load_model(path)
    spec = {
        key: tf.io.FixedLenFeature(
            [],
            tf.float32
            if key in {features.transformed_name(k) for k in features.NUMERIC_FEATURES}
            else tf.int64,
        )
        for key in model.model_input_keys()
    }
    parsed = tf.io.parse_example(tf.constant(transformed), spec)
    from_transform = keras_model(parsed).numpy().ravel()
    # Beam may write rows in another order: compare the sorted predictions.
    np.testing.assert_allclose(
        np.sort(from_transform),
        np.sort(from_examples[model.PREDICTION_KEY].numpy().ravel()),
        atol=1e-5,
    )


def test_rerun_with_no_new_data_is_cached_and_pushes_nothing(first_run):
    versions = first_run.pushed_versions()
    counts = {node: len(first_run.executions(node)) for node in EXECUTED}
    # Nothing changed: the runner says so before TFX loads, and runs nothing.
    result = first_run.run()
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"{first_run.settings.name} is up to date" in result.stdout
    assert "Latest evaluation (newest span's hold-out): auc " in result.stdout
    assert {node: len(first_run.executions(node)) for node in EXECUTED} == counts
    # Forced: TFX's cache serves every component.
    result = first_run.run("--force")
    assert result.returncode == 0, result.stderr[-5000:]
    for node in ("Transform", "Tuner", "Trainer", "Evaluator", "Pusher"):
        executions = first_run.executions(node)
        assert len(executions) == counts[node] + 1
        assert executions[-1].last_known_state == CACHED, node
    assert first_run.pushed_versions() == versions


def test_without_tuning_the_trainer_reuses_the_last_tuning_result(first_run):
    """With the Tuner off, the Trainer gets the last tuning result: the very same inputs as
    the tuned run, so its execution is reused instead of training with the defaults."""
    untuned = PipelineRun(first_run.settings, {**first_run.env, "PIPELINE_ENABLE_TUNING": "0"})
    tuner_runs = len(first_run.executions("Tuner"))
    result = untuned.run()
    assert result.returncode == 0, result.stderr[-5000:]
    assert len(first_run.executions("Tuner")) == tuner_runs
    assert first_run.executions("Trainer")[-1].last_known_state == CACHED


def _model_digest(run: PipelineRun) -> str:
    with open(os.path.join(_pushed_model_path(run), "saved_model.pb"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_anomalies_gate_stops_a_bad_span_before_training(first_run):
    rows = read_csv(ROOT / "data" / "span-4" / "data.csv")
    bad = [dict(row) for row in rows[:200]]
    bad[0]["payment_type"] = "Bitcoin"  # an unseen category
    bad[1]["fare"] = "twelve"  # a string in a numeric column
    for row in bad:
        del row["trip_miles"]  # a missing column
    write_csv(Path(first_run.settings.data.data_dir) / "span-4" / "data.csv", bad)
    mark_complete(str(Path(first_run.settings.data.data_dir) / "span-4"))

    versions, digest = first_run.pushed_versions(), _model_digest(first_run)
    trained = len(first_run.executions("Trainer"))
    result = first_run.run()

    assert result.returncode != 0
    message = result.stderr + result.stdout
    assert "DataAnomaliesError" in message and "span 4" in message
    for feature, anomaly in [
        ("payment_type", "Unexpected string values"),
        ("fare", "Unexpected data type"),
        ("trip_miles", "Column dropped"),
    ]:
        assert f"feature '{feature}': {anomaly}" in message, (feature, message[-3000:])
    assert len(first_run.executions("Transform")) == len(first_run.executions("Trainer"))
    assert len(first_run.executions("Trainer")) == trained
    assert first_run.pushed_versions() == versions
    assert _model_digest(first_run) == digest
