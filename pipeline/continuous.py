"""Continuous training nodes: the model currently served (for warm start and progressive
validation), progressive validation itself, and drift against the previous span.

They need TFX to resolve inputs from MLMD with custom strategies (`PipelineSettings.resolvers ==
"any"`: local and Airflow); `create_pipeline` adds them through `continuous_nodes`."""

import dataclasses
import os
import tempfile
from typing import List, Optional

import ml_metadata as mlmd
import tensorflow as tf
import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx import v1 as tfx
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy,
)
from tfx.utils import io_utils, path_utils

from models import features, model
from pipeline import rejections
from pipeline.gate import ANOMALIES_FILE, describe_anomalies
from pipeline.settings import PipelineSettings
from pipeline.summary import overall_metrics

CURRENT_MODEL_RESOLVER_ID = "current_model_resolver"
PROGRESSIVE_VALIDATION_ID = "ProgressiveValidation"
DRIFT_CHECK_ID = "DriftCheck"
NEW_SPAN_KEY = "new_span"
# Custom properties on ProgressiveValidation's output (read by scripts/replay.py).
AUC_PROPERTY, SPAN_PROPERTY, MODEL_ID_PROPERTY = "auc", "span", "model_id"


class CurrentModelStrategy(LatestBlessedModelStrategy):
    """The latest blessed model that existed before this run's span was ingested: the model
    being served when the span arrived.

    It is the Trainer's warm start and what progressive validation scores on the new span.
    Models created after the span was ingested (by an earlier run on this same span) are
    left out, so a rerun with no new data gets the same inputs and stays cached."""

    def resolve_artifacts(self, store: mlmd.MetadataStore,
                          input_dict: dict[str, list[types.Artifact]]
                          ) -> Optional[dict[str, list[types.Artifact]]]:
        new_span = newest_examples(input_dict[NEW_SPAN_KEY])
        inputs = {key: artifacts for key, artifacts in input_dict.items() if key != NEW_SPAN_KEY}
        if new_span is not None:
            # MLMD ids grow with creation time, across types.
            inputs = {key: [a for a in artifacts
                            if not isinstance(a, tfx.types.standard_artifacts.Model)
                            or a.id < new_span.id]
                      for key, artifacts in inputs.items()}
        result = super().resolve_artifacts(store, inputs)
        return {**result, NEW_SPAN_KEY: [new_span] if new_span else []}


def newest_examples(examples: list[types.Artifact]) -> Optional[types.Artifact]:
    """This run's span. The local runner passes exactly that; Airflow's legacy resolver passes
    every run's ExampleGen output, of which this run's is the newest span (newest id)."""
    if not examples:
        return None
    return max(examples, key=lambda a: (a.get_int_custom_property("span"), a.id))


def current_model_resolver(example_gen: tfx.types.BaseComponent) -> tfx.dsl.Resolver:
    return tfx.dsl.Resolver(
        strategy_class=CurrentModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        **{NEW_SPAN_KEY: example_gen.outputs["examples"]},
    ).with_id(CURRENT_MODEL_RESOLVER_ID)


def newest_spans(artifacts: list[types.Artifact], num_spans: int,
                 start_span: int = 0) -> list[types.Artifact]:
    """The artifacts of the newest `num_spans` distinct spans from `start_span` on, newest
    span first (SpanRangeStrategy's order); of a span ingested twice, the newest artifact."""
    by_span: dict[int, types.Artifact] = {}
    for artifact in artifacts:
        span = artifact.get_int_custom_property("span")
        if span >= start_span and (span not in by_span or artifact.id > by_span[span].id):
            by_span[span] = artifact
    return [by_span[span] for span in sorted(by_span, reverse=True)[:num_spans]]


class AcceptedSpanRangeStrategy(tfx.dsl.experimental.SpanRangeStrategy):
    """SpanRangeStrategy (the training window) over the spans no check rejected
    (pipeline/rejections.py): a rolling range is the newest `num_spans` *accepted* spans,
    reaching back past rejected ones, where the stock strategy takes span numbers
    newest-N+1..newest and a rejected span would shrink the window."""

    def __init__(self, range_config, rejections_dir: str = ""):
        super().__init__(range_config)
        self._rejections_dir = rejections_dir

    def resolve_artifacts(self, store: mlmd.MetadataStore,
                          input_dict: dict[str, list[types.Artifact]]
                          ) -> Optional[dict[str, list[types.Artifact]]]:
        rejected = rejections.rejected_spans(self._rejections_dir)
        accepted = {key: [a for a in artifacts
                          if a.get_int_custom_property("span") not in rejected]
                    for key, artifacts in input_dict.items()}
        if not self._range_config.HasField("rolling_range"):
            return super().resolve_artifacts(store, accepted)
        rolling = self._range_config.rolling_range
        result = {key: newest_spans(artifacts, rolling.num_spans, rolling.start_span_number)
                  for key, artifacts in accepted.items()}
        return result if all(result.values()) else None


