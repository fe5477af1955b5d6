"""Serving skew: TFDV statistics of the logged serving requests against the schema's SERVING
environment and the training statistics, with the schema's skew comparators.

    make serving-skew    # or: tfx-template skew [--log PATH] [--training-statistics PATH]

Exits 1 and names each feature when skew (or a schema anomaly) is found, 0 when none is, 2 on
an error (no request log, no training statistics).
The training statistics default to the newest StatisticsGen train split recorded in MLMD.

It also reports extrapolation, requests outside the training range, as a rate per feature
(reported, not judged: the exit status stays TFDV's): numbers below the training minimum or
above its maximum, and categories the training statistics do not list. The categories are
those of the statistics' rank histogram (TFDV keeps the 1,000 most frequent values of each
feature): when training had more distinct values than that, a value missing from the list may
still have been seen, and the rate is an upper bound (the report says so). The Transform
vocabulary is not used: it is cut by top_k and frequency thresholds, so it tells which values
the model maps to out-of-vocabulary buckets, not which values training saw.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass
class Extrapolation:
    """One feature's requests outside the training range, among the rows with a value."""

    feature: str
    rows: int  # rows with a value
    below: int = 0  # numbers below the training minimum
    above: int = 0  # numbers above the training maximum
    unseen: int = 0  # categories the training statistics do not list
    training: str = ""  # the training range, or how many categories it had
    complete: bool = True  # False: the statistics list only some of training's categories
    unseen_values: list[str] = dataclasses.field(default_factory=list)  # the first few

    @property
    def outside(self) -> int:
        return self.below + self.above + self.unseen

    @property
    def rate(self) -> float:
        return self.outside / self.rows if self.rows else 0.0


def _feature_stats(
    training: statistics_pb2.DatasetFeatureStatisticsList,
) -> dict[str, statistics_pb2.FeatureNameStatistics]:
    dataset = (
        training.datasets[0] if training.datasets else statistics_pb2.DatasetFeatureStatistics()
    )
    return {(".".join(f.path.step) or f.name): f for f in dataset.features}


def _values(feature: tf.train.Feature) -> list:
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value) if kind else []


def extrapolation(
    rows: list[dict],
    schema: schema_pb2.Schema,
    training: statistics_pb2.DatasetFeatureStatisticsList,
    examples_shown: int = 3,
) -> dict[str, Extrapolation]:
    """feature -> its requests outside the training range, for each SERVING feature the
    training statistics describe. Values are typed as the statistics were (to_example), so a
    number compares at the precision training stored it."""
    schema = serving_schema(schema)
    stats = _feature_stats(training)
    checked: dict[str, tuple[schema_pb2.Feature, statistics_pb2.FeatureNameStatistics]] = {}
    for feature in schema.feature:
        found = stats.get(feature.name)
        if SERVING_ENVIRONMENT in feature.not_in_environment or found is None:
            continue
        kind = found.WhichOneof("stats")
        if kind == "num_stats" and found.num_stats.common_stats.num_non_missing == 0:
            continue  # training never had a value: no range to leave
        if kind in ("num_stats", "string_stats"):
            checked[feature.name] = (feature, found)
    result = {name: Extrapolation(name, 0) for name in checked}
    categories = {}
    for name, (_, found) in checked.items():
        if found.WhichOneof("stats") == "num_stats":
            result[name].training = f"[{found.num_stats.min:g}, {found.num_stats.max:g}]"
        else:
            listed = {b.label for b in found.string_stats.rank_histogram.buckets}
            listed |= {v.value for v in found.string_stats.top_values}
            categories[name] = listed
            result[name].complete = len(listed) >= found.string_stats.unique
            result[name].training = (
                f"{found.string_stats.unique} categories"
                if result[name].complete
                else f"{len(listed)} of {found.string_stats.unique} categories listed"
            )
    for row in rows:
        example = to_example(row, schema)
        for name, (_, found) in checked.items():
            if name not in example.features.feature:
                continue
            values = _values(example.features.feature[name])
            if not values:
                continue
            counts = result[name]
            counts.rows += 1
            value = values[0]
            if name in categories:
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                if text not in categories[name]:
                    counts.unseen += 1
                    if (
                        text not in counts.unseen_values
                        and len(counts.unseen_values) < examples_shown
                    ):
                        counts.unseen_values.append(text)
            elif value < found.num_stats.min:
                counts.below += 1
            elif value > found.num_stats.max:
                counts.above += 1
    return result


def extrapolation_lines(found: dict[str, Extrapolation]) -> list[str]:
    """The report's lines: each feature with requests outside the training range."""
    outside = [e for _, e in sorted(found.items()) if e.outside]
    if not outside:
        return ["no request outside the training range (numbers within min/max, categories seen)"]
    lines = [
        f"outside the training range in {len(outside)} feature(s) (share of rows with a value):"
    ]
    for e in outside:
        if e.unseen:
            bound = "" if e.complete else " at most (the statistics list only some categories)"
            examples = ", ".join(repr(v) for v in e.unseen_values)
            lines.append(
                f"  - {e.feature}: {e.rate:.1%} unseen categories{bound} ({e.unseen} of "
                f"{e.rows}; training: {e.training}), e.g. {examples}"
            )
        else:
            lines.append(
                f"  - {e.feature}: {e.rate:.1%} outside {e.training} ({e.below} below the "
                f"minimum, {e.above} above the maximum, of {e.rows})"
            )
    return lines


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
        outside = extrapolation(rows, schema_proto, training)
    except SkewError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(rows)} logged rows from {log} against {stats_path}")
    if not found:
        print("no serving skew: every feature is within the schema's skew thresholds")
    else:
        print(f"serving skew in {len(found)} feature(s):")
        for feature, reasons in sorted(found.items()):
            for reason in reasons:
                print(f"  - {feature}: {reason}")
    print("\n".join(extrapolation_lines(outside)))
    return 1 if found else 0
