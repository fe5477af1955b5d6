"""The streaming ingestion job: events in, complete spans out, bad events to a dead letter.

    make stream ARGS="--input 'events/*.jsonl'"    # tfx-template stream: the files, then stop
    tfx-template stream --subscription projects/P/subscriptions/S --runner DataflowRunner ...

Locally the files are read as a bounded source: every window closes at the end of the input,
so historical events (years behind the clock) become spans too. tests/test_streaming.py runs
the streaming path itself (watermark, late panes) on Beam's TestStream.

Each event (one JSON object per line or message) is parsed and checked against the schema
(streaming/events.py); a bad one goes to the dead letter with the reason. Good events are
windowed by event time (`PIPELINE_STREAMING_WINDOW_SECONDS`, the event's
`PIPELINE_STREAMING_EVENT_TIME_FIELD`); when the watermark passes a window's end, the window
is written as span `<window start> // <window size>` (`span-N/data.csv`, then the `_COMPLETE`
marker), which the trigger (`make watch`) then ingests. An event that arrives after its window
was written (within `PIPELINE_STREAMING_ALLOWED_LATENESS_SECONDS`) goes to the dead letter as
late: the span may already be trained on and is never rewritten. Events later still are
dropped by Beam's windowing (the runner counts them as dropped due to lateness).

Dead letters are JSON lines `{"event": <the original line>, "reason": "..."}` under
`<PIPELINE_OUTPUT_DIR>/streaming/dead_letter/`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

from pipeline.settings import PipelineSettings
from pipeline.spans import mark_complete
from streaming.events import InvalidEvent, columns, load_schema, parse_event
from streaming.settings import StreamingSettings

DEAD_LETTER = "dead_letter"
SPANS = "spans"


def span_number(window_start_seconds: float, window_seconds: int) -> int:
    """Windows are aligned to the Unix epoch, so a window's span number is fixed by its start
    and spans of later windows sort after earlier ones."""
    return int(window_start_seconds) // window_seconds


def dead_letter(line, reason: str) -> dict:
    return {"event": line.decode() if isinstance(line, bytes) else line, "reason": reason}


class ParseEvents(beam.DoFn):
    """JSON line -> (line, row) stamped with its event time; or a dead letter."""

    def __init__(self, schema_path: str, time_field: str):
        self._schema_path, self._time_field = schema_path, time_field

    def setup(self):
        self._schema = load_schema(self._schema_path)

    def process(self, line):
        try:
            event_time, row = parse_event(line, self._schema, self._time_field)
        except InvalidEvent as error:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(line, str(error)))
            return
        yield window.TimestampedValue((dead_letter(line, "")["event"], row), event_time)


class WriteSpan(beam.DoFn):
    """Writes one closed window (its on-time pane) as a complete span; late panes and a span
    that already exists go to the dead letter."""

    def __init__(
        self,
        data_dir: str,
        column_names: list[str],
        window_seconds: int,
        marker: str,
        time_field: str,
    ):
        self._data_dir, self._columns = data_dir, column_names
        self._window_seconds, self._marker, self._time_field = window_seconds, marker, time_field

    def process(self, keyed, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        _, events = keyed
        # Rows in event-time order (ties by the line), whatever order they arrived in.
        events = sorted(events, key=lambda event: (int(event[1][self._time_field]), event[0]))
        span = span_number(win.start.micros / 1e6, self._window_seconds)
        folder = os.path.join(self._data_dir, f"span-{span}")
        if pane.timing == beam.utils.windowed_value.PaneInfoTiming.LATE:
            for line, _ in events:
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTER,
                    dead_letter(line, f"late: its window (span {span}) was already written"),
                )
            return
        if FileSystems.exists(folder):
            for line, _ in events:
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTER,
                    dead_letter(
                        line,
                        f"span {span} already exists in {self._data_dir}; spans are never "
                        "rewritten",
                    ),
                )
            return
        write_span(folder, self._columns, [row for _, row in events], self._marker)
        yield {"span": span, "rows": len(events), "path": folder}


def write_span(
    folder: str, column_names: list[str], rows: list[dict[str, str]], marker: str
) -> None:
    """data.csv (written under a temp name, then renamed), then the completion marker."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=column_names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if not FileSystems.exists(folder):
        FileSystems.mkdirs(folder)
    tmp, final = os.path.join(folder, ".data.csv.tmp"), os.path.join(folder, "data.csv")
    with FileSystems.create(tmp) as f:
        f.write(text.getvalue().encode())
    FileSystems.rename([tmp], [final])
    if marker:
        mark_complete(folder, marker)


