"""The anomalies gate: stops the run after ExampleValidator when the new data has anomalies
or too few rows, so nothing downstream (Transform, Trainer, Pusher) runs on bad data and the
model that is already pushed stays in place. Both are rejections of the span
(pipeline/rejections.py): later runs skip it."""

import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils

from pipeline.names import ANOMALIES_FILE, ANOMALIES_GATE_ID, SPAN_PROPERTY, split_dir_name
from pipeline.rejections import SpanRejectedError
from pipeline.tfx_api import tfx


class DataAnomaliesError(SpanRejectedError):
    """The examples broke the schema, or are too few; the message lists each problem."""


def describe_anomalies(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
    """One line per (split, feature) anomaly: "split 'train': feature 'x': <reason>"."""
    lines = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            reasons = "; ".join(f"{r.short_description}: {r.description}" for r in info.reason)
            lines.append(
                f"split '{split}': feature '{feature}': "
                f"{reasons or info.short_description or info.description}"
            )
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            reasons = "; ".join(f"{r.short_description}: {r.description}" for r in info.reason)
            lines.append(f"split '{split}': whole dataset: {reasons or info.description}")
    return lines


def load_anomalies(uri: str, splits: list[str]) -> dict[str, anomalies_pb2.Anomalies]:
    """The Anomalies proto ExampleValidator wrote for each split."""
    result = {}
    for split in splits:
        anomalies = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(os.path.join(uri, split_dir_name(split), ANOMALIES_FILE), "rb") as f:
            anomalies.ParseFromString(f.read())
        result[split] = anomalies
    return result


def row_count_problems(rows_by_split: dict[str, int], min_rows: int) -> list[str]:
    """An empty split, or fewer rows in all than `min_rows`: nothing to train or evaluate on."""
    problems = [
        f"split '{split}' has no rows" for split, rows in sorted(rows_by_split.items()) if rows == 0
    ]
    total = sum(rows_by_split.values())
    if total < min_rows:
        counts = ", ".join(f"{split} {rows}" for split, rows in sorted(rows_by_split.items()))
        problems.append(
            f"{total} rows in all ({counts}), fewer than PIPELINE_MIN_SPAN_ROWS={min_rows}"
        )
    return problems


def rows_by_split(statistics: types.Artifact) -> dict[str, int]:
    """Examples per split, as StatisticsGen counted them."""
    return {
        split: sum(
            dataset.num_examples
            for dataset in stats_artifact_utils.load_statistics(statistics, split).proto().datasets
        )
        for split in statistics.splits
    }


@tfx.dsl.components.component
def AnomaliesGate(
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    statistics: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleStatistics
    ] = None,
    min_rows: tfx.dsl.components.Parameter[int] = 1,
) -> None:
    """Raises DataAnomaliesError, failing the run, when the examples have an empty split or
    fewer than `min_rows` rows (the runners' file check usually turns such a span down
    earlier, naming the file), or when ExampleValidator found anomalies in them (which only
    name the span in the message)."""
    span = examples.get_int_custom_property(SPAN_PROPERTY)  # ExampleGen records it there
    stop = "the run stops before Transform, Trainer and Pusher and the pushed model is unchanged"
    too_few = row_count_problems(rows_by_split(statistics), min_rows) if statistics else []
    if too_few:
        raise DataAnomaliesError(
            f"span {span} has too few rows to train and evaluate on: {'; '.join(too_few)} "
            f"(examples: {examples.uri}); {stop}. Deliver the span's full data as a new span, "
            "or lower PIPELINE_MIN_SPAN_ROWS if such spans are normal.",
            span,
            ANOMALIES_GATE_ID,
        )
    problems = describe_anomalies(load_anomalies(anomalies.uri, list(anomalies.splits)))
    if problems:
        raise DataAnomaliesError(
            f"ExampleValidator found {len(problems)} anomalies in span {span} "
            f"(report: {anomalies.uri}); {stop}. Fix the data, or update schema/schema.pbtxt "
            "if the change is expected:\n  - " + "\n  - ".join(problems),
            span,
            ANOMALIES_GATE_ID,
        )
