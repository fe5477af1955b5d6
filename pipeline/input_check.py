"""The runner's check of a span's CSV files before ExampleGen reads them.

ExampleGen fails on an unparsable CSV with a Beam traceback that names neither span nor file;
this strict parse (Python's csv module, one record per line as ExampleGen reads them) names
the file and line instead, and counts the rows, so an empty or too small span is turned down
before any component runs. Each finding raises SpanRejectedError (pipeline/rejections.py).
"""

from __future__ import annotations

import csv
from typing import Callable, Iterator, Optional

import tensorflow as tf
from absl import logging

from pipeline import rejections, spans
from pipeline.rejections import SPAN_FILES_CHECK, SpanRejectedError
from pipeline.settings import PipelineSettings


def _reject(span: int, problem: str) -> SpanRejectedError:
    return SpanRejectedError(
        f"span {span}: {problem}. The run stops before ExampleGen reads "
        "it: fix the data and deliver it as a new span.",
        span,
        SPAN_FILES_CHECK,
    )


def _lines(path: str, span: int) -> Iterator[str]:
    """The file's lines as text; undecodable bytes are named by line."""
    with tf.io.gfile.GFile(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _reject(
                    span,
                    f"{path}, line {number}: not UTF-8 text ({error.reason} at byte {error.start})",
                ) from None


def count_rows(path: str, span: int) -> int:
    """Data rows of one CSV file (header excluded), parsed strictly; raises SpanRejectedError
    naming the file and line of the first record ExampleGen could not read."""
    reader = csv.reader(_lines(path, span), strict=True)
    end = 0  # the last line of the previous record
    try:
        header = next(reader, None)
        if not header:
            raise _reject(span, f"{path} is empty: no header line")
        rows, end = 0, reader.line_num
        for record in reader:
            start, end = end + 1, reader.line_num
            if end != start:
                raise _reject(
                    span,
                    f"{path}, line {start}: a quoted field runs over "
                    f"{end - start + 1} lines (an unterminated quote?); "
                    "ExampleGen reads one record per line",
                )
            if not record:
                continue  # a blank line
            if len(record) != len(header):
                raise _reject(
                    span,
                    f"{path}, line {start}: {len(record)} fields, the header has {len(header)}",
                )
            rows += 1
    except csv.Error as error:
        raise _reject(span, f"{path}, line {end + 1}: {error} (an unterminated quote?)") from None
    return rows


def check_span_files(settings: PipelineSettings, span: int) -> int:
    """Parses every input file of the span and checks it has at least `min_span_rows` rows;
    returns the row count."""
    files = sorted(tf.io.gfile.glob(spans.span_files_pattern(settings, span)))
    if not files:
        raise _reject(span, f"no files match {spans.span_files_pattern(settings, span)}")
    rows = sum(count_rows(path, span) for path in files)
    names = ", ".join(files)
    if rows == 0:
        raise _reject(
            span,
            f"the span is empty: {names} has a header but no rows"
            if len(files) == 1
            else f"the span is empty: its files ({names}) have a header but no rows",
        )
    if rows < settings.data.min_span_rows:
        raise _reject(
            span,
            f"{rows} rows in {names}, fewer than "
            f"PIPELINE_MIN_SPAN_ROWS={settings.data.min_span_rows} (too few to "
            "train and evaluate on; lower the setting if such spans are normal)",
        )
    return rows


def accept_earlier_span(settings: PipelineSettings, span: int) -> bool:
    """The check of an earlier span of the window before the runner ingests it: a bad one is
    recorded as rejected and skipped (False), so it never blocks a run."""
    try:
        check_span_files(settings, span)
    except SpanRejectedError as error:
        rejections.record_failure(settings, span, SPAN_FILES_CHECK, error)
        logging.warning("Span %d is rejected and skipped: %s", span, error)
        return False
    return True


def ingest_earlier_span(
    settings: PipelineSettings,
    span: int,
    ingest: Callable[[], None],
    failed_node: Callable[[BaseException], Optional[str]] = lambda e: None,
) -> bool:
    """An earlier span of the window, as both runners take it: its files checked, then
    `ingest` (ExampleGen and the span's validation). A span either step rejects is recorded
    and skipped (False), so it never blocks a run; a crash raises."""
    if not accept_earlier_span(settings, span):
        return False
    try:
        ingest()
    except Exception as error:  # a rejection is recorded, not fatal
        if not rejections.record_failure(settings, span, failed_node(error) or "", error):
            raise  # a crash, not a finding about the span
        logging.warning("Earlier span %d is rejected and skipped: %s", span, error)
        return False
    return True
