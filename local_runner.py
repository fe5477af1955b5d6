"""Runs the pipeline on this machine with TFX's LocalDagRunner and a SQLite MLMD store.

    python local_runner.py                     # or: make run
    tfx pipeline create --engine local --pipeline_path local_runner.py
    tfx run create --engine local --pipeline_name taxi-tips

Settings come from pipeline/configs.py and `PIPELINE_*` environment variables.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow loads; see models/

from pipeline import garbage_collection  # noqa: E402 (imports nothing heavy)

with garbage_collection.paused_for_imports():
    from absl import logging
    from tfx import v1 as tfx

    from pipeline import configs, preflight, spans, summary
    from pipeline.pipeline import EXAMPLE_GEN_ID, create_pipeline


def ingest_earlier_spans(settings: configs.Settings, metadata) -> None:
    """A new pipeline (or one whose window grew) first ingests the older spans of its training
    window, one ExampleGen run each, as if they had arrived over time; the full run then
    ingests the newest span and trains on the whole window."""
    ingested = spans.ingested_spans(settings, EXAMPLE_GEN_ID)
    for span in spans.earlier_spans_to_ingest(settings, ingested):
        logging.info("Ingesting earlier span %d", span)
        tfx.orchestration.LocalDagRunner().run(create_pipeline(
            settings, metadata_connection_config=metadata, ingest_only_span=span))


def main() -> None:
    logging.set_verbosity(logging.INFO)
    try:
        settings = configs.Settings.from_env(orchestrator="local")
        preflight.check_local_paths(settings)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        settings.metadata_path)
    try:
        # ExampleGen reads the newest *complete* span, never a half-copied newer folder.
        span = None if settings.example_gen_reads_window else spans.newest_complete_span(settings)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    pipeline = create_pipeline(settings, metadata_connection_config=metadata, span=span)
    # `tfx pipeline create/compile` runs this file with run() patched to only capture the
    # pipeline: nothing may be ingested then (`tfx run create` runs the file for real).
    if hasattr(tfx.orchestration.LocalDagRunner.run, "__wrapped__"):
        tfx.orchestration.LocalDagRunner().run(pipeline)
        return
    if not settings.example_gen_reads_window:
        ingest_earlier_spans(settings, metadata)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    print(summary.latest_run_summary(settings))
    garbage_collection.freeze_live_objects()


if __name__ == "__main__":
    main()
