"""The streaming ingestion job (streaming/job.py) on Beam's TestStream: out-of-order and late
events, a malformed and an invalid event, a window boundary; and the spans it writes pass the
schema as shipped spans do."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import apache_beam as beam
import pytest
import tensorflow_data_validation as tfdv
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline import spans
from pipeline.settings import PipelineSettings
from streaming.events import InvalidEvent, load_schema, parse_event
from streaming.job import DEAD_LETTER, EventsToSpans
from streaming.settings import StreamingSettings
from tests.pipeline_run import ROOT, read_csv

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

HOUR = 3600
T0 = 472_222 * HOUR  # a window start (windows are aligned to the epoch)
SPAN_A, SPAN_B = 472_222, 472_223
TIME = "trip_start_timestamp"


@pytest.fixture(scope="module")
def schema():
    return load_schema(PipelineSettings.load({}).data.schema_path)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return read_csv(ROOT / "data" / "span-1" / "data.csv")


def event(row: dict[str, str], schema, timestamp: int, **changes) -> str:
    """A JSON event of a real row: numbers as JSON numbers, empty cells as null."""
    kinds = {f.name: f.type for f in schema.feature}
    out = {}
    for name, value in row.items():
        if value == "":
            out[name] = None
        elif kinds[name] == schema_pb2.BYTES:
            out[name] = value
        else:
            out[name] = float(value) if kinds[name] == schema_pb2.FLOAT else int(value)
    return json.dumps({**out, TIME: timestamp, **changes})


def _settings(tmp_path: Path, **overrides) -> tuple[StreamingSettings, PipelineSettings]:
    """The streaming job's settings, and the pipeline's (where spans go)."""
    streaming = StreamingSettings.load(
        {}, **{"window_seconds": HOUR, "allowed_lateness_seconds": 2 * HOUR, **overrides}
    )
    return streaming, PipelineSettings.load(
        {}, data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out")
    )


def _dead_letters(settings: PipelineSettings) -> list[dict]:
    records = []
    for path in glob.glob(
        os.path.join(settings.data.output_dir, "streaming", "dead_letter", settings.name, "*.jsonl")
    ):
        records += [json.loads(line) for line in open(path)]
    return sorted(records, key=lambda r: r["reason"])


def _span_times(settings: PipelineSettings, span: int) -> list[int]:
    return [
        int(r[TIME]) for r in read_csv(Path(settings.data.data_dir) / f"span-{span}" / "data.csv")
    ]


def test_test_stream_out_of_order_late_malformed_and_window_boundary(tmp_path, schema, rows):
    streaming, settings = _settings(tmp_path)
    late = event(rows[4], schema, T0 + 200)
    bitcoin = event(rows[5], schema, T0 + 50, payment_type="Bitcoin")
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(T0)
        .add_elements(
            [
                event(rows[0], schema, T0 + 300),
                event(rows[1], schema, T0 + 100),  # out of order
                "{not json",  # malformed
                bitcoin,  # breaks the schema
                event(rows[2], schema, T0 + HOUR - 1),  # last second of A
                event(rows[3], schema, T0 + HOUR),
            ]
        )  # first second of B
        .advance_watermark_to(T0 + HOUR)  # A closes
        .add_elements(
            [
                late,  # A was written
                event(rows[6], schema, T0 + HOUR + 5),
            ]
        )  # B, on time
        .advance_watermark_to(T0 + 2 * HOUR)  # B closes
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as pipeline:
        _ = pipeline | stream | EventsToSpans(streaming, settings)

    # Exactly two spans, each complete, rows in event-time order.
    found = sorted(
        os.path.relpath(p, settings.data.data_dir)
        for p in glob.glob(os.path.join(settings.data.data_dir, "**"), recursive=True)
        if os.path.isfile(p)
    )
    assert found == [
        f"span-{SPAN_A}/_COMPLETE",
        f"span-{SPAN_A}/data.csv",
        f"span-{SPAN_B}/_COMPLETE",
        f"span-{SPAN_B}/data.csv",
    ]
    assert _span_times(settings, SPAN_A) == [T0 + 100, T0 + 300, T0 + HOUR - 1]
    assert _span_times(settings, SPAN_B) == [T0 + HOUR, T0 + HOUR + 5]
    assert spans.complete_spans(settings) == [SPAN_A, SPAN_B]
    # A span row keeps every value of its event.
    written = read_csv(Path(settings.data.data_dir) / f"span-{SPAN_A}" / "data.csv")[0]
    assert written["company"] == rows[1]["company"]
    assert float(written["fare"]) == float(rows[1]["fare"])

    dead = _dead_letters(settings)
    assert [(r["event"], r["reason"].split(":")[0]) for r in dead] == [
        (bitcoin, "field 'payment_type'"),
        (late, "late"),
        ("{not json", "not JSON"),
    ]
    assert "'Bitcoin' is not in the schema's domain" in dead[0]["reason"]
    assert dead[1]["reason"] == f"late: its window (span {SPAN_A}) was already written"


def test_files_in_batch_become_spans_that_pass_the_schema(tmp_path, schema, rows):
    """The local source (JSON-lines files): every shipped row of a day lands in one span,
    and that span has no anomalies against the schema, as the shipped spans."""
    streaming, settings = _settings(tmp_path, window_seconds=10 * 365 * 86400)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(event(row, schema, int(row[TIME])) + "\n" for row in rows[:200]))
    with beam.Pipeline() as pipeline:
        results = pipeline | beam.io.ReadFromText(str(events)) | EventsToSpans(streaming, settings)
        _ = results[DEAD_LETTER] | beam.Map(lambda r: pytest.fail(f"dead letter: {r}"))
    (span,) = spans.complete_spans(settings)
    path = Path(settings.data.data_dir) / f"span-{span}" / "data.csv"
    assert len(read_csv(path)) == 200
    stats = tfdv.generate_statistics_from_csv(
        str(path), stats_options=tfdv.StatsOptions(schema=schema)
    )
    anomalies = tfdv.validate_statistics(stats, schema)
    assert not anomalies.anomaly_info, anomalies


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"fare": "12"}, "field 'fare': expected a number (FLOAT), got '12'"),
        ({"trip_start_hour": 7.5}, "field 'trip_start_hour': expected a whole number (INT)"),
        ({"trip_start_hour": 24}, "field 'trip_start_hour': 24 is above the schema's maximum 23"),
        ({"fare": None}, "field 'fare': missing, the schema requires a value"),
        ({"tip": 1.0}, "unknown field(s) ['tip']"),
        ({TIME: None}, f"field '{TIME}': missing"),
    ],
)
def test_invalid_events_say_why(schema, rows, changes, reason):
    line = event(rows[0], schema, T0, **changes)
    with pytest.raises(InvalidEvent) as error:
        parse_event(line, schema, TIME)
    assert str(error.value).startswith(reason), str(error.value)


def test_valid_event_becomes_a_csv_row(schema, rows):
    timestamp, row = parse_event(event(rows[0], schema, T0, fare=12), schema, TIME)
    assert timestamp == T0
    assert row["fare"] == "12.0"  # a float column stays FLOAT for CsvExampleGen
    assert row["payment_type"] == rows[0]["payment_type"]
    assert list(row) == [f.name for f in schema.feature]
