"""Proves schema/schema.pbtxt: the shipped spans validate cleanly, real problems do not.

Statistics are computed in three modes (STATS_MODES):
- "examples": what the pipeline's StatisticsGen (no schema input) gives ExampleValidator.
  Each CSV goes through CsvExampleGen's own per-file type inference and row-to-tf.Example
  conversion (an empty cell becomes an EMPTY value list, an all-empty column a feature with
  no type), then TFDV reads the TFRecord file.
- "examples+schema": the same, with the schema as StatsOptions (StatisticsGen's `schema`
  input). Only then do the INT ids (hour, day, month) get the top-k counts that their
  infinity_norm drift comparators need, so the drift tests use this mode.
- "csv": tfdv.generate_statistics_from_csv on the file (an empty cell is a missing value).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.utils import io_utils
from tfx_bsl.coders import csv_decoder

from tests.pipeline_run import read_csv, write_csv

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "schema" / "schema.pbtxt"
SPAN_CSVS = sorted((ROOT / "data").glob("span-*/data.csv"), key=lambda p: int(p.parent.name[5:]))
# mode -> (encoding, statistics generated with the schema as StatsOptions)
STATS_MODES = {
    "examples": ("examples", False),
    "examples+schema": ("examples", True),
    "csv": ("csv", False),
}
DRIFT_MODE = "examples+schema"

DRIFT_FEATURES = {
    "payment_type",
    "company",
    "trip_start_hour",
    "trip_start_day",
    "trip_start_month",
    "fare",
    "trip_miles",
    "trip_seconds",
}
PAYMENT_TYPES = {"Cash", "Credit Card", "Dispute", "No Charge", "Pcard", "Prcard", "Unknown"}

Stats = statistics_pb2.DatasetFeatureStatisticsList
Row = dict[str, str]
StatsOf = Callable[[Path, str], Stats]


# ---- helpers ----------------------------------------------------------------------------------

read_rows = read_csv


def write_rows(path: Path, rows: list[Row]) -> Path:
    write_csv(path, rows)
    return path


def with_value(rows: list[Row], column: str, value: str, index: int = 0) -> list[Row]:
    """A copy of rows with one cell replaced."""
    changed = [dict(row) for row in rows]
    changed[index][column] = value
    return changed


def csv_example_gen_examples(csv_path: Path) -> Iterable[tf.train.Example]:
    """The tf.Examples CsvExampleGen (tfx 1.16) writes for one file: the same steps as its
    _CsvToExample transform (infer every column's type over the whole file, then convert)."""
    parser = csv_decoder.ParseCSVLine(delimiter=",")
    parser.setup()
    records = csv_executor._ReadCsvRecordsFromTextFile().process(str(csv_path))
    rows = [cells for record in records for cells, _ in parser.process(record)]
    inferrer = csv_decoder.ColumnTypeInferrer(
        io_utils.load_csv_column_names(str(csv_path)), skip_blank_lines=True
    )
    column_infos = inferrer.extract_output(
        functools.reduce(inferrer.add_input, rows, inferrer.create_accumulator())
    )
    to_example = csv_executor._ParsedCsvToTfExample()
    for cells in rows:
        yield from to_example.process(cells, column_infos)


def compute_stats(csv_path: Path, mode: str, schema: schema_pb2.Schema, work_dir: Path) -> Stats:
    encoding, with_schema = STATS_MODES[mode]
    options = tfdv.StatsOptions(schema=schema) if with_schema else tfdv.StatsOptions()
    if encoding == "csv":
        return tfdv.generate_statistics_from_csv(str(csv_path), stats_options=options)
    tfrecord = work_dir / "examples.tfrecord"
    with tf.io.TFRecordWriter(str(tfrecord)) as writer:
        for example in csv_example_gen_examples(csv_path):
            writer.write(example.SerializeToString())
    return tfdv.generate_statistics_from_tfrecord(str(tfrecord), stats_options=options)


def validate(
    stats: Stats,
    schema: schema_pb2.Schema,
    environment: str | None = "TRAINING",
    previous: Stats | None = None,
) -> anomalies_pb2.Anomalies:
    return tfdv.validate_statistics(
        stats, schema, environment=environment, previous_statistics=previous
    )


def anomaly_types(result: anomalies_pb2.Anomalies) -> dict[str, set[str]]:
    """Feature name -> anomaly type names (empty dict: the statistics validate cleanly)."""
    return {
        name: {anomalies_pb2.AnomalyInfo.Type.Name(reason.type) for reason in info.reason}
        for name, info in result.anomaly_info.items()
    }


def drift_values(result: anomalies_pb2.Anomalies) -> dict[str, float]:
    """Feature name -> drift measured against the previous statistics."""
    return {
        info.path.step[0]: measurement.value
        for info in result.drift_skew_info
        for measurement in info.drift_measurements
    }


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def schema() -> schema_pb2.Schema:
    return tfdv.load_schema_text(str(SCHEMA_PATH))


@pytest.fixture(scope="session")
def stats_of(schema: schema_pb2.Schema, tmp_path_factory: pytest.TempPathFactory) -> StatsOf:
    """Statistics of a CSV file in a mode, computed once per session."""

    @functools.cache
    def cached(csv_path: Path, mode: str) -> Stats:
        return compute_stats(csv_path, mode, schema, tmp_path_factory.mktemp("stats"))

    return cached


@pytest.fixture(scope="session")
def span1_rows() -> list[Row]:
    return read_rows(SPAN_CSVS[0])


# ---- the schema itself ------------------------------------------------------------------------


def test_schema_is_curated(schema: schema_pb2.Schema, span1_rows: list[Row]) -> None:
    features = {f.name: f for f in schema.feature}
    assert set(features) == set(span1_rows[0])
    assert list(schema.default_environment) == ["TRAINING", "SERVING"]
    for name, feature in features.items():
        assert not feature.HasField("shape"), f"{name} must stay VarLen"
        assert feature.value_count.max == 1, name
    assert list(features["tips"].not_in_environment) == ["SERVING"]
    assert not features["trip_start_timestamp"].not_in_environment
    assert not features["company"].HasField("domain")
    assert features["pickup_census_tract"].presence.min_count == 0
    domains = {d.name: set(d.value) for d in schema.string_domain}
    assert domains == {"payment_type": PAYMENT_TYPES}
    with_comparators = {
        f.name
        for f in schema.feature
        if f.HasField("drift_comparator") and f.HasField("skew_comparator")
    }
    assert with_comparators == DRIFT_FEATURES


# ---- shipped data validates cleanly -----------------------------------------------------------


@pytest.mark.parametrize("mode", STATS_MODES)
@pytest.mark.parametrize("span_csv", SPAN_CSVS, ids=lambda p: p.parent.name)
def test_span_has_no_anomalies(
    span_csv: Path, mode: str, schema: schema_pb2.Schema, stats_of: StatsOf
) -> None:
    stats = stats_of(span_csv, mode)
    assert anomaly_types(validate(stats, schema)) == {}
    assert anomaly_types(validate(stats, schema, environment=None)) == {}  # as ExampleValidator


@pytest.mark.parametrize("mode", STATS_MODES)
def test_first_300_rows_have_no_anomalies(
    mode: str, schema: schema_pb2.Schema, stats_of: StatsOf, span1_rows: list[Row], tmp_path: Path
) -> None:
    head = write_rows(tmp_path / "head.csv", span1_rows[:300])
    assert anomaly_types(validate(stats_of(head, mode), schema)) == {}


@pytest.mark.parametrize(
    "previous_csv, current_csv", list(zip(SPAN_CSVS, SPAN_CSVS[1:])), ids=lambda p: p.parent.name
)
def test_consecutive_spans_show_no_drift(
    previous_csv: Path, current_csv: Path, schema: schema_pb2.Schema, stats_of: StatsOf
) -> None:
    result = validate(
        stats_of(current_csv, DRIFT_MODE), schema, previous=stats_of(previous_csv, DRIFT_MODE)
    )
    values = drift_values(result)
    assert anomaly_types(result) == {}, values
    assert set(values) == DRIFT_FEATURES
    assert all(value > 0 for value in values.values()), values  # every comparator measured


# ---- real problems are caught -----------------------------------------------------------------


def test_serving_data_without_tips(
    schema: schema_pb2.Schema, stats_of: StatsOf, span1_rows: list[Row], tmp_path: Path
) -> None:
    no_tips = [{k: v for k, v in row.items() if k != "tips"} for row in span1_rows]
    stats = stats_of(write_rows(tmp_path / "serving.csv", no_tips), "examples")
    assert anomaly_types(validate(stats, schema, environment="SERVING")) == {}
    assert anomaly_types(validate(stats, schema, environment="TRAINING")) == {
        "tips": {"SCHEMA_MISSING_COLUMN"}
    }


def test_unseen_payment_type(
    schema: schema_pb2.Schema, stats_of: StatsOf, span1_rows: list[Row], tmp_path: Path
) -> None:
    rows = with_value(span1_rows, "payment_type", "Bitcoin")
    stats = stats_of(write_rows(tmp_path / "bitcoin.csv", rows), "examples")
    assert anomaly_types(validate(stats, schema)) == {
        "payment_type": {"ENUM_TYPE_UNEXPECTED_STRING_VALUES"}
    }


@pytest.mark.parametrize("mode", ["examples", "csv"])
def test_string_in_fare_is_type_anomaly(
    mode: str, schema: schema_pb2.Schema, stats_of: StatsOf, span1_rows: list[Row], tmp_path: Path
) -> None:
    rows = with_value(span1_rows, "fare", "twelve dollars")
    stats = stats_of(write_rows(tmp_path / "fare.csv", rows), mode)
    found = anomaly_types(validate(stats, schema))
    assert set(found) == {"fare"}
    assert "UNEXPECTED_DATA_TYPE" in found["fare"]


@pytest.mark.parametrize("mode", ["examples", "csv"])
def test_empty_required_value_is_anomaly(
    mode: str, schema: schema_pb2.Schema, stats_of: StatsOf, span1_rows: list[Row], tmp_path: Path
) -> None:
    rows = with_value(span1_rows, "trip_miles", "")
    stats = stats_of(write_rows(tmp_path / "no_miles.csv", rows), mode)
    found = anomaly_types(validate(stats, schema))
    assert set(found) == {"trip_miles"}


def test_drift_comparators_catch_a_shift(
    schema: schema_pb2.Schema, stats_of: StatsOf, span1_rows: list[Row], tmp_path: Path
) -> None:
    """Evening trips only, at triple the fare: hour and fare must drift from span-1."""
    shifted = [
        {**row, "fare": f"{3 * float(row['fare']):.2f}"}
        for row in span1_rows
        if int(row["trip_start_hour"]) >= 17
    ]
    stats = stats_of(write_rows(tmp_path / "shifted.csv", shifted), DRIFT_MODE)
    found = anomaly_types(validate(stats, schema, previous=stats_of(SPAN_CSVS[0], DRIFT_MODE)))
    assert "COMPARATOR_L_INFTY_HIGH" in found.get("trip_start_hour", set()), found
    assert "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH" in found.get("fare", set()), found
