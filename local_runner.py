"""Runs the pipeline on this machine with TFX's LocalDagRunner and a SQLite MLMD store.

    python local_runner.py                     # or: make run
    tfx pipeline create --engine local --pipeline_path local_runner.py

Settings come from pipeline/configs.py and `PIPELINE_*` environment variables.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow loads; see models/

from absl import logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from pipeline import configs, spans, summary  # noqa: E402
from pipeline.pipeline import EXAMPLE_GEN_ID, create_pipeline  # noqa: E402


def run(settings: configs.Settings) -> None:
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        settings.metadata_path)
    found = spans.available_spans(settings)
    if not found:
        raise FileNotFoundError(
            f"no spans in {settings.data_dir} matching {settings.span_pattern!r} "
            "(set PIPELINE_DATA_DIR, or run `make data`)")
    # A new pipeline (or one whose window grew) first ingests the older spans of its training
    # window one at a time, as if they had arrived over time; the full run takes the newest.
    ingested = spans.ingested_spans(settings, EXAMPLE_GEN_ID)
    for span in found[-settings.train_window_spans:-1]:
        if span not in ingested:
            logging.info("Ingesting earlier span %d", span)
            tfx.orchestration.LocalDagRunner().run(create_pipeline(
                settings, metadata_connection_config=metadata, ingest_only_span=span))
    tfx.orchestration.LocalDagRunner().run(
        create_pipeline(settings, metadata_connection_config=metadata))


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    settings = configs.Settings.from_env()
    run(settings)
    print(summary.latest_run_summary(settings))
