"""Runs the pipeline on this machine with TFX's LocalDagRunner and a SQLite MLMD store.

    python local_runner.py [--verbose]         # or: make run
    tfx pipeline create --engine local --pipeline_path local_runner.py
    tfx run create --engine local --pipeline_name taxi-tips

Settings come from pipeline/settings.py and `PIPELINE_*` environment variables. The full log
of a run goes to <output dir>/logs/ (pipeline/run_log.py); the console shows one line per
component as it starts and ends (pipeline/progress.py) and the project's warnings, then the
summary, or on failure one message naming the span and what to do, and the log's path.
`--verbose` streams the whole log to the console too (`tfx-template run --verbose`).
"""

import argparse
import atexit
import dataclasses
import sys
from typing import Optional

from pipeline import runtime  # first: Keras 2, GC, warnings (imports nothing heavy)

from pipeline import run_log  # imports nothing heavy


def parse_options(argv: list[str]) -> argparse.Namespace:
    """Lenient: unknown arguments are reported and ignored (the TFX CLI runs this file too)."""
    parser = argparse.ArgumentParser(
        prog="local_runner.py",
        description="Runs the pipeline on this machine (make run).",
        epilog="Settings are PIPELINE_* environment variables (see docs/settings.md). The full "
        "log goes to <PIPELINE_OUTPUT_DIR>/logs/.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="stream the whole log (TFX, Beam, TensorFlow) to the console as well as to the "
        "log file",
    )
    options, unknown = parser.parse_known_args(argv)
    if unknown:
        print(
            f"local_runner.py: ignoring unknown arguments {' '.join(unknown)} (see --help)",
            file=sys.stderr,
        )
    return options


if __name__ == "__main__":
    # Before TensorFlow loads: `--help` answers at once, and the lines TensorFlow writes while
    # it loads go to the top of the run's log (to the console if the run stops before it).
    OPTIONS = parse_options(sys.argv[1:])
    EARLY: Optional[run_log.EarlyOutput] = run_log.capture_early()
    atexit.register(EARLY.release)  # an import error's traceback still reaches the console
else:
    OPTIONS, EARLY = parse_options([]), None

with runtime.paused_for_imports():
    from absl import logging
    from tfx import v1 as tfx

    from pipeline import input_check, preflight, progress, rejections, run_summary, spans, tfx_cli
    from pipeline.names import EXAMPLE_GEN_ID
    from pipeline.pipeline import create_pipeline
    from pipeline.settings import PipelineSettings


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


def run(settings: PipelineSettings, metadata, span: Optional[int], state: RunState) -> None:
    """Checks the new span's files, ingests the window's earlier spans, runs the pipeline."""
    if span is not None:
        state.span = span
        if span not in spans.ingested_spans(settings, EXAMPLE_GEN_ID):
            input_check.check_span_files(settings, span)
        ingest_earlier_spans(settings, metadata, state)
        state.span = span
    tfx.orchestration.LocalDagRunner().run(
        create_pipeline(settings, metadata_connection_config=metadata, span=span)
    )


def failure_message(settings: PipelineSettings, error: Exception, state: RunState) -> str:
    """A rejection is recorded against its span and said so; anything else is a crash."""
    node = run_log.failed_node(error)
    rejection = rejections.record_failure(settings, state.span, node or "", error)
    if rejection is not None:
        return run_log.rejection_message(rejection, settings)
    return run_log.crash_message(error, node, state.span)


def main(verbose: bool = False, early: Optional[run_log.EarlyOutput] = None) -> None:
    logging.set_verbosity(logging.INFO)
    try:
        settings = PipelineSettings.load(orchestrator="local")
        preflight.check_local_paths(settings)
        # ExampleGen reads the newest complete span no check rejected, never a half-copied
        # newer folder.
        span = (
            None
            if settings.example_gen_reads_window
            else spans.newest_complete_span(settings, rejections.of_pipeline(settings))
        )
    except ValueError as error:
        if early is not None:
            early.release(replay=verbose)  # TensorFlow's loading lines: not the point here
        raise SystemExit(f"error: {error}") from None
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(settings.metadata_path)
    # `tfx pipeline create/compile` runs this file with run() patched to only capture the
    # pipeline: nothing may be ingested then (`tfx run create` runs the file for real).
    if tfx_cli.run_is_patched(tfx.orchestration.LocalDagRunner):
        if early is not None:
            early.release()
        tfx.orchestration.LocalDagRunner().run(
            create_pipeline(settings, metadata_connection_config=metadata, span=span)
        )
        return
    with run_log.to_file(settings, verbose=verbose, early=early) as log:
        log.print(
            f"Running {settings.name}"
            + (f" on span {span}" if span is not None else "")
            + f" (full log: {log.path})"
        )
        state = RunState()
        try:
            run(settings, metadata, span, state)
        except Exception as error:  # noqa: BLE001 (every failure ends with its message)
            log.fail(failure_message(settings, error, state))
            raise SystemExit(1) from None
        log.print(run_summary.latest_run_summary(settings))
    runtime.freeze_live_objects()


if __name__ == "__main__":
    main(OPTIONS.verbose, EARLY)
