"""Runs the pipeline on this machine with TFX's LocalDagRunner and a SQLite MLMD store.

    python local_runner.py                     # or: make run
    tfx pipeline create --engine local --pipeline_path local_runner.py
    tfx run create --engine local --pipeline_name taxi-tips

Settings come from pipeline/settings.py and `PIPELINE_*` environment variables. The full log
of a run goes to <output dir>/logs/ (pipeline/run_log.py); the console shows the project's
own log lines, then the summary, or on failure one message naming the span and what to do.
"""
import dataclasses
from typing import Optional

from pipeline import runtime  # first: Keras 2, GC, warnings (imports nothing heavy)

with runtime.paused_for_imports():
    from absl import logging
    from tfx import v1 as tfx

    from pipeline import input_check, preflight, rejections, run_log, run_summary, spans
    from pipeline.names import EXAMPLE_GEN_ID
    from pipeline.pipeline import create_pipeline
    from pipeline.settings import PipelineSettings


@dataclasses.dataclass
class RunState:
    """Where a run is, for its failure message: the span being ingested or checked."""
    span: Optional[int] = None


def ingest_earlier_spans(settings: PipelineSettings, metadata,
                         state: Optional[RunState] = None) -> None:
    """A new pipeline (or one whose window grew) first ingests the older spans of its training
    window, one ExampleGen run each, as if they had arrived over time; the full run then
    ingests the newest span and trains on the whole window. Rejected spans are skipped and
    the window reaches back past them."""
    state = state or RunState()
    ingested = spans.ingested_spans(settings, EXAMPLE_GEN_ID)
    while True:
        rejected = rejections.of_pipeline(settings)
        todo = spans.earlier_spans_to_ingest(settings, ingested, rejected)
        if not todo:
            return
        state.span = todo[0]
        span = state.span
        logging.info("Ingesting earlier span %d", span)
        input_check.ingest_earlier_span(
            settings, span, lambda: tfx.orchestration.LocalDagRunner().run(create_pipeline(
                settings, metadata_connection_config=metadata, ingest_only_span=span)),
            run_log.failed_node)
        ingested.add(span)


def run(settings: PipelineSettings, metadata, span: Optional[int], state: RunState) -> None:
    """Checks the new span's files, ingests the window's earlier spans, runs the pipeline."""
    if span is not None:
        state.span = span
        if span not in spans.ingested_spans(settings, EXAMPLE_GEN_ID):
            input_check.check_span_files(settings, span)
        ingest_earlier_spans(settings, metadata, state)
        state.span = span
    tfx.orchestration.LocalDagRunner().run(
        create_pipeline(settings, metadata_connection_config=metadata, span=span))


def failure_message(settings: PipelineSettings, error: Exception, state: RunState) -> str:
    """A rejection is recorded against its span and said so; anything else is a crash."""
    node = run_log.failed_node(error)
    rejection = rejections.record_failure(settings, state.span, node or "", error)
    if rejection is not None:
        return run_log.rejection_message(rejection, settings)
    return run_log.crash_message(error, node, state.span)


def main() -> None:
    logging.set_verbosity(logging.INFO)
    try:
        settings = PipelineSettings.load(orchestrator="local")
        preflight.check_local_paths(settings)
        # ExampleGen reads the newest complete span no check rejected, never a half-copied
        # newer folder.
        span = None if settings.example_gen_reads_window else spans.newest_complete_span(
            settings, rejections.of_pipeline(settings))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        settings.metadata_path)
    # `tfx pipeline create/compile` runs this file with run() patched to only capture the
    # pipeline: nothing may be ingested then (`tfx run create` runs the file for real).
    if hasattr(tfx.orchestration.LocalDagRunner.run, "__wrapped__"):
        tfx.orchestration.LocalDagRunner().run(
            create_pipeline(settings, metadata_connection_config=metadata, span=span))
        return
    with run_log.to_file(settings) as log:
        state = RunState()
        try:
            run(settings, metadata, span, state)
        except Exception as error:  # noqa: BLE001 (every failure ends with its message)
            log.fail(failure_message(settings, error, state))
            raise SystemExit(1) from None
        log.print(run_summary.latest_run_summary(settings))
    runtime.freeze_live_objects()


if __name__ == "__main__":
    main()
