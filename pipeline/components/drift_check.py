"""DriftCheck: the new span's statistics against the previous accepted span's, with the
schema's drift comparators; a drifted span is rejected and the run stops before Transform
(no `from __future__ import annotations`: TFX reads the type hints)."""

import os
import tempfile

import tensorflow as tf
import tensorflow_data_validation as tfdv
from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.types import artifact_utils
from tfx.utils import io_utils

from pipeline import in_memory_statistics, rejections
from pipeline.components.anomalies_gate import describe_anomalies
from pipeline.names import ANOMALIES_FILE, DRIFT_CHECK_ID, SPAN_PROPERTY, split_dir_name
from pipeline.tfx_api import tfx


class DataDriftError(rejections.SpanRejectedError):
    """The new span drifted from the previous one beyond the schema's drift comparators."""


DRIFT_ANOMALIES = {
    anomalies_pb2.AnomalyInfo.Type.Value(name)
    for name in anomalies_pb2.AnomalyInfo.Type.keys()
    if name.startswith("COMPARATOR_")
}


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
        tfx.types.standard_artifacts.ExampleAnomalies
    ],
    previous_span: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples] = None,
    split: tfx.dsl.components.Parameter[str] = "train",
) -> None:
    """Compares the new span's statistics with the previous accepted span's (computed here
    from its examples, which may have been ingested without statistics) using the schema's drift
    comparators; raises DataDriftError, stopping the run before Transform, when any fires.
    `previous_span` is the training window's span before this one (PreviousSpanStrategy;
    never `examples` itself, see there); none when the window holds no earlier span.
    The report goes to Split-<split>/SchemaDiff.pb like ExampleValidator's."""
    span = examples.get_int_custom_property(SPAN_PROPERTY)
    drift_anomalies.split_names = f'["{split}"]'
    report = anomalies_pb2.Anomalies()
    schema_proto = tfdv.load_schema_text(io_utils.get_only_uri_in_dir(schema.uri))
    if previous_span is not None:
        before = previous_span.get_int_custom_property(SPAN_PROPERTY)
        if before >= span:
            raise ValueError(
                f"the drift check's reference span {before} is not older than span {span}: "
                "PreviousSpanStrategy takes this run's span to be the training window's newest"
            )
        previous_stats = statistics_of(previous_span, split, schema_proto)
        current = stats_artifact_utils.load_statistics(statistics, split).proto()
        report = compare_drift(current, previous_stats, schema_proto)
        logging.info(
            "Drift of span %d against span %d: %d features over their threshold",
            span,
            before,
            len(report.anomaly_info),
        )
    else:
        logging.info("Drift: no accepted span before span %d, nothing to compare", span)
    path = os.path.join(drift_anomalies.uri, split_dir_name(split), ANOMALIES_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(report.SerializeToString())
    problems = describe_anomalies({split: report})
    if problems:
        raise DataDriftError(
            f"span {span} drifted from the previous span beyond the schema's drift comparators "
            f"(report: {path}); the run stops before Transform, Trainer and Pusher. If the "
            "change is expected, raise the threshold in schema/schema.pbtxt or set "
            "PIPELINE_CHECK_DRIFT=0:\n  - " + "\n  - ".join(problems),
            span,
            DRIFT_CHECK_ID,
        )


def statistics_of(examples: types.Artifact, split: str, schema):
    """TFDV statistics of one split of an Examples artifact, computed as StatisticsGen does
    (with the schema, so categorical ints get the top-k counts their comparators need; in
    memory when small)."""
    pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
    options = tfdv.StatsOptions(schema=schema)
    if in_memory_statistics.fits_in_memory(pattern):
        return in_memory_statistics.compute_examples([pattern], options)
    with tempfile.TemporaryDirectory() as tmp:
        return tfdv.generate_statistics_from_tfrecord(
            data_location=pattern,
            output_path=os.path.join(tmp, "stats.tfrecord"),
            stats_options=options,
        )
