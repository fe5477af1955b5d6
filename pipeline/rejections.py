"""Rejected spans: the one record of which spans a check deliberately turned down.

A rejection is a finding about the data (anomalies, too few rows, an unparsable file, drift, a
leak the run is told to fail on), raised as a `SpanRejectedError`. Any other exception inside a
check is a crash: a bug or an environment problem, which says nothing about the span, so the
span is not rejected and a rerun retries it.

Each rejection is a small JSON file, `<pipeline root>/rejected_spans/span-<N>.json` (reason,
check, time), written atomically by the runner that saw the error: local_runner.py, or the
Airflow task's failure callback. It does not depend on MLMD execution states, which Airflow's
legacy orchestration does not record on failure. The training window, the ingestion of
earlier spans, the trigger and the run summary read it: a rejected span is skipped for good
(delete its record to retry it).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Optional

import tensorflow as tf

from pipeline.names import (
    ANOMALIES_GATE_ID,
    DRIFT_CHECK_ID,
    LEAKAGE_CHECK_ID,
    PROGRESSIVE_VALIDATION_ID,
    REJECTIONS_FOLDER,
)
from pipeline.settings import PipelineSettings

# The runner's own check of a span's files, before ExampleGen reads them (input_check.py).
SPAN_FILES_CHECK = "SpanFilesCheck"
# The nodes that look at a new span before anything trains on it (a crash there is "the check
# X crashed").
CHECKS = (
    SPAN_FILES_CHECK,
    ANOMALIES_GATE_ID,
    DRIFT_CHECK_ID,
    LEAKAGE_CHECK_ID,
    PROGRESSIVE_VALIDATION_ID,
)


class SpanRejectedError(RuntimeError):
    """A check found the span's data unfit to train on; the message says why and what to do.
    `span` and `check` name the span and the check when the raiser knows them."""

    def __init__(self, message: str, span: Optional[int] = None, check: Optional[str] = None):
        super().__init__(message)
        self.span, self.check = span, check


@dataclasses.dataclass(frozen=True)
class Rejection:
    span: int
    check: str
    reason: str
    time: str  # UTC, ISO 8601
    path: str = ""  # where the record is (not stored in it)


def records_dir(settings: PipelineSettings) -> str:
    """Under the pipeline root, so a record lives as long as the artifacts it is about."""
    return os.path.join(settings.pipeline_root, REJECTIONS_FOLDER)


def record_path(directory: str, span: int) -> str:
    return os.path.join(directory, f"span-{span}.json")


def reject(directory: str, span: int, check: str, reason: str) -> Rejection:
    """Writes the record of one rejected span (write then rename: readers never see half)."""
    time = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rejection = Rejection(span, check, reason, time, record_path(directory, span))
    tf.io.gfile.makedirs(directory)
    tmp = f"{rejection.path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(
            json.dumps({"span": span, "check": check, "reason": reason, "time": time}, indent=1)
        )
    tf.io.gfile.rename(tmp, rejection.path, overwrite=True)
    return rejection


def rejected_spans(directory: str) -> dict[int, Rejection]:
    """Every recorded rejection in `directory`, by span."""
    if not directory or not tf.io.gfile.isdir(directory):
        return {}
    result = {}
    for path in tf.io.gfile.glob(os.path.join(directory, "span-*.json")):
        with tf.io.gfile.GFile(path) as f:
            record = json.load(f)
        result[int(record["span"])] = Rejection(
            int(record["span"]), record["check"], record["reason"], record["time"], path
        )
    return result


def of_pipeline(settings: PipelineSettings) -> dict[int, Rejection]:
    """The pipeline's rejected spans, by span."""
    return rejected_spans(records_dir(settings))


def error_chain(error: BaseException) -> list[BaseException]:
    """The error and what caused it (`raise ... from`, or raised while handling), outermost
    first."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return chain


def is_rejection(error: BaseException) -> bool:
    return isinstance(error, SpanRejectedError)


def rejection_in(error: BaseException) -> Optional[BaseException]:
    """The deliberate rejection in the error's chain, if any (orchestrators may wrap it)."""
    return next((e for e in error_chain(error) if is_rejection(e)), None)


def record_failure(
    settings: PipelineSettings, span: Optional[int], node_id: str, error: BaseException
) -> Optional[Rejection]:
    """What a runner calls when a run failed: a rejection is recorded against its span (the
    error's own, else the run's) and returned; a crash records nothing (None)."""
    rejection = rejection_in(error)
    if rejection is None:
        return None
    span = getattr(rejection, "span", None) or span
    if span is None:  # e.g. ExampleGen reads the whole window: no one span to skip
        return None
    check = getattr(rejection, "check", None) or node_id
    return reject(records_dir(settings), span, check, f"{type(rejection).__name__}: {rejection}")
