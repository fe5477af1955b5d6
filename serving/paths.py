"""Where serving reads and writes, derived from the pipeline's settings."""
from __future__ import annotations

import os

from pipeline import configs


def model_name(settings: configs.Settings) -> str:
    """The name in /v1/models/<name>: the setting, else the pipeline name (as the Pusher's)."""
    return settings.serving_model_name or settings.pipeline_name


def request_log_path(settings: configs.Settings) -> str:
    return settings.request_log_path


def predictions_db_path(settings: configs.Settings) -> str:
    return settings.batch_predict_sqlite_path or os.path.join(settings.output_dir, "warehouse",
                                                              "predictions.db")
