"""The anomalies gate: stops the run after ExampleValidator when the new data has anomalies,
so nothing downstream (Transform, Trainer, Pusher) runs on bad data and the model that is
already pushed stays in place."""

import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx

ANOMALIES_FILE = "SchemaDiff.pb"  # what ExampleValidator writes in each Split-<name>/ folder


class DataAnomaliesError(RuntimeError):
    """The examples broke the schema; the message lists each feature and anomaly."""


def describe_anomalies(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
    """One line per (split, feature) anomaly: "split 'train': feature 'x': <reason>"."""
    lines = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            reasons = "; ".join(f"{r.short_description}: {r.description}" for r in info.reason)
            lines.append(f"split '{split}': feature '{feature}': "
                         f"{reasons or info.short_description or info.description}")
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
        with tf.io.gfile.GFile(os.path.join(uri, f"Split-{split}", ANOMALIES_FILE), "rb") as f:
            anomalies.ParseFromString(f.read())
        result[split] = anomalies
    return result


@tfx.dsl.components.component
def AnomaliesGate(
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
) -> None:
    """Raises DataAnomaliesError, failing the run, when ExampleValidator found anomalies in
    the examples (which only name the span in the message)."""
    problems = describe_anomalies(load_anomalies(anomalies.uri, list(anomalies.splits)))
    if problems:
        span = examples.get_int_custom_property("span")  # ExampleGen records it there
        raise DataAnomaliesError(
            f"ExampleValidator found {len(problems)} anomalies in span {span} "
            f"(report: {anomalies.uri}); the run stops before Transform, Trainer and Pusher and the "
            "pushed model is unchanged. Fix the data, or update schema/schema.pbtxt if the "
            "change is expected:\n  - " + "\n  - ".join(problems))
