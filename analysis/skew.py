"""Serving skew: TFDV statistics of the logged serving requests against the schema's SERVING
environment and the training statistics, with the schema's skew comparators.

    make serving-skew    # or: tfx-template skew [--log PATH] [--training-statistics PATH]

Exits 1 and names each feature when skew (or a schema anomaly) is found, 0 when none is, 2 on
an error (no request log, no training statistics).
The training statistics default to the newest StatisticsGen train split recorded in MLMD.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from typing import Any, Optional

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from models import features
from pipeline import metadata, serving_log
from pipeline.names import STATISTICS_FILE, TRAIN_SPLIT, split_dir_name
from pipeline.settings import PipelineSettings

SERVING_ENVIRONMENT = "SERVING"


class SkewError(RuntimeError):
    pass


def to_example(row: dict[str, Any], schema: schema_pb2.Schema) -> tf.train.Example:
    """A row typed as the schema says; a missing value becomes an empty value list, as
    CsvExampleGen writes an empty cell, so serving and training statistics compare alike."""
    example = tf.train.Example()
    for feature in schema.feature:
        if feature.name not in row:
            continue
        value = row[feature.name]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        missing = value is None or value == "" or (isinstance(value, float) and math.isnan(value))
        target = example.features.feature[feature.name]
        if feature.type == schema_pb2.BYTES:
            target.bytes_list.value.extend([] if missing else [str(value).encode("utf-8")])
        elif feature.type == schema_pb2.INT and (missing or float(value).is_integer()):
            target.int64_list.value.extend([] if missing else [int(float(value))])
        else:  # FLOAT, or a fractional value of an INT feature (TFDV then reports the type)
            target.float_list.value.extend([] if missing else [float(value)])
    return example


def serving_statistics(
    rows: list[dict], schema: schema_pb2.Schema
) -> statistics_pb2.DatasetFeatureStatisticsList:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "requests.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for row in rows:
                writer.write(to_example(row, schema).SerializeToString())
        return tfdv.generate_statistics_from_tfrecord(
            path, stats_options=tfdv.StatsOptions(schema=schema)
        )


def training_statistics_path(settings: PipelineSettings) -> str:
    """The newest StatisticsGen output's train split, from MLMD."""
    store = metadata.open_store(settings)
    artifacts = (
        metadata.node_outputs(store, settings.name, "StatisticsGen", "ExampleStatistics")
        if store
        else []
    )
    if not artifacts:
        raise SkewError(
            f"no StatisticsGen output in {settings.metadata_path}: run the pipeline "
            "first, or pass --training-statistics"
        )
    return os.path.join(artifacts[-1].uri, split_dir_name(TRAIN_SPLIT), STATISTICS_FILE)


def serving_schema(schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """The schema with the columns no serving request carries (not a model input, e.g. a
    timestamp that only orders rows into spans) moved out of the SERVING environment,
    as the label already is: their absence from requests is not an anomaly."""
    schema = schema_pb2.Schema.FromString(schema.SerializeToString())
    inputs = set(features.raw_feature_keys())
    for feature in schema.feature:
        if feature.name not in inputs and SERVING_ENVIRONMENT not in feature.not_in_environment:
            feature.not_in_environment.append(SERVING_ENVIRONMENT)
    return schema


def find_skew(
    rows: list[dict],
    schema: schema_pb2.Schema,
    training: statistics_pb2.DatasetFeatureStatisticsList,
) -> dict[str, list[str]]:
    """feature -> descriptions of its skew and SERVING-environment anomalies."""
    if not rows:
        raise SkewError("the request log has no successful requests to compare")
    schema = serving_schema(schema)
    serving = serving_statistics(rows, schema)
    found: dict[str, list[str]] = {}
    for anomalies in (
        # The requests themselves against the schema's SERVING environment...
        tfdv.validate_statistics(serving, schema, environment=SERVING_ENVIRONMENT),
        # ...and against the training statistics, with the skew comparators.
        tfdv.validate_statistics(
            training, schema, environment="TRAINING", serving_statistics=serving
        ),
    ):
        for feature, info in anomalies.anomaly_info.items():
            for reason in info.reason:
                found.setdefault(feature, []).append(
                    f"{anomalies_pb2.AnomalyInfo.Type.Name(reason.type)}: {reason.description}"
                )
    return found


def run_skew(
    log: Optional[str] = None,
    training_statistics: Optional[str] = None,
    schema: Optional[str] = None,
) -> int:
    """`tfx-template skew`: the request `log` (default PIPELINE_SERVING_LOG_PATH) against the
    `training_statistics` (default: from MLMD) with the `schema` (default
    PIPELINE_SCHEMA_PATH). 0: no skew; 1: skew, each feature named; 2: one `error: ...` line."""
    settings = PipelineSettings.load()
    log = log or settings.request_log_path
    schema_path = schema or settings.data.schema_path
    try:
        if not os.path.exists(log):
            raise SkewError(
                f"no request log at {log}: serve with PIPELINE_SERVING_LOG_SAMPLING_RATE>0 first"
            )
        schema_proto = tfdv.load_schema_text(schema_path)
        stats_path = training_statistics or training_statistics_path(settings)
        training = tfdv.load_stats_binary(stats_path)
        rows = list(serving_log.logged_rows(serving_log.read(log)))
        found = find_skew(rows, schema_proto, training)
    except SkewError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(rows)} logged rows from {log} against {stats_path}")
    if not found:
        print("no serving skew: every feature is within the schema's skew thresholds")
        return 0
    print(f"serving skew in {len(found)} feature(s):")
    for feature, reasons in sorted(found.items()):
        for reason in reasons:
            print(f"  - {feature}: {reason}")
    return 1
