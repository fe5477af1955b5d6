"""Checks a runner makes before any work, so a bad setting fails fast and says which to fix."""

from __future__ import annotations

import os
import tempfile

from pipeline import spans
from pipeline.settings import PipelineSettings
from pipeline.settings_model import SettingsError


def check_local_paths(settings: PipelineSettings) -> None:
    """The data directory holds spans and the output directory is writable (local paths only;
    `gs://` and other remote locations are checked by the orchestrator that uses them)."""
    data = settings.data
    if "://" not in data.data_dir and not data.bigquery_query:
        if not os.path.isdir(data.data_dir):
            raise SettingsError(
                f"PIPELINE_DATA_DIR={data.data_dir!r} is not a directory: "
                "point it at your data, or run `make data` for the shipped sample"
            )
        if not spans.available_spans(settings):
            raise SettingsError(
                f"PIPELINE_DATA_DIR={data.data_dir!r} has no files matching "
                f"PIPELINE_SPAN_PATTERN={data.span_pattern!r} (e.g. span-1/data.csv)"
            )
    if "://" not in data.output_dir:
        try:
            os.makedirs(data.output_dir, exist_ok=True)
            with tempfile.TemporaryFile(dir=data.output_dir):
                pass
        except OSError as error:
            raise SettingsError(
                f"PIPELINE_OUTPUT_DIR={data.output_dir!r} is not writable "
                f"({error.strerror}): set it to a directory you can write"
            ) from None