class WriteDeadLetters(beam.DoFn):
    """Appends a bundle's dead letters to a JSON-lines file of its own (temp name, then
    renamed), so none is lost or half-written and writers never collide."""

    def __init__(self, directory: str):
        self._directory = directory

    def start_bundle(self):
        self._records = []

    def process(self, record):
        self._records.append(record)

    def finish_bundle(self):
        if not self._records:
            return
        if not FileSystems.exists(self._directory):
            FileSystems.mkdirs(self._directory)
        name = os.path.join(self._directory, f"dead-letter-{uuid.uuid4().hex}.jsonl")
        with FileSystems.create(name + ".tmp") as f:
            f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in self._records).encode())
        FileSystems.rename([name + ".tmp"], [name])


class EventsToSpans(beam.PTransform):
    """JSON-line events -> {"spans": one dict per span written, "dead_letter": records}: spans
    where the pipeline reads them (`pipeline`'s data settings), windows as `settings` says."""

    def __init__(
        self,
        settings: StreamingSettings,
        pipeline: PipelineSettings,
        dead_letter_dir: Optional[str] = None,
    ):
        super().__init__()
        self._settings = settings
        self._data = pipeline.data
        self._dead_letter_dir = dead_letter_dir or default_dead_letter_dir(pipeline)

    def expand(self, lines):
        s, data = self._settings, self._data
        parsed = lines | "Parse" >> beam.ParDo(
            ParseEvents(data.schema_path, s.event_time_field)
        ).with_outputs(DEAD_LETTER, main="events")
        windowed = (
            parsed.events
            | "Window"
            >> beam.WindowInto(
                window.FixedWindows(s.window_seconds),
                # One on-time pane when the watermark passes the window's end (the span), then
                # a pane per late event (dead-lettered) until the allowed lateness is over.
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=Duration(seconds=s.allowed_lateness_seconds),
            )
            | "OneKey" >> beam.Map(lambda event: (None, event))
            | "Group" >> beam.GroupByKey()
        )
        written = windowed | "WriteSpans" >> beam.ParDo(
            WriteSpan(
                data.data_dir,
                columns(load_schema(data.schema_path)),
                s.window_seconds,
                data.span_complete_marker,
                s.event_time_field,
            )
        ).with_outputs(DEAD_LETTER, main=SPANS)
        dead = (parsed[DEAD_LETTER], written[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()
        _ = dead | "WriteDeadLetters" >> beam.ParDo(WriteDeadLetters(self._dead_letter_dir))
        return {SPANS: written[SPANS], DEAD_LETTER: dead}


def default_dead_letter_dir(settings: PipelineSettings) -> str:
    return os.path.join(settings.storage_dir, "streaming", "dead_letter", settings.name)


def read_lines(pipeline: beam.Pipeline, input_pattern: Optional[str], subscription: Optional[str]):
    if subscription:
        # Event time comes from the event itself (ParseEvents): publish events as they happen.
        return pipeline | "ReadPubSub" >> beam.io.ReadFromPubSub(subscription=subscription)
    return pipeline | "ReadFiles" >> beam.io.ReadFromText(input_pattern)


def run_job(
    input_pattern: Optional[str] = None,
    subscription: Optional[str] = None,
    beam_args: Sequence[str] = (),
) -> None:
    """`tfx-template stream`: reads `input_pattern` (JSON-lines files, a glob; bounded) or the
    Pub/Sub `subscription` (streaming), exactly one of them; `beam_args` are Beam's pipeline
    options (--runner, --project, ...)."""
    if bool(input_pattern) == bool(subscription):
        raise ValueError("expected exactly one of input_pattern and subscription")
    settings, pipeline_settings = StreamingSettings.load(), PipelineSettings.load()
    options = PipelineOptions(list(beam_args))
    options.view_as(StandardOptions).streaming = bool(subscription)
    with beam.Pipeline(options=options) as pipeline:
        results = read_lines(pipeline, input_pattern, subscription) | EventsToSpans(
            settings, pipeline_settings
        )
        _ = results[SPANS] | "Log" >> beam.Map(
            lambda s: print(f"span {s['span']}: {s['rows']} events -> {s['path']}", flush=True)
        )
