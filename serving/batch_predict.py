"""Static serving: a Beam job that predicts every row of a span with the pushed model and writes
keyed predictions to the warehouse table (SQLite locally, BigQuery in production).

    make batch-predict ARGS="--span N --version V"     # tfx-template batch-predict [--span N] ...

By default the span is the newest complete one (its `_COMPLETE` marker written, as the pipeline
ingests spans: a newer span still arriving is skipped and said so) and the model the newest
pushed version that loads (a half-pushed or broken newer version is skipped and named).

Rows need no id column: each gets a stable key from where it lives:
`<span>:<file name>:<row number>` (row 0 is the first data row). The model's `serving_keyed`
signature takes the key with the raw features and passes it through, so a prediction stays
tied to its row whatever order the runner processes rows in. Runs with the pipeline's Beam
settings (PIPELINE_BEAM_PRESET), so on Dataflow it scales out like the data components.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
import time
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
import pandas as pd
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from models import features
from pipeline import progress, runtime, spans
from pipeline.names import KEY_INPUT, SERVING_KEYED_SIGNATURE
from pipeline.settings import PipelineSettings
from serving import paths, warehouse
from serving.settings import BatchPredictSettings
from serving.tensors import Signature

# Rows per chunk: one model call, one Beam element.
CHUNK_ROWS = 2048


def row_key(span: int, file_name: str, row_number: int) -> str:
    return f"{span}:{file_name}:{row_number}"


def raw_values(row: dict[str, str], where: str) -> dict[str, Any]:
    """A CSV row as serving_raw's inputs: numbers as floats (NaN when empty), strings as is."""
    values = {}
    for key in features.raw_feature_keys():
        if key not in row:
            raise ValueError(f"{where}: column '{key}' is missing")
        text = row[key]
        if key in features.STRING_FEATURES:
            values[key] = text
            continue
        try:
            values[key] = float(text) if text != "" else math.nan
        except ValueError:
            raise ValueError(f"{where}: column '{key}' = {text!r} is not a number") from None
    return values


def json_instance(values: dict[str, Any]) -> dict[str, Any]:
    """Raw values as a JSON request instance: a missing number (NaN) as null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}


def read_span_file(path: str, span: int, chunk_rows: int) -> Iterable[dict[str, Any]]:
    """The keyed raw rows of one CSV file of a span, as columns of up to `chunk_rows` rows
    (numbers as float64 arrays, NaN when empty): Beam then moves a few thousand-row chunks
    instead of every row, and each chunk is one model call. pandas' C parser reads the file
    and its numbers; a value that is not a number is then located and named."""
    name = os.path.basename(path)
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    numeric = [k for k in features.raw_feature_keys() if k not in features.STRING_FEATURES]
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            keep_default_na=False,
            dtype={
                **{k: str for k in features.STRING_FEATURES},
                **{k: np.float64 for k in numeric},
            },
            na_values={k: [""] for k in numeric},
        )
    except ValueError:
        frame = _numbers_checked(
            pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False), path, numeric
        )
    columns: dict[str, Any] = {}
    for key in features.raw_feature_keys():
        if key not in frame:
            raise ValueError(f"{path}: column '{key}' is missing")
        columns[key] = (
            frame[key].tolist()
            if key in features.STRING_FEATURES
            else frame[key].to_numpy(dtype=np.float64)
        )
    columns[KEY_INPUT] = [row_key(span, name, n) for n in range(len(frame))]
    for start in range(0, len(frame), chunk_rows):
        yield {key: values[start : start + chunk_rows] for key, values in columns.items()}


def _numbers_checked(frame: pd.DataFrame, path: str, numeric: list[str]) -> pd.DataFrame:
    """`frame` (all text) with its numeric columns as numbers; the first value that is not a
    number raises an error naming the file, row and column."""
    for key in numeric:
        if key not in frame:
            continue  # reported as missing by the caller
        text = frame[key]
        numbers = pd.to_numeric(text.where(text != ""), errors="coerce")
        bad = numbers.isna() & (text != "")
        if bad.any():
            row = int(bad.idxmax())
            raise ValueError(
                f"{path} row {row + 1}: column '{key}' = {text[row]!r} is not a number"
            )
        frame[key] = numbers
    return frame


class KeyedSignatureHandler(ModelHandler):
    """RunInference over the SavedModel's serving_keyed signature: each element is a chunk of
    keyed rows (columns), each output the chunk's warehouse rows, tuples in
    `warehouse.COLUMNS` order (the key comes back from the model itself)."""

    def __init__(self, model_path: str, version: int, span: int):
        self.model_path = model_path
        self.version, self.span = str(version), span

    def load_model(self) -> Signature:
        loaded = tf.saved_model.load(self.model_path)
        signature = Signature(SERVING_KEYED_SIGNATURE, loaded.signatures[SERVING_KEYED_SIGNATURE])
        signature.loaded = loaded  # keeps the variables alive
        return signature

    def run_inference(
        self, batch: Sequence[dict], model: Signature, inference_args: Optional[dict] = None
    ) -> Iterable[list[tuple]]:
        for chunk in batch:
            outputs = model({key: chunk[key] for key in model.inputs})  # already typed
            yield [
                (key.decode("utf-8"), probability, self.version, self.span)
                for key, probability in zip(
                    outputs[KEY_INPUT].tolist(), outputs["probabilities"].reshape(-1).tolist()
                )
            ]

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": 1}  # a chunk is a batch already

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        """For RunInference's metrics: the arrays' bytes and 8 per list item. (The default
        pickles every chunk to measure it.)"""
        return sum(
            values.nbytes if isinstance(values, np.ndarray) else 8 * len(values)
            for chunk in batch
            for values in chunk.values()
        )


class _WriteSQLite(beam.DoFn):
    """Appends each bundle's chunks to the staging table in one transaction."""

    def __init__(self, db_path: str, table: str):
        self.db_path, self.table = db_path, table

    def start_bundle(self):
        self._rows = []

    def process(self, rows: list[dict]):
        self._rows.extend(rows)
        return []

    def finish_bundle(self):
        if self._rows:
            with warehouse.connect(self.db_path) as connection:
                warehouse.insert(connection, self.table, self._rows)


