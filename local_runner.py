"""Runs the pipeline on this machine with TFX's LocalDagRunner and a SQLite MLMD store.

    python local_runner.py [--verbose] [--force]   # or: make run
    tfx pipeline create --engine local --pipeline_path local_runner.py
    tfx run create --engine local --pipeline_name taxi-tips

Settings come from pipeline/settings.py and `PIPELINE_*` environment variables. The full log
of a run goes to <output dir>/logs/ (pipeline/run_log.py); the console shows one line per
component as it starts and ends (pipeline/progress.py) and the project's warnings, then the
summary, or on failure one message naming the span and what to do, and the log's path.
`--verbose` streams the whole log to the console too (`tfx-template run --verbose`).
A run whose data, code and settings are those of the last successful run says so before TFX
loads (pipeline/up_to_date.py); `--force` runs the pipeline anyway.
"""

import argparse
import atexit
import sys
from typing import Optional

from pipeline import runtime  # first: Keras 2, GC, warnings (imports nothing heavy)

from pipeline import run_log, tfx_cli, up_to_date  # import nothing heavy


def parse_options(argv: list[str]) -> argparse.Namespace:
    """Lenient: unknown arguments are reported and ignored (the TFX CLI runs this file too)."""
    parser = argparse.ArgumentParser(
        prog="local_runner.py",
        description="Runs the pipeline on this machine (make run).",
        epilog="Settings are PIPELINE_* environment variables (see docs/settings.md). The full "
        "log goes to <PIPELINE_OUTPUT_DIR>/logs/.",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="run the pipeline even when nothing changed since the last successful run "
        "(every component is then cached)",
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
    # Nothing changed since the last successful run: say so at once (not while the TFX CLI
    # runs this file in its own process to capture the pipeline).
    if not OPTIONS.force and tfx_cli.PATCHER_MODULE not in sys.modules:
        if (NOTHING_TO_RUN := up_to_date.nothing_to_run_message()) is not None:
            print(NOTHING_TO_RUN)
            sys.exit(0)
    EARLY: Optional[run_log.EarlyOutput] = run_log.capture_early()
    atexit.register(EARLY.release)  # an import error's traceback still reaches the console
else:
    OPTIONS, EARLY = parse_options([]), None

with runtime.paused_for_imports():
    from absl import logging
    from pipeline.tfx_api import tfx

    from pipeline import local_run, preflight, rejections, run_summary, spans
    from pipeline.pipeline import create_pipeline
    from pipeline.settings import PipelineSettings


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
        state = local_run.RunState()
        up_to_date.forget(settings)
        inputs = up_to_date.inputs_fingerprint(settings)
        try:
            local_run.run(settings, metadata, span, state, say=log.print)
        except Exception as error:  # noqa: BLE001 (every failure ends with its message)
            log.fail(local_run.failure_message(settings, error, state))
            raise SystemExit(1) from None
        summary = run_summary.latest_run_summary(settings)
        log.print(summary)
        up_to_date.record(settings, inputs, summary, log.path)
    runtime.freeze_live_objects()


if __name__ == "__main__":
    main(OPTIONS.verbose, EARLY)