# ---- Progressive validation ----------------------------------------------------------------

def progressive_eval_config() -> tfma.EvalConfig:
    """The Evaluator's model spec (pipeline.eval_config), overall slice, few metrics: a score
    of the current model, no blessing."""
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name="serving_default", label_key=features.LABEL_KEY,
            prediction_key=model.PREDICTION_KEY,
            preprocessing_function_names=[model.TRANSFORM_SIGNATURE])],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name=name)
            for name in ("ExampleCount", "AUC", "BinaryAccuracy")])])


@tfx.dsl.components.component
def ProgressiveValidation(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    # Output keys differ from the Evaluator's and ExampleValidator's: Airflow's legacy driver
    # names artifacts <output key>:<run id>, and MLMD wants names unique per type.
    current_model_evaluation: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.ModelEvaluation],
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model] = None,
    split: tfx.dsl.components.Parameter[str] = "eval",
) -> None:
    """Scores the model being served on the new span before anything trains on it (the same
    hold-out the candidate is scored on, so the two figures compare). Writes a TFMA result
    and records `auc`, `span` and `model_id` on the output in MLMD. Without a blessed model
    yet (a new pipeline) it records nothing to compare."""
    span = examples.get_int_custom_property("span")
    current_model_evaluation.set_int_custom_property(SPAN_PROPERTY, span)
    if model is None:
        logging.info("Progressive validation: no blessed model yet, nothing to score on span %d",
                     span)
        return
    eval_config = progressive_eval_config()
    shared_model = tfma.default_eval_shared_model(
        eval_saved_model_path=path_utils.serving_model_path(model.uri), eval_config=eval_config)
    tfma.run_model_analysis(
        eval_shared_model=shared_model, eval_config=eval_config,
        data_location=os.path.join(examples.uri, f"Split-{split}", "*"),
        file_format="tfrecords", output_path=current_model_evaluation.uri)
    metrics = overall_metrics(current_model_evaluation.uri)
    current_model_evaluation.set_float_custom_property(AUC_PROPERTY, metrics["auc"])
    current_model_evaluation.set_int_custom_property(MODEL_ID_PROPERTY, model.id)
    logging.info("Progressive validation: the current model (artifact %d) scores AUC %.4f on "
                 "span %d before training on it", model.id, metrics["auc"], span)


# ---- Drift against the previous span -------------------------------------------------------

class DataDriftError(rejections.SpanRejectedError):
    """The new span drifted from the previous one beyond the schema's drift comparators."""


DRIFT_ANOMALIES = {anomalies_pb2.AnomalyInfo.Type.Value(name)
                   for name in anomalies_pb2.AnomalyInfo.Type.keys()
                   if name.startswith("COMPARATOR_")}


def compare_drift(current, previous, schema) -> anomalies_pb2.Anomalies:
    """TFDV's drift comparators of `schema`, current vs previous statistics; only the
    comparator anomalies (ExampleValidator reports the others)."""
    anomalies = tfdv.validate_statistics(current, schema, previous_statistics=previous)
    for feature in list(anomalies.anomaly_info):
        info = anomalies.anomaly_info[feature]
        kept = [r for r in info.reason if r.type in DRIFT_ANOMALIES]
        if kept:
            del info.reason[:]
            info.reason.extend(kept)
        else:
            del anomalies.anomaly_info[feature]
    anomalies.ClearField("dataset_anomaly_info")
    return anomalies


