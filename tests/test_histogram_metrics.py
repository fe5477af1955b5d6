"""pipeline/histogram_metrics.py against TFMA's own metrics of the same names, on labels and
predictions made up here (no model): the same keys, the same values up to the histogram's
resolution, and the Evaluator's config computes them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import tensorflow_model_analysis as tfma

from pipeline import evaluation, histogram_metrics
from pipeline.settings import EvaluationSettings

TFMA_CLASSES = {
    "BinaryAccuracy": "HistogramBinaryAccuracy",
    "Precision": "HistogramPrecision",
    "Recall": "HistogramRecall",
    "MeanLabel": "HistogramMeanLabel",
    "MeanPrediction": "HistogramMeanPrediction",
    "Calibration": "HistogramCalibration",
}


def _metrics(frame: pd.DataFrame, configs: list[tfma.MetricConfig]) -> dict[tuple, float]:
    """{(slice, metric name): value} for the overall slice and each `group` value."""
    config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(label_key="label", prediction_key="prediction")],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=["group"])],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[tfma.MetricConfig(class_name="AUC"), *configs],
            )
        ],
    )
    result = tfma.analyze_raw_data(frame, config)
    values = {}
    for slice_key, by_output in result.slicing_metrics:
        for name, value in by_output[""][""].items():
            values[(slice_key, name)] = value["doubleValue"]
    return values


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = 4_000
    prediction = rng.uniform(0, 1, rows)
    # On and just above the threshold, where the histogram's 1e-4 buckets are coarser
    # than an exact comparison.
    prediction[:20] = 0.5
    prediction[20:30] = 0.50005
    prediction[30:40] = 0.5002
    label = (rng.uniform(0, 1, rows) < prediction * 0.8 + 0.1).astype(float)
    group = rng.choice(["a", "b", "c"], rows)
    return pd.DataFrame({"label": label, "prediction": prediction, "group": group})


@pytest.fixture(scope="module")
def both(frame) -> tuple[dict, dict]:
    ours = _metrics(
        frame,
        [
            tfma.MetricConfig(class_name=name, module=histogram_metrics.__name__)
            for name in TFMA_CLASSES.values()
        ],
    )
    theirs = _metrics(frame, [tfma.MetricConfig(class_name=name) for name in TFMA_CLASSES])
    return ours, theirs


def test_the_same_metric_keys_as_tfma(both):
    ours, theirs = both
    assert set(ours) == set(theirs)
    assert {name for _, name in ours} == {
        "auc",
        "binary_accuracy",
        "precision",
        "recall",
        "mean_label",
        "mean_prediction",
        "calibration",
    }
    # Overall plus the three groups.
    assert len({slice_key for slice_key, _ in ours}) == 4


def test_sums_are_exact(both, frame):
    ours, theirs = both
    for key, value in ours.items():
        if key[1] in ("mean_label", "mean_prediction", "calibration"):
            assert value == pytest.approx(theirs[key], rel=1e-12), key
    overall = ((), "mean_label")
    assert ours[overall] == pytest.approx(frame.label.mean(), rel=1e-12)


def test_threshold_metrics_differ_only_by_the_predictions_within_one_bucket(both, frame):
    """TFMA counts 0.50005 as positive; the histogram puts it with 0.5 (negative). The ten
    such rows move accuracy by at most 10 / rows; nothing else differs."""
    ours, theirs = both
    positive = frame.prediction > 0.5
    within_bucket = (frame.prediction > 0.5) & (frame.prediction < 0.5001)
    assert within_bucket.sum() == 10
    exact_accuracy = ((positive.astype(float)) == frame.label).mean()
    assert theirs[((), "binary_accuracy")] == pytest.approx(exact_accuracy, abs=1e-12)
    moved = frame[within_bucket]
    # Counted negative instead of positive: right where the label is 0, wrong where it is 1.
    shift = ((moved.label == 0).sum() - (moved.label == 1).sum()) / len(frame)
    assert shift != 0
    assert ours[((), "binary_accuracy")] == pytest.approx(exact_accuracy + shift, abs=1e-12)
    for (slice_key, name), value in ours.items():
        if name in ("binary_accuracy", "precision", "recall"):
            assert abs(value - theirs[(slice_key, name)]) <= 10 / 1_000, (slice_key, name)
            assert 0 < value < 1 and not math.isnan(value)


def test_the_evaluator_config_uses_them_and_drops_tfmas_combiners():
    config = evaluation.eval_config(EvaluationSettings())
    classes = {m.class_name: m.module for spec in config.metrics_specs for m in spec.metrics}
    for tfma_class, ours in TFMA_CLASSES.items():
        assert tfma_class not in classes
        assert classes[ours] == "pipeline.histogram_metrics"
    # The blessing threshold sits on the accuracy read off the histogram, under its usual key.
    accuracy = next(
        m
        for spec in config.metrics_specs
        for m in spec.metrics
        if m.class_name == "HistogramBinaryAccuracy"
    )
    assert accuracy.per_slice_thresholds[0].threshold.value_threshold.lower_bound.value == (
        EvaluationSettings().min_binary_accuracy
    )
    assert "BinaryCrossEntropy" not in classes
