"""Where serving reads and writes: its own settings, else places the pipeline's settings give."""

from __future__ import annotations

import os

from pipeline.settings import PipelineSettings
from serving.settings import BatchPredictSettings, ServingSettings


def model_name(serving: ServingSettings, pipeline: PipelineSettings) -> str:
    """The name in /v1/models/<name>: the setting, else the pipeline name (as the Pusher's)."""
    return serving.model_name or pipeline.name


def request_log_path(serving: ServingSettings, pipeline: PipelineSettings) -> str:
    """PIPELINE_SERVING_LOG_PATH, else <output_dir>/serving_logs/requests.jsonl: where the
    pipeline's leakage check looks for it too (PipelineSettings.request_log_path)."""
    return serving.log_path or pipeline.request_log_path


def predictions_db_path(batch: BatchPredictSettings, pipeline: PipelineSettings) -> str:
    return batch.sqlite_path or os.path.join(
        pipeline.data.output_dir, "warehouse", "predictions.db"
    )
