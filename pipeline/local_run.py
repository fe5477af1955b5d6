"""A local run (local_runner.py, `make run`): under the pipeline's run lock, what a killed
run left in MLMD cleaned up (pipeline/killed_runs.py), the training window's earlier spans
ingested first, one ExampleGen run each, then the pipeline on the new span; and the one
message a failed run ends with."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from absl import logging

from pipeline import input_check, killed_runs, progress, rejections, run_log, spans
from pipeline.names import EXAMPLE_GEN_ID
from pipeline.pipeline import create_pipeline
from pipeline.settings import PipelineSettings
from pipeline.tfx_api import tfx


@dataclasses.dataclass
class RunState:
    """Where a run is, for its failure message: the span being ingested or checked."""

    span: Optional[int] = None


def ingest_earlier_spans(
    settings: PipelineSettings, metadata, state: Optional[RunState] = None
) -> None:
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
        # One console line for the span's ExampleGen run, not one per component.
        with progress.step(f"Ingesting earlier span {span}") as step:
            if not input_check.ingest_earlier_span(
                settings,
                span,
                lambda: tfx.orchestration.LocalDagRunner().run(
                    create_pipeline(
                        settings,
                        metadata_connection_config=metadata,
                        ingest_only_span=span,  # noqa: B023 (called at once)
                    )
                ),
                run_log.failed_node,
            ):
                step.outcome = "rejected"
        ingested.add(span)


def run(
    settings: PipelineSettings,
    metadata,
    span: Optional[int],
    state: RunState,
    say: Callable[[str], None] = print,
) -> None:
    """Under the pipeline's run lock: cleans up after a killed run, checks the new span's
    files, ingests the window's earlier spans, runs the pipeline. `say` prints a line on the
    console."""
    with killed_runs.run_lock(settings) as holder:
        if holder is None:
            clean_up_killed_runs(settings, say)
        else:
            say(
                f"Another local run of {settings.name} is in progress (pid {holder or '?'}): "
                "the executions it is running are left as they are"
            )
        if span is not None:
            state.span = span
            if span not in spans.ingested_spans(settings, EXAMPLE_GEN_ID):
                input_check.check_span_files(settings, span)
            ingest_earlier_spans(settings, metadata, state)
            state.span = span
        tfx.orchestration.LocalDagRunner().run(
            create_pipeline(settings, metadata_connection_config=metadata, span=span)
        )


def clean_up_killed_runs(settings: PipelineSettings, say: Callable[[str], None] = print) -> None:
    """Executions a killed run left RUNNING marked FAILED, their orphaned output folders
    removed where safe (pipeline/killed_runs.py); one console line if there were any."""
    cleanup = killed_runs.clean_up(settings)
    if cleanup is not None:
        summary = cleanup.summary()
        logging.info("%s", summary)
        say(summary)


def failure_message(settings: PipelineSettings, error: Exception, state: RunState) -> str:
    """A rejection is recorded against its span and said so; anything else is a crash."""
    node = run_log.failed_node(error)
    rejection = rejections.record_failure(settings, state.span, node or "", error)
    if rejection is not None:
        return run_log.rejection_message(rejection, settings)
    return run_log.crash_message(error, node, state.span)