class BatchPredictError(ValueError):
    """A span, model version or table the job cannot use; the message says what to do."""


@dataclasses.dataclass
class BatchResult:
    span: int
    version: int
    rows: int
    seconds: float
    destination: str
    # Why this span and version, what was skipped or cleaned up: one line each.
    notes: list[str] = dataclasses.field(default_factory=list)


def choose_span(pipeline: PipelineSettings, requested: Optional[int]) -> tuple[int, str]:
    """The span to predict and why: `requested` if it is complete, else the newest complete
    span, by the rule the pipeline and the trigger ingest spans by (pipeline/spans.py): a
    span whose files are still arriving (no completion marker yet) is never predicted."""
    marker = pipeline.data.span_complete_marker
    try:
        if requested:
            if not spans.is_complete(pipeline, requested):
                raise BatchPredictError(
                    f"span {requested} is not complete: no {marker!r} marker in "
                    f"{spans.span_dir(pipeline, requested)} yet (its files may still be "
                    "arriving); predict a complete span, or leave --span out for the newest"
                )
            return requested, f"span {requested}: as asked"
        span = spans.newest_complete_span(pipeline)
    except BatchPredictError:
        raise
    except ValueError as error:  # no complete span, or a pattern without span folders
        raise BatchPredictError(str(error)) from None
    reason = f"span {span}: the newest complete span"
    arriving = [s for s in spans.available_spans(pipeline) if s > span]
    if arriving:
        listed = ", ".join(str(s) for s in arriving)
        reason += (
            f"; skipped newer span{'s' if len(arriving) > 1 else ''} {listed}: files but no "
            f"{marker!r} marker yet (still arriving)"
        )
    return span, reason


def pushed_versions(base_path: str) -> list[int]:
    """The version folders (all-digit names, as TF Serving's scan) under the base path,
    newest first; any other name (a push in progress) is not a version."""
    if not tf.io.gfile.isdir(base_path):
        return []
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(base_path))
    return sorted((int(n) for n in names if n.isdigit()), reverse=True)


def version_problem(model_path: str) -> Optional[str]:
    """Why a pushed version cannot predict (half-pushed, does not load, no keyed signature),
    or None. Loads it once to know."""
    for name, kind in (("saved_model.pb", "file"), ("variables", "folder")):
        if not tf.io.gfile.exists(os.path.join(model_path, name)):
            return f"no {name} {kind}: half-pushed"
    try:
        loaded = tf.saved_model.load(model_path)
    except Exception as error:  # noqa: BLE001 (any failure to load disqualifies it)
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        return f"does not load: {type(error).__name__}: {first_line}"
    if SERVING_KEYED_SIGNATURE not in loaded.signatures:
        return f"has no {SERVING_KEYED_SIGNATURE!r} signature"
    return None


def choose_version(base_path: str, requested: Optional[int]) -> tuple[int, list[str]]:
    """The model version to predict with, and a line per newer version skipped: `requested`
    if it can predict, else the newest pushed version that can (a half-pushed version, or
    one that fails to load, is skipped and named)."""
    if requested:
        problem = version_problem(os.path.join(base_path, str(requested)))
        if problem:
            raise BatchPredictError(f"model version {requested} under {base_path}: {problem}")
        return requested, []
    skipped = []
    for version in pushed_versions(base_path):
        problem = version_problem(os.path.join(base_path, str(version)))
        if problem is None:
            return version, skipped
        skipped.append(f"skipped model version {version}: {problem}")
    raise BatchPredictError(
        f"no loadable model under {base_path}"
        + (f" ({'; '.join(skipped)})" if skipped else "")
        + ": run the pipeline first (`make run`)"
    )


