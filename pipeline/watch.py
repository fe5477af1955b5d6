"""The local trigger: runs the pipeline when a new complete span lands in the data location.

    make watch               # tfx-template watch: polls every watch_interval_seconds
    make watch ARGS=--once   # tfx-template watch --once: run if there is a new span, else say so

A span is new when it is complete (its folder holds the `_COMPLETE` marker) and ExampleGen has
not ingested it yet. Each run is `python local_runner.py` in a process of its own, with the
same PIPELINE_* settings, which logs to its own file under <output dir>/logs/ and ends a
failed run with one message; a look that finds nothing new costs an MLMD query and a glob.
A span a check rejected (pipeline/rejections.py) is never run again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Callable, Optional

from pipeline import rejections, spans
from pipeline.names import EXAMPLE_GEN_ID
from pipeline.settings import PROJECT_ROOT, PipelineSettings

LOCAL_RUNNER = os.path.join(PROJECT_ROOT, "local_runner.py")


def new_span(settings: PipelineSettings) -> Optional[int]:
    """The newest complete span no check rejected, if no run has ingested it yet."""
    return spans.new_span(
        settings, spans.ingested_spans(settings, EXAMPLE_GEN_ID), rejections.of_pipeline(settings)
    )


def nothing_new_message(settings: PipelineSettings) -> str:
    rejected = rejections.of_pipeline(settings)
    accepted = spans.accepted_spans(settings, rejected)
    complete = spans.complete_spans(settings)
    waiting = [s for s in spans.available_spans(settings) if s not in complete]
    message = (
        f"nothing new: span {accepted[-1]} is the newest complete span and was already ingested"
        if accepted
        else f"nothing new: no complete span in {settings.data.data_dir}"
    )
    skipped = [
        span for span in complete if span in rejected and (not accepted or span > accepted[-1])
    ]
    if skipped:
        message += f"; spans {skipped} were rejected (records: {rejections.records_dir(settings)})"
    if waiting:
        message += (
            f"; spans {waiting} have files but no {settings.data.span_complete_marker!r} marker yet"
        )
    return message


def run_local_pipeline() -> int:
    """`python local_runner.py` with this process's environment; its exit code."""
    return subprocess.run([sys.executable, LOCAL_RUNNER], check=False).returncode


def trigger_once(
    settings: PipelineSettings, run: Callable[[], int] = run_local_pipeline
) -> Optional[int]:
    """Runs the pipeline if there is a new span and returns its exit code; None (and a line
    saying so) if there is nothing new."""
    span = new_span(settings)
    if span is None:
        print(nothing_new_message(settings), flush=True)
        return None
    print(f"new span {span}: running the pipeline", flush=True)
    code = run()
    print(
        f"span {span}: the run "
        + ("succeeded" if code == 0 else f"failed (exit code {code}); its message is above"),
        flush=True,
    )
    return code


def watch(settings: PipelineSettings, interval: float) -> None:
    """Looks every `interval` seconds, forever; a failed run (a rejected span) is reported
    and the watch goes on with the next span."""
    print(f"watching {settings.data.data_dir} every {interval:g} s (Ctrl-C stops)", flush=True)
    while True:
        trigger_once(settings)
        time.sleep(interval)


def run_trigger(once: bool = False, interval: Optional[float] = None) -> int:
    """`tfx-template watch`: with `once`, one look (the run's exit code; 0 when nothing is
    new); else a look every `interval` seconds (default PIPELINE_WATCH_INTERVAL_SECONDS)
    until Ctrl-C (then 0)."""
    try:
        settings = PipelineSettings.load(orchestrator="local")
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if settings.example_gen_reads_window:
        raise SystemExit(
            "error: the trigger watches span files; with PIPELINE_BIGQUERY_QUERY "
            "every run reads the whole query, so schedule `make run` instead"
        )
    if once:
        code = trigger_once(settings)
        return code or 0
    try:
        watch(settings, interval or settings.continuous.watch_interval_seconds)
    except KeyboardInterrupt:
        return 0
    return 0
