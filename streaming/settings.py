"""Settings of the streaming ingestion job (streaming/job.py), each read from a
PIPELINE_STREAMING_* variable; where spans go comes from the pipeline's settings."""

from __future__ import annotations

from pydantic import Field

from models import features
from pipeline.settings import features_default
from pipeline.settings_model import SettingsModel, env_config


class StreamingSettings(SettingsModel):
    """The streaming job: events in, complete spans out (`make stream`)."""

    model_config = env_config("STREAMING_")

    window_seconds: int = Field(
        86400, ge=1, description="Event-time window of one span, in seconds."
    )
    allowed_lateness_seconds: int = Field(
        7 * 86400,
        description="How long after a window closed a late event is still caught "
        "(and dead-lettered as late, not dropped).",
    )
    event_time_field: str = Field(
        features.TIME_COLUMN,
        description="The event field that holds the event time (Unix seconds).",
        json_schema_extra=features_default("TIME_COLUMN"),
    )