def run(
    settings: BatchPredictSettings,
    pipeline: PipelineSettings,
    span: Optional[int] = None,
    version: Optional[int] = None,
) -> BatchResult:
    """Predicts every row of `span` (default: PIPELINE_BATCH_PREDICT_SPAN, else the newest
    complete span) with model `version` (default: the newest loadable pushed version) into
    the warehouse table. SQLite: one job per file at a time; staging tables a killed job left
    are dropped first; the table is replaced whole at the end, so a rerun with the same span
    and version writes the same rows."""
    settings.check_warehouse(pipeline)
    if settings.warehouse == "bigquery":
        return _run(settings, pipeline, span, version, None)
    warehouse.check_table_name(settings.table)
    db_path = paths.predictions_db_path(settings, pipeline)
    os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
    try:
        with warehouse.writer_lock(db_path):
            return _run(settings, pipeline, span, version, db_path)
    except warehouse.WarehouseBusyError as error:
        raise BatchPredictError(str(error)) from None


def _run(
    settings: BatchPredictSettings,
    pipeline: PipelineSettings,
    span: Optional[int],
    version: Optional[int],
    db_path: Optional[str],
) -> BatchResult:
    notes = []
    if db_path is not None:
        left = warehouse.drop_staging_tables(db_path, settings.table)
        if left:
            notes.append(f"removed staging tables a killed job left: {', '.join(left)}")
    span, reason = choose_span(pipeline, span or settings.span or None)
    notes.insert(0, reason)
    pattern = spans.span_files_pattern(pipeline, span)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise BatchPredictError(f"no input files for span {span}: nothing matches {pattern}")
    version, skipped = choose_version(pipeline.serving_model_dir, version)
    notes[1:1] = skipped
    model_path = os.path.join(pipeline.serving_model_dir, str(version))

    bigquery = db_path is None
    if bigquery:
        destination = f"{pipeline.cloud.gcp_project}:{settings.table}"
    else:
        staging = warehouse.staging_name(settings.table)
        with warehouse.connect(db_path) as connection:
            warehouse.create_table(connection, staging)
        destination = f"{db_path}:{settings.table}"

    started = time.perf_counter()
    try:
        # The job runs when the `with` ends, under the bar (elapsed time; on a terminal only).
        with (
            progress.bar(desc=f"predicting span {span} ({len(files)} file(s))"),
            beam.Pipeline(options=PipelineOptions(pipeline.beam_pipeline_args)) as p,
        ):
            predictions = (
                p
                | "Files" >> beam.Create(files)
                | "ReadChunks" >> beam.FlatMap(read_span_file, span, CHUNK_ROWS)
                | "Spread" >> beam.Reshuffle()  # chunks of one file to many workers
                | "Predict" >> RunInference(KeyedSignatureHandler(model_path, version, span))
            )
            if bigquery:
                prediction_rows = predictions | "Rows" >> beam.FlatMap(
                    lambda chunk: [dict(zip(warehouse.COLUMN_NAMES, row)) for row in chunk]
                )
                prediction_rows | "Write" >> beam.io.WriteToBigQuery(
                    settings.table,
                    project=pipeline.cloud.gcp_project,
                    schema=warehouse.BIGQUERY_SCHEMA,
                    write_disposition=beam.io.BigQueryDisposition.WRITE_TRUNCATE,
                    create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
                    custom_gcs_temp_location=pipeline.beam_temp_dir,
                )
            else:
                predictions | "Write" >> beam.ParDo(_WriteSQLite(db_path, staging))
    except BaseException:
        if not bigquery:
            warehouse.drop_table(db_path, staging)  # the old table stays as it was
        raise
    seconds = time.perf_counter() - started
    if bigquery:
        rows = _count_rows(files)
    else:
        rows = warehouse.count_rows(db_path, staging)
        warehouse.replace_table(db_path, staging, settings.table)
    return BatchResult(span, version, rows, seconds, destination, notes)


def _count_rows(files: list[str]) -> int:
    return sum(
        sum(1 for _ in csv.DictReader(io.StringIO(tf.io.gfile.GFile(f).read()))) for f in files
    )


def batch_predict(span: Optional[int] = None, version: Optional[int] = None) -> BatchResult:
    """`tfx-template batch-predict`: predictions of `span` (default PIPELINE_BATCH_PREDICT_SPAN,
    else the newest complete span) by model `version` (default: the newest loadable pushed
    version); on stderr, why this span and version (and what was skipped or cleaned up), then
    one line of figures."""
    runtime.freeze_live_objects()  # TensorFlow and Beam, imported for good
    try:
        result = run(BatchPredictSettings.load(), PipelineSettings.load(), span, version)
    except BatchPredictError as error:
        raise SystemExit(f"error: {error}") from None
    for note in result.notes:
        print(note, file=sys.stderr)
    print(
        f"span {result.span}: {result.rows} predictions of model version {result.version} "
        f"-> {result.destination} in {result.seconds:.1f} s "
        f"({result.rows / result.seconds:.0f} rows/s)",
        file=sys.stderr,
    )
    return result