@tfx.dsl.components.component
def DriftCheck(
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    drift_anomalies: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.ExampleAnomalies],
    window: tfx.dsl.components.InputArtifact[List[tfx.types.standard_artifacts.Examples]],
    split: tfx.dsl.components.Parameter[str] = "train",
) -> None:
    """Compares the new span's statistics with the previous accepted span's (computed here
    from its examples, which may have been ingested without statistics) using the schema's drift
    comparators; raises DataDriftError, stopping the run before Transform, when any fires.
    The report goes to Split-<split>/SchemaDiff.pb like ExampleValidator's."""
    span = examples.get_int_custom_property("span")
    drift_anomalies.split_names = f'["{split}"]'
    report = anomalies_pb2.Anomalies()
    schema_proto = tfdv.load_schema_text(io_utils.get_only_uri_in_dir(schema.uri))
    before = previous_span(window, span)
    if before is not None:
        previous_stats = statistics_of(before, split, schema_proto)
        current = stats_artifact_utils.load_statistics(statistics, split).proto()
        report = compare_drift(current, previous_stats, schema_proto)
        logging.info("Drift of span %d against span %d: %d features over their threshold",
                     span, before.get_int_custom_property("span"), len(report.anomaly_info))
    else:
        logging.info("Drift: no accepted span before span %d, nothing to compare", span)
    path = os.path.join(drift_anomalies.uri, f"Split-{split}", ANOMALIES_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(report.SerializeToString())
    problems = describe_anomalies({split: report})
    if problems:
        raise DataDriftError(
            f"span {span} drifted from the previous span beyond the schema's drift comparators "
            f"(report: {path}); the run stops before Transform, Trainer and Pusher. If the "
            "change is expected, raise the threshold in schema/schema.pbtxt or set "
            "PIPELINE_CHECK_DRIFT=0:\n  - " + "\n  - ".join(problems), span, DRIFT_CHECK_ID)


def previous_span(window: list[types.Artifact], span: int) -> Optional[types.Artifact]:
    """The newest span of the training window older than `span`. The window resolver has
    already left out spans a check rejected (AcceptedSpanRangeStrategy)."""
    earlier = [a for a in window if a.get_int_custom_property("span") < span]
    return max(earlier, key=lambda a: (a.get_int_custom_property("span"), a.id), default=None)


def statistics_of(examples: types.Artifact, split: str, schema):
    """TFDV statistics of one split of an Examples artifact, computed as StatisticsGen does
    (with the schema, so categorical ints get the top-k counts their comparators need)."""
    with tempfile.TemporaryDirectory() as tmp:
        return tfdv.generate_statistics_from_tfrecord(
            data_location=os.path.join(examples.uri, f"Split-{split}", "*"),
            output_path=os.path.join(tmp, "stats.tfrecord"),
            stats_options=tfdv.StatsOptions(schema=schema))


# ---- Wiring --------------------------------------------------------------------------------

@dataclasses.dataclass
class ContinuousNodes:
    """What create_pipeline adds: nodes, the Trainer's warm start, what must finish before
    Transform reads the new span."""
    nodes: list
    base_model: Optional[tfx.types.BaseChannel] = None
    before_training: list = dataclasses.field(default_factory=list)


def continuous_nodes(settings: PipelineSettings, example_gen, statistics_gen, schema_gen,
                     anomalies_gate, training_window: tfx.types.BaseChannel) -> ContinuousNodes:
    """Warm start, progressive validation and the drift check, as the settings ask; none
    where the orchestrator cannot run custom resolvers (Vertex, Kubeflow: README). Both
    checks run after the anomalies gate: a span that breaks the schema stops the run with
    the gate's clear message, before any model or statistics code parses it."""
    result = ContinuousNodes(nodes=[])
    if settings.resolvers != "any" or settings.example_gen_reads_window:
        return result
    if settings.continuous.warm_start or settings.continuous.progressive_validation:
        current = current_model_resolver(example_gen)
        result.nodes.append(current)
        if settings.continuous.warm_start:
            result.base_model = current.outputs["model"]
        if settings.continuous.progressive_validation:
            validation = ProgressiveValidation(
                examples=example_gen.outputs["examples"],
                model=current.outputs["model"]).with_id(PROGRESSIVE_VALIDATION_ID)
            validation.add_upstream_node(anomalies_gate)
            result.nodes.append(validation)
            result.before_training.append(validation)
    if settings.continuous.check_drift and not settings.data.infer_schema:
        drift = DriftCheck(
            statistics=statistics_gen.outputs["statistics"],
            schema=schema_gen.outputs["schema"],
            examples=example_gen.outputs["examples"],
            window=training_window).with_id(DRIFT_CHECK_ID)
        drift.add_upstream_node(anomalies_gate)
        result.nodes.append(drift)
        result.before_training.append(drift)
    return result
