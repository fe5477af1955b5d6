"""What the Evaluator and progressive validation compute, and reading their results back:
the metrics, slices and blessing thresholds (from models/features.py and the evaluation
settings)."""

from __future__ import annotations

import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2

from models import features
from pipeline import histogram_metrics
from pipeline.names import (
    EVALUATOR_CANDIDATE,
    PREDICTION_KEY,
    SERVING_DEFAULT_SIGNATURE,
    TRANSFORM_SIGNATURE,
)
from pipeline.settings import EvaluationSettings


def _model_spec(**extra) -> tfma.ModelSpec:
    return tfma.ModelSpec(
        signature_name=SERVING_DEFAULT_SIGNATURE,
        label_key=features.LABEL_KEY,
        prediction_key=PREDICTION_KEY,
        # The label is derived by Transform, so TFMA reads it from the transformed features.
        preprocessing_function_names=[TRANSFORM_SIGNATURE],
        **extra,
    )


def _overall(threshold: tfma.MetricThreshold) -> tfma.PerSliceMetricThreshold:
    """Blessing looks at the whole hold-out; small slices (a rare hour) would be noise."""
    return tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)


def _from_histogram(class_name: str, **kwargs) -> tfma.MetricConfig:
    """One of pipeline/histogram_metrics.py's metrics: TFMA's metric of the same key, read off
    the histogram the AUC and the plots share instead of a combiner of its own."""
    return tfma.MetricConfig(class_name=class_name, module=histogram_metrics.__name__, **kwargs)


def eval_config(settings: EvaluationSettings) -> tfma.EvalConfig:
    """Metrics, slices and the blessing thresholds of the Evaluator."""
    higher = tfma.MetricDirection.HIGHER_IS_BETTER
    return tfma.EvalConfig(
        # Called through its signatures only; naming the type spares TFMA a trial Keras load
        # of the model to find it out.
        model_specs=[_model_spec(model_type="tf_generic")],
        slicing_specs=[
            tfma.SlicingSpec(),
            *(tfma.SlicingSpec(feature_keys=[key]) for key in features.EVAL_SLICES),
        ],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(
                        class_name="AUC",
                        per_slice_thresholds=[
                            _overall(
                                tfma.MetricThreshold(
                                    value_threshold=tfma.GenericValueThreshold(
                                        lower_bound={"value": settings.min_auc}
                                    ),
                                    change_threshold=tfma.GenericChangeThreshold(
                                        direction=higher, absolute={"value": -settings.max_auc_drop}
                                    ),
                                )
                            )
                        ],
                    ),
                    _from_histogram(
                        "HistogramBinaryAccuracy",
                        per_slice_thresholds=[
                            _overall(
                                tfma.MetricThreshold(
                                    value_threshold=tfma.GenericValueThreshold(
                                        lower_bound={"value": settings.min_binary_accuracy}
                                    )
                                )
                            )
                        ],
                    ),
                    _from_histogram("HistogramPrecision"),
                    _from_histogram("HistogramRecall"),
                    tfma.MetricConfig(class_name="AUCPrecisionRecall"),
                    _from_histogram("HistogramCalibration"),
                    # No BinaryCrossEntropy: a per-example combiner of its own (10% of the
                    # Evaluator at 1.5M rows) for a value the Trainer logs (val_loss).
                    # Plots are computed for every slice but read for the overall one (analysis/):
                    # 100 buckets/thresholds draw the same curves as TFMA's default 1,000/10,000.
                    tfma.MetricConfig(class_name="CalibrationPlot", config='{"num_buckets": 100}'),
                    tfma.MetricConfig(
                        class_name="ConfusionMatrixPlot", config='{"num_thresholds": 100}'
                    ),
                    _from_histogram("HistogramMeanLabel"),
                    _from_histogram("HistogramMeanPrediction"),
                ]
            )
        ],
        # The metrics above replace the ones compiled into the Keras model (loss, accuracy,
        # auc again), which TFMA computes by loading the model a second time (~3 s).
        options=tfma.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False)),
    )


def progressive_eval_config() -> tfma.EvalConfig:
    """The Evaluator's model spec (eval_config), overall slice, few metrics: a score
    of the current model, no blessing."""
    return tfma.EvalConfig(
        model_specs=[_model_spec()],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name=name)
                    for name in ("ExampleCount", "AUC", "BinaryAccuracy")
                ]
            )
        ],
    )


def overall_metrics(evaluation_uri: str) -> dict[str, float]:
    """The overall slice's metrics of the evaluated model (TFX names it `candidate` when a
    baseline was evaluated too, else leaves it unnamed). Reads the metrics alone: plots are
    not needed here."""
    for per_slice in tfma.load_metrics(evaluation_uri):
        if per_slice.slice_key.single_slice_keys:
            continue
        return {
            item.key.name: item.value.double_value.value
            for item in per_slice.metric_keys_and_values
            if item.key.model_name in ("", EVALUATOR_CANDIDATE)
            and not item.key.is_diff
            and item.value.HasField("double_value")
        }
    raise ValueError(f"no overall slice in {evaluation_uri}")
